"""What a STAC item says about itself: which asset holds which band, whether its DN carry
the +1000 offset of processing baseline 04.00, and whether it can be placed on a grid.
"""

from __future__ import annotations

import datetime as _dt
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import pystac

from ..errors import BandError, MissingBandError, OptionError
from ..schema import BAND_ALIASES

SCL = "SCL"
BOA_OFFSET = 1000  # DN added from processing baseline 04.00 on (BOA_ADD_OFFSET = -1000)
BASELINE_04_DAY = _dt.datetime(2022, 1, 25, tzinfo=_dt.UTC)  # first products of 04.00
_BASELINE_RE = re.compile(r"_N(\d{2})(\d{2})_")
# Archive flags saying the archive already removed the offset from its COGs.
_OFFSET_APPLIED_FLAGS = ("earthsearch:boa_offset_applied", "sentinel:boa_offset_applied")

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)

HarmonizeOption = bool | Literal["baseline"] | Callable[[pystac.Item], float]


class Sentinel2Warning(UserWarning):
    """Something in the Sentinel-2 metadata was guessed or is known to be unreliable."""


def canonical_band(name: str) -> str:
    """The Sentinel-2 name (``B04``) of a band given by any alias (``red``, ``b04``).

    Examples
    --------
    >>> canonical_band("red"), canonical_band("nir"), canonical_band("nir08"), canonical_band("scl")
    ('B04', 'B08', 'B8A', 'SCL')
    """
    key = str(name).strip()
    if key.upper() in BAND_ALIASES or key.upper() == SCL:
        return key.upper()
    # An alias may be listed under several bands (nir08): the band that lists it first wins,
    # which is STAC's common-name meaning (nir08 = B8A, nir = B08).
    best: tuple[int, str] | None = None
    for band, aliases in BAND_ALIASES.items():
        lowered = [a.lower() for a in aliases]
        if key.lower() in lowered:
            rank = (lowered.index(key.lower()), band)
            best = rank if best is None or rank < best else best
    if best is None:
        raise BandError(
            f"{name!r} is not a Sentinel-2 band: use {', '.join(BAND_ALIASES)} or the common "
            "names blue, green, red, nir, swir16..."
        )
    return best[1]


def _asset_band_names(asset: pystac.Asset) -> list[str]:
    """Names an asset gives its band in ``eo:bands`` (STAC 1.0) or ``bands`` (STAC 1.1)."""
    names = []
    for key in ("eo:bands", "bands"):
        for entry in asset.extra_fields.get(key) or []:
            if isinstance(entry, Mapping):
                names += [
                    str(entry[k]) for k in ("name", "common_name", "eo:common_name") if k in entry
                ]
    return names


def _resolution(asset: pystac.Asset) -> float:
    fields = asset.extra_fields
    for value in (
        fields.get("gsd"),
        ((fields.get("raster:bands") or [{}])[0] or {}).get("spatial_resolution"),
        (fields.get("proj:transform") or [None])[0],
    ):
        if isinstance(value, int | float) and value:
            return abs(float(value))
    return float("inf")


def find_asset(
    item: pystac.Item, band: str, preferred: Mapping[str, str] | None = None
) -> str | None:
    """The asset key holding ``band`` (canonical name) in ``item``, or None.

    Keys win over band metadata (``red`` over ``red_20m``, though both say B04); among assets
    found by metadata the finest resolution wins. Only aliases that mean ``band`` count, so
    Earth Search's ``nir08`` (B8A) is never taken for ``B08``.
    """
    assets = item.assets
    if preferred and preferred.get(band) in assets:
        return preferred[band]
    lower = {k.lower(): k for k in assets}
    aliases = [a.lower() for a in BAND_ALIASES.get(band, ()) if canonical_band(a) == band]
    for name in (band.lower(), *aliases):
        if name in lower:
            return lower[name]
    by_metadata = [
        key
        for key, asset in assets.items()
        if any(n.upper() == band or n.lower() in aliases for n in _asset_band_names(asset))
    ]
    if by_metadata:
        return min(by_metadata, key=lambda k: _resolution(assets[k]))
    return None


def band_assets(
    item: pystac.Item, bands: Sequence[str], preferred: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """Asset keys of ``bands`` (canonical names) in ``item``; raise if one is missing."""
    keys = []
    for band in bands:
        key = find_asset(item, band, preferred)
        if key is None:
            have = sorted(k for k in item.assets if _is_raster(item.assets[k]))
            raise MissingBandError(
                f"item {item.id} has no asset for band {band} "
                f"({'/'.join(BAND_ALIASES.get(band, ()))}); its raster assets are {have}. "
                "Ask for bands it has (bands=[...]), or drop such items (e.g. an L1C item "
                "without SCL, or a product of another collection)."
            )
        keys.append(key)
    return tuple(keys)


def _is_raster(asset: pystac.Asset) -> bool:
    media = (asset.media_type or "").lower()
    return "tiff" in media or "jp2" in media or "data" in (asset.roles or [])


def processing_baseline(item: pystac.Item) -> float | None:
    """The processing baseline (e.g. 4.0) from the item's metadata, or None if it says none.

    Read from ``s2:processing_baseline`` (or ``processing:version``), else from the ``_Nxxyy_``
    part of the product name.

    Examples
    --------
    >>> import datetime, pystac
    >>> uri = "S2B_MSIL2A_20220301T101839_N0400_R065_T32TQM_20220301T130556.SAFE"
    >>> item = pystac.Item("x", None, None, datetime.datetime(2022, 3, 1), {"s2:product_uri": uri})
    >>> processing_baseline(item)
    4.0
    """
    props = item.properties
    for key in ("s2:processing_baseline", "processing:version", "sentinel:processing_baseline"):
        value = props.get(key)
        if value not in (None, ""):
            try:
                return float(value)
            except (TypeError, ValueError):
                pass
    for text in (props.get("s2:product_uri"), props.get("s2:datatake_id"), item.id):
        match = _BASELINE_RE.search(str(text or ""))
        if match:
            return int(match[1]) + int(match[2]) / 100
    return None


def _item_time(item: pystac.Item) -> _dt.datetime | None:
    when = item.datetime or item.common_metadata.start_datetime
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=_dt.UTC)
    return when


def dn_offset(item: pystac.Item, harmonize: HarmonizeOption = True) -> float:
    """The DN offset to subtract from ``item``'s reflectance bands (0 or 1000).

    Products of processing baseline 04.00 and later (from 25 January 2022, and all of the
    Collection-1 reprocessing) store reflectance x 10000 + 1000 so that negative values fit
    in uint16. Subtracting this offset makes them comparable with older products.

    Parameters
    ----------
    item : pystac.Item
        A Sentinel-2 L2A (or L1C: its RADIO_ADD_OFFSET is the same) item.
    harmonize : bool, "baseline" or callable
        ``True``: 1000 for baseline >= 04.00, unless the archive flags the offset as already
        removed (``earthsearch:boa_offset_applied: true``; when that flag is *false* it is
        known to be wrong for some scenes, see :func:`load_sentinel2`). ``"baseline"``: trust
        the baseline alone, ignore archive flags. ``False``: 0. A callable: its return value.

    Returns
    -------
    float

    Examples
    --------
    >>> import datetime, pystac
    >>> item = pystac.Item("x", None, None, datetime.datetime(2023, 5, 1),
    ...                    {"s2:processing_baseline": "05.09"})
    >>> dn_offset(item), dn_offset(item, harmonize=False)
    (1000.0, 0.0)
    """
    if harmonize is False or harmonize is None:
        return 0.0
    if callable(harmonize):
        return float(harmonize(item))
    if harmonize not in (True, "baseline"):
        raise OptionError(
            f"harmonize must be True, False, 'baseline' or a callable, not {harmonize!r}"
        )
    baseline = processing_baseline(item)
    if baseline is None:
        when = _item_time(item)
        if when is not None and when < BASELINE_04_DAY:
            return 0.0  # only baseline-04 products carry the offset, and none predates it
        warnings.warn(
            f"item {item.id} states no processing baseline (s2:processing_baseline); assumed "
            ">= 04.00 from its date, so 1000 is subtracted. Pass harmonize=<callable> to decide "
            "per item.",
            Sentinel2Warning,
            stacklevel=3,
        )
        return float(BOA_OFFSET)
    if baseline < 4.0:
        return 0.0
    if harmonize is True and any(item.properties.get(f) is True for f in _OFFSET_APPLIED_FLAGS):
        return 0.0
    return float(BOA_OFFSET)


def suspicious_offset_flags(items: Sequence[pystac.Item]) -> list[str]:
    """Ids of baseline >= 04.00 items whose archive flag says the offset is still in the DN.

    Earth Search's ``sentinel-2-l2a`` sets ``earthsearch:boa_offset_applied: false`` on some
    scenes whose COGs had the offset removed already (Element84/earth-search#66, #71,
    cirrus-earth-search#33). Such items are harmonised by the baseline (1000 subtracted), as
    the flag says, but the result can be 1000 too dark.
    """
    out = []
    for item in items:
        flags = [item.properties.get(f) for f in _OFFSET_APPLIED_FLAGS]
        baseline = processing_baseline(item)
        if False in flags and baseline is not None and baseline >= 4.0:
            out.append(item.id)
    return out


def dedupe(items: Sequence[pystac.Item]) -> list[pystac.Item]:
    """Drop reprocessed duplicates: one item per (tile, sensing time), newest baseline wins.

    Archives keep several versions of one acquisition (Earth Search ``_0_L2A``/``_1_L2A``,
    catalogs merged by a user); counting them twice would bias the median.
    """
    best: dict[Any, pystac.Item] = {}
    for item in items:
        props = item.properties
        tile = props.get("s2:mgrs_tile") or props.get("grid:code") or props.get("tile_id")
        if tile is None and "mgrs:utm_zone" in props:
            tile = "{}{}{}".format(
                props["mgrs:utm_zone"],
                props.get("mgrs:latitude_band"),
                props.get("mgrs:grid_square"),
            )
        when = _item_time(item)
        if tile is None or when is None:
            best[("id", item.id)] = item
            continue
        key = (str(tile).removeprefix("MGRS-"), when.replace(microsecond=0))
        if key not in best or _version(item) > _version(best[key]):
            best[key] = item
    return sorted(best.values(), key=lambda i: (_item_time(i) or _EPOCH, i.id))


def _version(item: pystac.Item) -> tuple[float, str]:
    props = item.properties
    stamp = props.get("s2:generation_time") or props.get("updated") or props.get("created") or ""
    return (processing_baseline(item) or 0.0, str(stamp))

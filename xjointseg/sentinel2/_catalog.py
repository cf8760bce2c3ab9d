"""Where items come from: STAC API presets, any STAC API, static catalogs, item lists.

Everything ends as a list of :class:`pystac.Item` per period, filtered the same way whatever
the source (an API that ignores a filter is caught by the client-side check).
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pystac
from odc.geo.geom import Geometry

from ..errors import CatalogError, NoItemsError, OptionError
from ._items import dedupe
from ._periods import Period

_EARTH_SEARCH = "https://earth-search.aws.element84.com/v1"
_PLANETARY_COMPUTER = "https://planetarycomputer.microsoft.com/api/stac/v1"
_ES_ASSETS = {
    "B01": "coastal",
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B8A": "nir08",
    "B09": "nir09",
    "B10": "cirrus",
    "B11": "swir16",
    "B12": "swir22",
    "SCL": "scl",
}
_PC_ASSETS = {b: b for b in _ES_ASSETS if b != "B10"}

Signer = Callable[[Any], Any]


@dataclass(frozen=True)
class CatalogPreset:
    """A known Sentinel-2 archive: API URL, collection, band -> asset key, URL signer."""

    url: str
    collection: str
    assets: Mapping[str, str]
    sign: str | None = None  # "module:function", imported only when the preset is used
    description: str = ""


CATALOGS: dict[str, CatalogPreset] = {
    "earth-search": CatalogPreset(
        _EARTH_SEARCH,
        "sentinel-2-l2a",
        _ES_ASSETS,
        description="Element 84 Earth Search v1, L2A COGs on AWS (public, no signing). "
        "Its earthsearch:boa_offset_applied flag is wrong for some scenes: prefer "
        "earth-search-c1 for multi-year series.",
    ),
    "earth-search-c1": CatalogPreset(
        _EARTH_SEARCH,
        "sentinel-2-c1-l2a",
        _ES_ASSETS,
        description="Earth Search, ESA Collection-1 reprocessing (one processing baseline "
        "for all years: the most consistent radiometry for change).",
    ),
    "earth-search-l1c": CatalogPreset(
        _EARTH_SEARCH,
        "sentinel-2-l1c",
        _ES_ASSETS,
        description="Earth Search L1C (top of atmosphere, no SCL: no cloud mask).",
    ),
    "planetary-computer": CatalogPreset(
        _PLANETARY_COMPUTER,
        "sentinel-2-l2a",
        _PC_ASSETS,
        sign="planetary_computer:sign_inplace",
        description="Microsoft Planetary Computer L2A (needs `pip install planetary-computer` "
        "to sign asset URLs).",
    ),
}


@dataclass
class Source:
    """An opened catalog: either a searchable API client or a fixed list of items."""

    name: str
    client: Any = None  # pystac_client.Client when the source can search
    items: list[pystac.Item] | None = None
    collection: str | None = None
    assets: Mapping[str, str] | None = None
    sign: Signer | None = None
    sign_results: bool = False  # a client we did not open has no signing modifier


def _import_signer(spec: str) -> Signer:
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        raise CatalogError(
            f"this archive's asset URLs must be signed: pip install {module.replace('_', '-')} "
            "(or pass sign=<your signing function>)"
        ) from None


def _apply_sign(items: Iterable[pystac.Item], sign: Signer | None) -> list[pystac.Item]:
    out = []
    for item in items:
        if sign is not None:
            # sign_inplace-style hooks return None; sign()-style ones return a signed copy.
            signed = sign(item)
            item = signed if isinstance(signed, pystac.Item) else item
        out.append(item)
    return out


def _read_static(href: str) -> list[pystac.Item]:
    """Items of a static catalog, collection, item or item collection at a path or URL."""
    try:
        text = pystac.StacIO.default().read_text(href)
        data = json.loads(text)
    except FileNotFoundError:
        raise CatalogError(f"no STAC file at {href}: check the path") from None
    except json.JSONDecodeError as exc:
        raise CatalogError(
            f"{href} is not JSON ({exc}): point to a STAC catalog.json, "
            "collection.json, item JSON or an item collection"
        ) from None
    except Exception as exc:  # urllib/requests errors: the server is down, 404, refused...
        raise CatalogError(
            f"cannot read the catalog at {href}: {exc}. Check the URL and your network "
            "(or use a local copy of the catalog)"
        ) from None
    kind = data.get("type") if isinstance(data, dict) else None
    try:
        if kind == "FeatureCollection":
            return list(pystac.ItemCollection.from_dict(data, preserve_dict=False))
        obj = pystac.read_file(href)  # keeps the self href: relative asset hrefs resolve
        if isinstance(obj, pystac.Item):
            return [obj]
        if isinstance(obj, pystac.Catalog):
            return list(obj.get_items(recursive=True))
    except CatalogError:
        raise
    except Exception as exc:
        raise CatalogError(f"cannot read the STAC catalog at {href}: {exc}") from None
    raise CatalogError(f"{href} is a STAC {kind or 'document'} without items")


def _open_api(url: str, sign: Signer | None) -> Any:
    try:
        import pystac_client
        from pystac_client.warnings import NoConformsTo
    except ImportError:  # pragma: no cover - a dependency
        raise CatalogError(
            "searching a STAC API needs pystac-client: pip install pystac-client"
        ) from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoConformsTo)
            return pystac_client.Client.open(url, modifier=sign)
    except Exception as exc:
        raise CatalogError(
            f"cannot reach the STAC API at {url}: {exc}. Check the URL and the network, or "
            "use a static catalog (a path to catalog.json) or a list of pystac Items"
        ) from None


def _searchable(client: Any) -> bool:
    from pystac_client import ConformanceClasses

    return bool(client.conforms_to(ConformanceClasses.ITEM_SEARCH))


def _walk(client: Any) -> list[pystac.Item]:
    from pystac_client.warnings import FallbackToPystac

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FallbackToPystac)
        try:
            return list(client.get_items(recursive=True))
        except Exception as exc:
            raise CatalogError(f"cannot walk the catalog at {client.self_href}: {exc}") from None


def open_source(
    catalog_or_items: Any, *, collection: str | None = None, sign: Signer | None = None
) -> Source:
    """Open what the user passed as a catalog: a preset, URL, path, client or items."""
    obj = catalog_or_items
    if isinstance(obj, os.PathLike):
        obj = os.fspath(obj)
    if isinstance(obj, str):
        if obj.lower() in CATALOGS:
            return _open_preset(obj.lower(), collection, sign)
        if obj.startswith(("http://", "https://")):
            return _open_url(obj, collection, sign)
        return _open_path(obj, collection, sign)
    if hasattr(obj, "search") and hasattr(obj, "conforms_to"):  # a pystac_client.Client
        return _open_client(obj, collection, sign)
    if isinstance(obj, pystac.Catalog):
        found = obj.get_items(recursive=True)
        return _listed(str(obj.self_href or obj.id), found, collection, sign)
    if isinstance(obj, pystac.Item | Mapping):
        obj = [obj]
    if isinstance(obj, Iterable):
        return _listed("items", [_as_item(entry) for entry in obj], collection, sign)
    raise CatalogError(
        f"cannot use a {type(obj).__name__} as a catalog: pass a preset name "
        f"({', '.join(CATALOGS)}), a STAC API URL, a path or URL to a static catalog / item "
        "JSON, or a list of pystac Items"
    )


def _listed(
    name: str, items: Iterable[pystac.Item], collection: str | None, sign: Signer | None
) -> Source:
    """A source that is a fixed list of items (signed here, once)."""
    return Source(name, items=_apply_sign(items, sign), collection=collection, sign=sign)


def _open_preset(name: str, collection: str | None, sign: Signer | None) -> Source:
    preset = CATALOGS[name]
    if sign is None and preset.sign:
        sign = _import_signer(preset.sign)
    return Source(
        name,
        client=_open_api(preset.url, sign),
        collection=collection or preset.collection,
        assets=preset.assets,
        sign=sign,
    )


def _open_url(url: str, collection: str | None, sign: Signer | None) -> Source:
    """A static catalog's JSON file, or a STAC API (searched, or walked if it cannot be)."""
    if url.lower().split("?")[0].endswith((".json", ".geojson")):
        return _listed(url, _read_static(url), collection, sign)
    client = _open_api(url, sign)
    if not _searchable(client):
        return _listed(url, _walk(client), collection, sign)
    if collection is None:
        raise OptionError(
            f"{url} is a STAC API: name the collection to search, e.g. "
            f"collection='sentinel-2-l2a' (or use a preset: {', '.join(CATALOGS)})"
        )
    return Source(url, client=client, collection=collection, sign=sign)


def _open_path(text: str, collection: str | None, sign: Signer | None) -> Source:
    """A local static catalog: a STAC file, or a folder holding catalog/collection.json."""
    path = Path(text).expanduser()
    if path.is_dir():
        found = [path / n for n in ("catalog.json", "collection.json") if (path / n).exists()]
        if not found:
            raise CatalogError(f"{path} holds no catalog.json or collection.json")
        path = found[0]
    if not path.exists():
        raise CatalogError(
            f"{text!r} is not a catalog preset ({', '.join(CATALOGS)}), a URL, or an "
            "existing STAC file"
        )
    return _listed(str(path), _read_static(str(path.resolve())), collection, sign)


def _open_client(client: Any, collection: str | None, sign: Signer | None) -> Source:
    """A pystac_client.Client the user opened (so it has no signing modifier of ours)."""
    if not _searchable(client):
        return _listed(str(client.self_href), _walk(client), collection, sign)
    if collection is None:
        raise OptionError("name the collection to search, e.g. collection='sentinel-2-l2a'")
    return Source(
        str(client.self_href),
        client=client,
        collection=collection,
        sign=sign,
        sign_results=sign is not None,
    )


def _as_item(entry: Any) -> pystac.Item:
    """An entry of an item list: a pystac Item, an item dict or the path of an item JSON."""
    if isinstance(entry, Mapping):
        entry = pystac.Item.from_dict(cast("dict[str, Any]", entry))
    elif isinstance(entry, str | os.PathLike):
        entry = _read_item(entry)
    if not isinstance(entry, pystac.Item):
        raise CatalogError(
            f"expected pystac Items or paths of item JSON files, got {type(entry).__name__}"
        )
    return entry


def _read_item(path: str | os.PathLike) -> pystac.Item:
    try:
        obj = pystac.read_file(os.fspath(path))
    except Exception as err:
        raise CatalogError(f"cannot read a STAC item from {os.fspath(path)!r}: {err}") from err
    if not isinstance(obj, pystac.Item):
        raise CatalogError(f"{os.fspath(path)!r} is a {type(obj).__name__}, not a STAC item")
    return obj


def _footprint(item: pystac.Item) -> Geometry | None:
    if item.geometry:
        return Geometry(item.geometry, crs="EPSG:4326")
    if item.bbox:
        from odc.geo.geom import box

        return box(
            *cast("tuple[float, float]", item.bbox[:2]),
            *cast("tuple[float, float]", item.bbox[-2:]),
            crs="EPSG:4326",
        )
    return None


def _keep(
    item: pystac.Item,
    period: Period,
    aoi: Geometry | None,
    max_cloud_cover: float | None,
    collection: str | None,
) -> bool:
    when = item.datetime or item.common_metadata.start_datetime
    if when is None or not period.contains(when):
        return False
    if collection and item.collection_id and item.collection_id != collection:
        return False
    cloud = item.properties.get("eo:cloud_cover")
    if max_cloud_cover is not None and cloud is not None and float(cloud) > max_cloud_cover:
        return False
    if aoi is not None:
        foot = _footprint(item)
        if foot is not None and not foot.intersects(aoi):
            return False
    return True


def _search(
    source: Source, period: Period, aoi: Geometry | None, max_cloud_cover: float | None
) -> list[pystac.Item]:
    from pystac_client import ConformanceClasses

    kwargs: dict[str, Any] = {"collections": [source.collection], "datetime": period.stac_datetime}
    if aoi is not None:
        kwargs["bbox"] = list(aoi.boundingbox)
    if max_cloud_cover is not None and source.client.conforms_to(ConformanceClasses.QUERY):
        kwargs["query"] = {"eo:cloud_cover": {"lte": max_cloud_cover}}
    try:
        return list(source.client.search(**kwargs).items())
    except Exception as exc:
        raise CatalogError(
            f"searching {source.name} ({source.collection}) for {period.label} failed: {exc}"
        ) from None


def find_period_items(
    source: Source,
    periods: Sequence[Period],
    aoi: Geometry | None,
    max_cloud_cover: float | None,
) -> dict[str, list[pystac.Item]]:
    """Items per period label, filtered, deduplicated, sorted by time; raise if one is empty."""
    out = {}
    for period in periods:
        if source.client is not None:
            candidates = _search(source, period, aoi, max_cloud_cover)
            if source.sign_results:
                candidates = _apply_sign(candidates, source.sign)
        else:
            candidates = source.items or []
        items = dedupe(
            [i for i in candidates if _keep(i, period, aoi, max_cloud_cover, source.collection)]
        )
        if not items:
            raise NoItemsError(_no_items_message(source, period, aoi, max_cloud_cover))
        out[period.label] = items
    return out


def _no_items_message(
    source: Source, period: Period, aoi: Geometry | None, max_cc: float | None
) -> str:
    where = (
        f" over lon/lat {tuple(round(v, 4) for v in aoi.boundingbox)}" if aoi is not None else ""
    )
    msg = (
        f"no Sentinel-2 item in {source.name}"
        f"{f' ({source.collection})' if source.collection else ''} for period "
        f"{period.label} ({period.start.astype('datetime64[D]')} to {period.last_day}){where}"
        f"{f' with eo:cloud_cover <= {max_cc}' if max_cc is not None else ''}."
    )
    if source.items is not None:
        times = sorted(
            t for i in source.items if (t := i.datetime or i.common_metadata.start_datetime)
        )
        feet = [f for i in source.items if (f := _footprint(i)) is not None]
        if times:
            msg += (
                f" The catalog's {len(source.items)} items span {times[0]:%Y-%m-%d} to "
                f"{times[-1]:%Y-%m-%d}"
            )
            if feet:
                x0, y0, x1, y1 = zip(*(f.boundingbox for f in feet), strict=True)
                msg += f" and lon/lat ({min(x0):.4f}, {min(y0):.4f}, {max(x1):.4f}, {max(y1):.4f})"
            msg += "."
    return msg + (
        " Widen the period or the area, raise max_cloud_cover, or check the collection "
        "and the bbox (lon/lat degrees: min_lon, min_lat, max_lon, max_lat)."
    )

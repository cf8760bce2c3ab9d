"""From a catalog, an area and periods to lazy per-period composites (odc-stac does the I/O).

Per period, items are split into groups that load identically (same asset keys, same DN
offset); each group is one ``odc.stac.load`` on the common grid, with the whole time axis
in one chunk so the median is blockwise (a task per spatial chunk, no shuffle).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pystac
import xarray as xr
from odc.geo.geobox import GeoBox

from .._version import __version__
from ..errors import OptionError
from ._catalog import Signer, find_period_items, open_source
from ._composite import _check_items, _composite, _geobox, _period_stack
from ._items import (
    SCL,
    HarmonizeOption,
    Sentinel2Warning,
    band_assets,
    dn_offset,
    find_asset,
    suspicious_offset_flags,
)
from ._options import _area, _bands, _check_crs, _chunks, _mask_classes
from ._periods import Period, parse_periods
from ._stage import _check_stage_target, _stage


def search_items(
    catalog_or_items: Any,
    *,
    periods: Any,
    bbox: Sequence[float] | None = None,
    geopolygon: Any = None,
    max_cloud_cover: float | None = None,
    collection: str | None = None,
    sign: Signer | None = None,
) -> dict[str, list[pystac.Item]]:
    """The items :func:`load_sentinel2` would use, per period label (nothing is loaded).

    Parameters are those of :func:`load_sentinel2`. Items are filtered by period, area,
    cloud cover and collection, reprocessed duplicates dropped, sorted by time.

    Returns
    -------
    dict of str to list of pystac.Item
        Keyed by period label (``"2017"``, ``"2016/2017"``...), in period order.

    Raises
    ------
    NoItemsError
        When a period has no item.

    Examples
    --------
    >>> from xjointseg.sentinel2 import search_items
    >>> found = search_items("earth-search-c1", periods=[2017, 2023],  # doctest: +SKIP
    ...                      bbox=(12.58, 52.47, 12.62, 52.50), max_cloud_cover=20)
    >>> {label: len(items) for label, items in found.items()}  # doctest: +SKIP
    {'2017': 14, '2023': 31}
    """
    period_list = parse_periods(periods)
    aoi = _area(bbox, geopolygon)
    source = open_source(catalog_or_items, collection=collection, sign=sign)
    aoi_ll = aoi.to_crs("EPSG:4326") if aoi is not None else None
    return find_period_items(source, period_list, aoi_ll, max_cloud_cover)


def load_sentinel2(
    catalog_or_items: Any,
    *,
    bbox: Sequence[float] | None = None,
    geopolygon: Any = None,
    crs: Any = None,
    periods: Any,
    bands: Sequence[str] | None = None,
    cloud_mask: bool | Sequence[int] = True,
    cloud_dilation: int = 0,
    l1c_mask: Literal["none", "brightness"] = "none",
    harmonize: HarmonizeOption = True,
    composite: Literal["median", "mean"] | None = "median",
    max_cloud_cover: float | None = None,
    chunks: int | Mapping[str, int] | None = None,
    resolution: float = 10.0,
    resampling: str = "nearest",
    collection: str | None = None,
    sign: Signer | None = None,
    patch_url: Callable[[str], str] | None = None,
    store: str | os.PathLike | MutableMapping | None = None,
    overwrite: bool = False,
) -> xr.Dataset:
    """Sentinel-2 composites per period over an area, lazily, ready for ``.isa.segment()``.

    Finds the items of each period, loads them with odc-stac on one common grid, masks
    clouds with the scene classification (SCL), removes the +1000 DN offset of processing
    baseline 04.00+ and reduces each period to a per-pixel median of the valid observations.

    Parameters
    ----------
    catalog_or_items : str, path, pystac objects or list of items
        * a preset: ``"earth-search"`` (Element 84, ``sentinel-2-l2a``), ``"earth-search-c1"``
          (``sentinel-2-c1-l2a``, one processing baseline for all years: preferred for
          change), ``"earth-search-l1c"``, ``"planetary-computer"`` (``sentinel-2-l2a``; signs
          asset URLs with ``planetary_computer.sign_inplace``);
        * any STAC API URL (with ``collection=``), searched with pystac-client;
        * a static catalog: a path or URL to ``catalog.json`` / ``collection.json``, an item
          JSON or an item collection (relative asset hrefs are resolved);
        * a ``pystac.Catalog``, ``pystac_client.Client``, ``ItemCollection``, or a list of
          Items (as pystac objects, dicts or paths of item JSON files).
    bbox : (min_lon, min_lat, max_lon, max_lat), optional
        The area in longitude/latitude degrees (EPSG:4326), as STAC searches use it.
    geopolygon : odc.geo Geometry or GeoJSON, optional
        The area as a geometry in any CRS (GeoJSON is lon/lat); instead of ``bbox``. Without
        either, the union of the items found.
    crs : str or CRS, optional
        Output CRS, e.g. ``"EPSG:32633"`` or ``"utm"`` (the zone of the area's centre). By
        default the items' own CRS; items in several CRSs then raise :class:`MixedCRSError`.
    periods : int, str, tuple or list of them
        One composite per period: years (``[2017, 2019, 2021, 2023]``), windows
        (``(2016, 2017)``, ``"2016/2017"``) or date ranges (``("2021-04-01", "2021-09-30")``);
        see :func:`parse_periods`.
    bands : list of str, optional
        Sentinel-2 bands by name or common name (``B04`` or ``red``); default
        ``B02, B03, B04, B08``. The output always uses the ``Bxx`` names.
    cloud_mask : bool or list of int
        ``True``: drop SCL classes 0 no data, 1 saturated, 3 cloud shadow, 8/9 cloud medium/
        high probability, 10 cirrus. A list: those SCL classes. ``False``: no SCL mask.
    cloud_dilation : int
        Grow cloud and shadow masks by this many pixels (their edges are often missed).
    l1c_mask : {"none", "brightness"}
        Items without SCL (L1C) are not cloud-masked by default (a warning says so);
        ``"brightness"`` drops pixels whose blue DN >= 3000 (thick cloud; misses thin cloud
        and haze, may catch snow).
    harmonize : bool, "baseline" or callable
        ``True``: subtract 1000 from items of processing baseline >= 04.00 (their DN carry
        a +1000 offset) unless the archive flags it as already removed
        (``earthsearch:boa_offset_applied: true``); values below 0 are clipped to 0. Earth
        Search's flag is known to be *false* on some scenes that were already corrected
        (a warning names them): ``"earth-search-c1"`` avoids the issue. ``"baseline"``:
        decide from the baseline only; ``False``: keep DN as stored; a callable
        ``item -> offset`` decides per item. See :func:`dn_offset`.
    composite : {"median", "mean"} or None
        Per-pixel reduction of the valid observations of a period. ``None`` returns every
        (masked, harmonised) observation instead, labelled with its period.
    max_cloud_cover : float, optional
        Skip items whose ``eo:cloud_cover`` (percent) exceeds this.
    chunks : int or {"y": int, "x": int}, optional
        Spatial chunk size of the loads and composites (default 512). A period's whole time
        axis is one chunk, so memory per task grows with its number of observations.
    resolution : float
        Output pixel size in CRS units; the models need 10 (m).
    resampling : str
        Resampling of bands whose grid differs from the output grid (SCL: always nearest).
    collection : str, optional
        Collection to search in a STAC API (presets know theirs) or to keep from a catalog.
    sign : callable, optional
        Applied to every item before loading (``planetary_computer.sign_inplace`` style,
        modifying in place, or ``planetary_computer.sign`` style, returning a signed copy).
    patch_url : callable, optional
        Passed to ``odc.stac.load``: rewrites each asset URL at read time (signing tokens
        that would expire before a long lazy computation runs).
    store : str, path or zarr store, optional
        Stage the composites to this 10 m Zarr v3 store (computing them now) and return the
        Dataset read back from it, so inference can run as a separate stage.
    overwrite : bool
        Replace an existing ``store`` that load_sentinel2 staged; any other store or folder
        is never deleted (:class:`StagingStoreExistsError`).

    Returns
    -------
    xarray.Dataset
        Dims ``(time, y, x)``; variables ``B02``... as float32 DN (reflectance x 10000,
        harmonised) with NaN where no valid observation exists (never 0), and ``obs_count``
        (uint16, valid observations per pixel). ``time`` is each period's start; coordinates
        ``period`` (label), ``period_start``, ``period_end`` (inclusive last day),
        ``n_items`` and ``n_observations`` describe the periods. Lazy unless ``store``.

    Raises
    ------
    CatalogError, NoItemsError, BBoxError, InvalidPeriodError, MissingBandError,
    ProjectionError, MixedCRSError, StagingStoreExistsError, StorePathError, CRSError
        What was wrong and what to do, all subclasses of :class:`XJointSegError`.

    Examples
    --------
    >>> import xjointseg
    >>> ds = xjointseg.load_sentinel2(  # doctest: +SKIP
    ...     "earth-search-c1", bbox=(12.49, 52.45, 12.72, 52.53),
    ...     periods=[2017, 2019, 2021, 2023], max_cloud_cover=60)
    >>> isa = ds.isa.segment(model="jointseg")  # doctest: +SKIP
    """
    plan = plan_load(
        catalog_or_items,
        bbox=bbox,
        geopolygon=geopolygon,
        crs=crs,
        periods=periods,
        bands=bands,
        cloud_mask=cloud_mask,
        cloud_dilation=cloud_dilation,
        l1c_mask=l1c_mask,
        harmonize=harmonize,
        composite=composite,
        max_cloud_cover=max_cloud_cover,
        chunks=chunks,
        resolution=resolution,
        resampling=resampling,
        collection=collection,
        sign=sign,
        patch_url=patch_url,
        store=store,
        overwrite=overwrite,
    )
    return plan.load()


#: Resampling names odc-stac passes to GDAL (rasterio.enums.Resampling), for the 20 m bands
#: and any reprojection.
RESAMPLING = (
    "nearest",
    "bilinear",
    "cubic",
    "cubic_spline",
    "lanczos",
    "average",
    "mode",
    "gauss",
    "min",
    "max",
    "med",
    "q1",
    "q3",
    "sum",
    "rms",
)


@dataclass(frozen=True)
class LoadPlan:
    """What :func:`load_sentinel2` loads: options checked, items found, grid fixed.

    Made by :func:`plan_load` (which searches the catalog but reads no pixel);
    :meth:`load` builds the lazy composites (and stages them when a store was given).
    """

    source_name: str
    collection: str
    periods: tuple[Period, ...]
    items: Mapping[str, tuple[pystac.Item, ...]]  # by period label
    bands: tuple[str, ...]  # output bands (Bxx names)
    need: tuple[str, ...]  # bands to read (the brightness test may need B02 too)
    assets: Mapping[str, tuple[tuple[str, ...], str | None, float]]  # item: keys, SCL, offset
    gbox: GeoBox
    chunks: tuple[int, int]
    resampling: str
    mask_classes: frozenset[int]
    cloud_dilation: int
    l1c_mask: str
    harmonize: Any
    composite: str | None
    resolution: float
    patch_url: Callable[[str], str] | None = None
    store: Any = None
    overwrite: bool = False

    def load(self) -> xr.Dataset:
        """The composites (or observations), lazily; staged to ``store`` if one was given."""
        load_kw = dict(
            gbox=self.gbox,
            chunks=self.chunks,
            resampling=self.resampling,
            mask_classes=self.mask_classes,
            dilation=self.cloud_dilation,
            brightness=self.l1c_mask == "brightness",
            patch_url=self.patch_url,
        )
        plan = dict(self.assets)
        results = [
            self._one_period(
                period,
                _period_stack(
                    list(self.items[period.label]), self.need, self.bands, plan, **load_kw
                ),
            )
            for period in self.periods
        ]
        ds = (
            xr.concat(results, "time", join="exact", coords="different", compat="equals")
            if len(results) > 1
            else results[0]
        )
        ds = ds.assign_coords(time=ds["time"].values.astype("datetime64[ns]"))
        ds = self._describe(ds).odc.assign_crs(self.gbox.crs)
        if self.store is not None:
            return _stage(ds, self.store, self.overwrite)
        return ds

    def _one_period(self, period: Period, stack: xr.Dataset) -> xr.Dataset:
        meta = {
            "period": period.label,
            "period_start": period.start,
            "period_end": period.last_day.astype("datetime64[ns]"),
            "n_items": len(self.items[period.label]),
            "n_observations": stack.sizes["time"],
        }
        if self.composite is None:
            obs = stack[list(self.bands)]
            n = obs.sizes["time"]
            return obs.assign_coords(
                {k: ("time", np.repeat(np.array([v]), n)) for k, v in meta.items()}
            )
        comp = _composite(stack, self.bands, self.composite).expand_dims(time=[period.start])
        return comp.assign_coords({k: ("time", np.array([v])) for k, v in meta.items()})

    def _describe(self, ds: xr.Dataset) -> xr.Dataset:
        composite = self.composite
        what = f"{composite} of valid observations" if composite else "valid observation"
        for band in self.bands:
            ds[band].attrs = {
                "long_name": f"Sentinel-2 {band}, {what}",
                "units": "DN (surface reflectance x 10000)",
            }
        if "obs_count" in ds:
            ds["obs_count"].attrs = {
                "long_name": "number of valid (clear) observations",
                "units": "1",
            }
        harmonize = self.harmonize
        ds.attrs = {
            "title": "Sentinel-2 composites" if composite else "Sentinel-2 observations",
            "source": self.source_name,
            "collection": self.collection,
            "composite": composite or "none",
            "cloud_mask": (
                f"SCL classes {sorted(self.mask_classes)}" if self.mask_classes else "none"
            ),
            "cloud_dilation": self.cloud_dilation,
            "l1c_mask": self.l1c_mask,
            "harmonize": harmonize if isinstance(harmonize, bool | str) else "callable",
            "resolution": self.resolution,
            # provenance: segment() and to_zarr() carry it into the cube
            "stac_items": json.dumps(
                {label: [i.id for i in items] for label, items in self.items.items()}
            ),
            "xjointseg_version": __version__,
        }
        return ds


def plan_load(
    catalog_or_items: Any,
    *,
    bbox: Sequence[float] | None = None,
    geopolygon: Any = None,
    crs: Any = None,
    periods: Any,
    bands: Sequence[str] | None = None,
    cloud_mask: bool | Sequence[int] = True,
    cloud_dilation: int = 0,
    l1c_mask: Literal["none", "brightness"] = "none",
    harmonize: HarmonizeOption = True,
    composite: Literal["median", "mean"] | None = "median",
    max_cloud_cover: float | None = None,
    chunks: int | Mapping[str, int] | None = None,
    resolution: float = 10.0,
    resampling: str = "nearest",
    collection: str | None = None,
    sign: Signer | None = None,
    patch_url: Callable[[str], str] | None = None,
    store: str | os.PathLike | MutableMapping | None = None,
    overwrite: bool = False,
) -> LoadPlan:
    """Check the options of :func:`load_sentinel2`, find the items, fix the output grid.

    Parameters are those of :func:`load_sentinel2`; so are the errors. Searches the catalog
    but reads no pixel: ``plan_load(...).load()`` is ``load_sentinel2(...)``.
    """
    if composite not in ("median", "mean", None):
        raise OptionError(f"composite must be 'median', 'mean' or None, not {composite!r}")
    if l1c_mask not in ("none", "brightness"):
        raise OptionError(f"l1c_mask must be 'none' or 'brightness', not {l1c_mask!r}")
    if not (isinstance(cloud_dilation, int | np.integer) and cloud_dilation >= 0):
        raise OptionError(f"cloud_dilation must be an int >= 0, not {cloud_dilation!r}")
    if max_cloud_cover is not None and not (
        isinstance(max_cloud_cover, int | float) and 0 <= max_cloud_cover <= 100
    ):
        raise OptionError(f"max_cloud_cover is a percentage (0-100), not {max_cloud_cover!r}")
    if not (isinstance(resolution, int | float) and 0 < resolution < math.inf):
        raise OptionError(f"resolution must be a number > 0, not {resolution!r}")
    if resampling not in RESAMPLING:
        raise OptionError(
            f"resampling must be one of {', '.join(RESAMPLING)} (GDAL's names, as odc-stac "
            f"takes them), not {resampling!r}"
        )
    for name, value in (("sign", sign), ("patch_url", patch_url)):
        if value is not None and not callable(value):
            raise OptionError(
                f"{name} must be a function that takes and returns a URL (or an item), not "
                f"{value!r}"
            )
    _check_crs(crs)
    if store is not None:  # before any search: a store that cannot be written fails now
        _check_stage_target(store, overwrite)
    out_bands = _bands(bands)
    mask_classes = _mask_classes(cloud_mask)
    cy_cx = _chunks(chunks)
    period_list = parse_periods(periods)
    aoi = _area(bbox, geopolygon)
    aoi_ll = aoi.to_crs("EPSG:4326") if aoi is not None else None

    source = open_source(catalog_or_items, collection=collection, sign=sign)
    by_period = find_period_items(source, period_list, aoi_ll, max_cloud_cover)
    all_items = list({i.id: i for items in by_period.values() for i in items}.values())

    need = out_bands if l1c_mask != "brightness" or "B02" in out_bands else (*out_bands, "B02")
    assets: dict[str, tuple[tuple[str, ...], str | None, float]] = {}
    no_scl = []
    for item in all_items:
        keys = band_assets(item, need, source.assets)
        scl_key = find_asset(item, SCL, source.assets) if mask_classes else None
        if mask_classes and scl_key is None and l1c_mask == "none":
            no_scl.append(item.id)
        assets[item.id] = (keys, scl_key, dn_offset(item, harmonize))
    _check_items(all_items, {i: k + ((s,) if s else ()) for i, (k, s, _) in assets.items()}, crs)
    if no_scl:
        warnings.warn(
            f"{len(no_scl)} item(s) have no SCL asset (L1C?), e.g. {no_scl[0]}: loaded without "
            "cloud mask. Pass l1c_mask='brightness' for a simple thick-cloud test.",
            Sentinel2Warning,
            stacklevel=3,  # the caller of load_sentinel2
        )
    if harmonize is True and (suspect := suspicious_offset_flags(all_items)):
        warnings.warn(
            f"{len(suspect)} item(s) of processing baseline >= 04.00 (e.g. {suspect[0]}) carry "
            "earthsearch:boa_offset_applied=false, a flag known to be wrong for some scenes "
            "(Element84/earth-search#66): 1000 was subtracted as the flag says. Check dark "
            "pixels, or use catalog 'earth-search-c1' (Collection 1) for consistent years.",
            Sentinel2Warning,
            stacklevel=3,  # the caller of load_sentinel2
        )
    gbox = _geobox(all_items, crs, float(resolution), aoi)

    return LoadPlan(
        source_name=source.name,
        collection=source.collection or "",
        periods=tuple(period_list),
        items={label: tuple(items) for label, items in by_period.items()},
        bands=tuple(out_bands),
        need=tuple(need),
        assets=assets,
        gbox=gbox,
        chunks=cy_cx,
        resampling=resampling,
        mask_classes=mask_classes,
        cloud_dilation=int(cloud_dilation),
        l1c_mask=l1c_mask,
        harmonize=harmonize,
        composite=composite,
        resolution=float(resolution),
        patch_url=patch_url,
        store=store,
        overwrite=bool(overwrite),
    )

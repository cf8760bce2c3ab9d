"""From a catalog, an area and periods to lazy per-period composites (odc-stac does the I/O).

Per period, items are split into groups that load identically (same asset keys, same DN
offset); each group is one ``odc.stac.load`` on the common grid, with the whole time axis
in one chunk so the median is blockwise (a task per spatial chunk, no shuffle).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pystac
import xarray as xr
from odc.geo.geobox import GeoBox

from .._version import __version__
from ..schema import remember_recipe
from ._catalog import Signer, Source, find_period_items, open_source
from ._composite import ItemAssets, _check_items, _composite, _geobox, _period_stack
from ._items import (
    SCL,
    Sentinel2Warning,
    band_assets,
    dn_offset,
    find_asset,
    suspicious_offset_flags,
)
from ._options import LoadOptions, _area, takes_load_options
from ._periods import Period, parse_periods
from ._stage import _stage


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


@takes_load_options
def load_sentinel2(catalog_or_items: Any, **options: Any) -> xr.Dataset:
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
    return plan_load(catalog_or_items, **options).load()


@dataclass(frozen=True)
class LoadPlan:
    """What :func:`load_sentinel2` loads: options checked, items found, grid fixed.

    Made by :func:`plan_load` (which searches the catalog but reads no pixel);
    :meth:`load` builds the lazy composites (and stages them when a store was given).
    """

    options: LoadOptions
    source_name: str
    collection: str
    items: Mapping[str, tuple[pystac.Item, ...]]  # by period label
    assets: Mapping[str, ItemAssets]  # by item id
    gbox: GeoBox

    def load(self) -> xr.Dataset:
        """The composites (or observations), lazily; staged to ``store`` if one was given."""
        options = self.options
        results = [
            self._one_period(
                period,
                _period_stack(
                    self.items[period.label], self.assets, gbox=self.gbox, options=options
                ),
            )
            for period in options.period_list
        ]
        ds = (
            xr.concat(results, "time", join="exact", coords="different", compat="equals")
            if len(results) > 1
            else results[0]
        )
        ds = ds.assign_coords(time=ds["time"].values.astype("datetime64[ns]"))
        ds = self._describe(ds).odc.assign_crs(self.gbox.crs)
        if options.store is not None:
            ds = _stage(ds, options.store, options.overwrite)
        digests = self._recipe(ds)
        if digests is not None:
            for band in options.band_names:
                remember_recipe(ds[band].data, [f"{band}:{d}" for d in digests])
        return ds

    def _recipe(self, ds: xr.Dataset) -> list[str] | None:
        """One digest per time step of what fixes its values: items, grid and the options
        that change pixels (not ``chunks``): the same load chunked otherwise is the same
        computation, which cube fingerprints then see. None for a callable ``harmonize``."""
        options = self.options
        if callable(options.harmonize):
            return None
        common = {
            "source": self.source_name,
            "collection": self.collection,
            "grid": [str(self.gbox.crs), list(self.gbox.affine)[:6], list(self.gbox.shape)],
            "composite": options.composite,
            "cloud_mask": sorted(options.mask_classes),
            "cloud_dilation": options.cloud_dilation,
            "l1c_mask": options.l1c_mask,
            "harmonize": options.harmonize,
            "resampling": options.resampling,
            "xjointseg": __version__,  # how the composites are made
        }
        digests = []
        for label, time in zip(ds["period"].values, ds["time"].values, strict=True):
            items = [_item_identity(i) for i in self.items[str(label)]]
            recipe = {**common, "period": str(label), "time": str(time), "items": items}
            text = json.dumps(recipe, sort_keys=True, default=str)
            digests.append(hashlib.sha256(text.encode()).hexdigest())
        return digests

    def _one_period(self, period: Period, stack: xr.Dataset) -> xr.Dataset:
        meta = {
            "period": period.label,
            "period_start": period.start,
            "period_end": period.last_day.astype("datetime64[ns]"),
            "n_items": len(self.items[period.label]),
            "n_observations": stack.sizes["time"],
        }
        bands, composite = self.options.band_names, self.options.composite
        if composite is None:
            obs = stack[list(bands)]
            n = obs.sizes["time"]
            return obs.assign_coords(
                {k: ("time", np.repeat(np.array([v]), n)) for k, v in meta.items()}
            )
        comp = _composite(stack, bands, composite).expand_dims(time=[period.start])
        return comp.assign_coords({k: ("time", np.array([v])) for k, v in meta.items()})

    def _describe(self, ds: xr.Dataset) -> xr.Dataset:
        options = self.options
        composite = options.composite
        what = f"{composite} of valid observations" if composite else "valid observation"
        for band in options.band_names:
            ds[band].attrs = {
                "long_name": f"Sentinel-2 {band}, {what}",
                "units": "DN (surface reflectance x 10000)",
            }
        if "obs_count" in ds:
            ds["obs_count"].attrs = {
                "long_name": "number of valid (clear) observations",
                "units": "1",
            }
        harmonize, mask_classes = options.harmonize, options.mask_classes
        ds.attrs = {
            "title": "Sentinel-2 composites" if composite else "Sentinel-2 observations",
            "source": self.source_name,
            "collection": self.collection,
            "composite": composite or "none",
            "cloud_mask": f"SCL classes {sorted(mask_classes)}" if mask_classes else "none",
            "cloud_dilation": options.cloud_dilation,
            "l1c_mask": options.l1c_mask,
            "harmonize": harmonize if isinstance(harmonize, bool | str) else "callable",
            "resolution": options.resolution,
            # provenance: segment() and to_zarr() carry it into the cube
            "stac_items": json.dumps(
                {label: [i.id for i in items] for label, items in self.items.items()}
            ),
            "xjointseg_version": __version__,
        }
        return ds


def _item_identity(item: pystac.Item) -> list:
    """An item as its pixels depend on it: id, update time and asset files (a signing
    token in a URL's query changes on every request, not the file)."""
    hrefs = sorted((a.get_absolute_href() or a.href).split("?")[0] for a in item.assets.values())
    return [item.id, item.properties.get("updated"), hrefs]


@takes_load_options
def plan_load(catalog_or_items: Any, **options: Any) -> LoadPlan:
    """Check the options of :func:`load_sentinel2`, find the items, fix the output grid.

    Parameters are those of :func:`load_sentinel2`; so are the errors. Searches the catalog
    but reads no pixel: ``plan_load(...).load()`` is ``load_sentinel2(...)``.
    """
    opts = LoadOptions(**options)
    aoi_ll = opts.aoi.to_crs("EPSG:4326") if opts.aoi is not None else None
    source = open_source(catalog_or_items, collection=opts.collection, sign=opts.sign)
    by_period = find_period_items(source, opts.period_list, aoi_ll, opts.max_cloud_cover)
    all_items = list({i.id: i for items in by_period.values() for i in items}.values())
    assets = _item_assets(all_items, source, opts)
    asset_keys = {i: keys + ((scl,) if scl else ()) for i, (keys, scl, _) in assets.items()}
    _check_items(all_items, asset_keys, opts.crs)
    _warn_about_items(all_items, assets, opts)
    return LoadPlan(
        options=opts,
        source_name=source.name,
        collection=source.collection or "",
        items={label: tuple(items) for label, items in by_period.items()},
        assets=assets,
        gbox=_geobox(all_items, opts.crs, opts.resolution, opts.aoi),
    )


def _item_assets(
    items: Sequence[pystac.Item], source: Source, options: LoadOptions
) -> dict[str, ItemAssets]:
    """Per item id: what to read of it (the SCL key is None without cloud mask)."""
    assets = {}
    for item in items:
        keys = band_assets(item, options.read_bands, source.assets)
        scl_key = find_asset(item, SCL, source.assets) if options.mask_classes else None
        assets[item.id] = (keys, scl_key, dn_offset(item, options.harmonize))
    return assets


def _warn_about_items(
    items: Sequence[pystac.Item],
    assets: Mapping[str, ItemAssets],
    options: LoadOptions,
) -> None:
    """Warn of items loaded without cloud mask, and of DN offset flags known to be wrong."""
    if options.mask_classes and options.l1c_mask == "none":
        no_scl = [item_id for item_id, (_, scl_key, _) in assets.items() if scl_key is None]
        if no_scl:
            warnings.warn(
                f"{len(no_scl)} item(s) have no SCL asset (L1C?), e.g. {no_scl[0]}: loaded "
                "without cloud mask. Pass l1c_mask='brightness' for a simple thick-cloud test.",
                Sentinel2Warning,
                stacklevel=4,  # the caller of load_sentinel2
            )
    if options.harmonize is True and (suspect := suspicious_offset_flags(items)):
        warnings.warn(
            f"{len(suspect)} item(s) of processing baseline >= 04.00 (e.g. {suspect[0]}) carry "
            "earthsearch:boa_offset_applied=false, a flag known to be wrong for some scenes "
            "(Element84/earth-search#66): 1000 was subtracted as the flag says. Check dark "
            "pixels, or use catalog 'earth-search-c1' (Collection 1) for consistent years.",
            Sentinel2Warning,
            stacklevel=4,  # the caller of load_sentinel2
        )

"""From a catalog, an area and periods to lazy per-period composites (odc-stac does the I/O).

Per period, items are split into groups that load identically (same asset keys, same DN
offset); each group is one ``odc.stac.load`` on the common grid, with the whole time axis
in one chunk so the median is blockwise (a task per spatial chunk, no shuffle).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Hashable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import odc.stac
import pystac
import xarray as xr
from odc.geo import xy_
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry, box

from .._version import __version__
from ..errors import (
    BandError,
    BBoxError,
    CatalogError,
    CRSError,
    MixedCRSError,
    OptionError,
    ProjectionError,
    StagingStoreExistsError,
    StorePathError,
)
from ..paths import check_writable, remove_zarr_store
from ._catalog import Signer, find_period_items, open_source
from ._items import (
    SCL,
    HarmonizeOption,
    Sentinel2Warning,
    band_assets,
    canonical_band,
    dn_offset,
    find_asset,
    suspicious_offset_flags,
)
from ._periods import Period, parse_periods

DEFAULT_BANDS = ("B02", "B03", "B04", "B08")
# SCL classes that are not a clear view of the ground: 0 no data, 1 saturated/defective,
# 3 cloud shadow, 8/9 cloud medium/high probability, 10 thin cirrus.
DEFAULT_SCL_MASK = (0, 1, 3, 8, 9, 10)
_SCL_CLOUDS = frozenset({3, 8, 9, 10})  # the classes whose edges dilation widens
BRIGHTNESS_DN = 3000  # blue TOA reflectance above 0.3: thick cloud (L1C, opt-in)
DEFAULT_CHUNK = 512
_TIME_ENCODING = {
    "units": "milliseconds since 1970-01-01",
    "calendar": "proleptic_gregorian",
    "dtype": "int64",
}


def _area(bbox: Sequence[float] | None, geopolygon: Any) -> Geometry | None:
    """The area of interest as an odc-geo Geometry, checked; None for 'all the items'."""
    if bbox is not None and geopolygon is not None:
        raise OptionError("give bbox or geopolygon, not both")
    if bbox is not None:
        try:
            values = tuple(float(v) for v in bbox)
        except (TypeError, ValueError):
            raise BBoxError(
                f"bbox must be 4 numbers (min_lon, min_lat, max_lon, max_lat), got {bbox!r}"
            ) from None
        if len(values) != 4 or not all(np.isfinite(values)):
            raise BBoxError(
                f"bbox must be 4 finite numbers (min_lon, min_lat, max_lon, max_lat), got {bbox!r}"
            )
        _check_lonlat(values, "bbox")
        x0, y0, x1, y1 = values
        if x0 >= x1 or y0 >= y1:
            raise BBoxError(
                f"bbox {values} is empty or its corners are swapped: the order is "
                "(min_lon, min_lat, max_lon, max_lat)"
            )
        return box(x0, y0, x1, y1, crs="EPSG:4326")
    if geopolygon is None:
        return None
    if isinstance(geopolygon, Geometry):
        if geopolygon.crs is None:
            raise BBoxError(
                "geopolygon has no CRS: build it with odc.geo.geom.polygon(..., crs=...)"
            )
        geom = geopolygon
    else:
        if hasattr(geopolygon, "__geo_interface__"):
            geopolygon = geopolygon.__geo_interface__
        if isinstance(geopolygon, Mapping) and geopolygon.get("type") == "Feature":
            geopolygon = geopolygon["geometry"]
        try:
            geom = Geometry(geopolygon, crs="EPSG:4326")  # GeoJSON is lon/lat by definition
        except Exception as exc:
            raise BBoxError(f"cannot read geopolygon as GeoJSON: {exc}") from None
        _check_lonlat(geom.boundingbox, "geopolygon")
    if geom.is_empty or geom.area == 0:
        raise BBoxError("the area of interest is empty")
    return geom


def _check_lonlat(bounds: Sequence[float], what: str) -> None:
    x0, y0, x1, y1 = bounds
    if max(abs(x0), abs(x1)) > 180 or max(abs(y0), abs(y1)) > 90:
        projected = max(abs(v) for v in bounds) > 1000
        hint = (
            " These look like projected metres: pass longitude/latitude, or give the area in "
            "its CRS: geopolygon=odc.geo.geom.box(x0, y0, x1, y1, crs='EPSG:32633')"
            if projected
            else ""
        )
        raise BBoxError(
            f"{what} {tuple(bounds)} is out of range for longitude/latitude degrees "
            f"(lon -180..180, lat -90..90).{hint}"
        )


def _bands(bands: Sequence[str] | str | None) -> tuple[str, ...]:
    if bands is None:
        return DEFAULT_BANDS
    if isinstance(bands, str):
        bands = [bands]
    out: list[str] = []
    for b in bands:
        name = canonical_band(b)
        if name == SCL:
            raise BandError("SCL is used for the cloud mask, not composited: leave it out of bands")
        if name not in out:
            out.append(name)
    if not out:
        raise BandError("bands is empty: e.g. bands=['B02', 'B03', 'B04', 'B08']")
    return tuple(out)


def _mask_classes(cloud_mask: bool | Sequence[int]) -> frozenset[int]:
    if cloud_mask is True:
        return frozenset(DEFAULT_SCL_MASK)
    if cloud_mask is False or cloud_mask is None:
        return frozenset()
    try:
        classes = frozenset(int(c) for c in cloud_mask)
    except (TypeError, ValueError):
        raise OptionError(
            f"cloud_mask must be True, False or SCL classes (ints 0-11), not {cloud_mask!r}"
        ) from None
    if not all(0 <= c <= 11 for c in classes):
        raise OptionError(f"SCL classes are 0-11, got {sorted(classes)}")
    return classes


def _chunks(chunks: int | Mapping[str, int] | None) -> tuple[int, int]:
    if chunks is None:
        return DEFAULT_CHUNK, DEFAULT_CHUNK
    if isinstance(chunks, Mapping):
        cy, cx = chunks.get("y", DEFAULT_CHUNK), chunks.get("x", DEFAULT_CHUNK)
    else:
        cy = cx = chunks
    if not all(isinstance(c, int | np.integer) and c > 0 for c in (cy, cx)):
        raise OptionError(
            f"chunks must be a positive int or {{'y': int, 'x': int}}, not {chunks!r}"
        )
    return int(cy), int(cx)


def _dilate(mask: np.ndarray, n: int) -> np.ndarray:
    """Square dilation by ``n`` pixels over the last two axes (separable running max)."""
    out = mask
    for axis in (-2, -1):
        grown = out.copy()
        size = out.shape[axis]
        for s in range(1, min(n, size - 1) + 1):
            lo = [slice(None)] * out.ndim
            hi = [slice(None)] * out.ndim
            lo[axis], hi[axis] = slice(0, size - s), slice(s, size)
            grown[tuple(lo)] |= out[tuple(hi)]
            grown[tuple(hi)] |= out[tuple(lo)]
        out = grown
    return out


def _dilated(mask: xr.DataArray, n: int) -> xr.DataArray:
    if n <= 0:
        return mask
    data = mask.data
    ydim, xdim = mask.dims.index("y"), mask.dims.index("x")
    depth = {i: (n if i in (ydim, xdim) else 0) for i in range(mask.ndim)}
    grown = data.map_overlap(_dilate, depth=depth, boundary="none", n=n, dtype=bool)
    return mask.copy(data=grown)


def _nanreduce(values: np.ndarray, how: str) -> np.ndarray:
    # Pixels never seen clear are all-NaN: fill them first rather than silence numpy's
    # warning (warnings.catch_warnings is not thread-safe under dask's threaded scheduler).
    empty = np.isnan(values).all(axis=-1)
    if empty.any():
        values = np.where(empty[..., None], np.float32(0), values)
    func = np.nanmedian if how == "median" else np.nanmean
    out = func(values, axis=-1).astype("float32")
    out[empty] = np.nan
    return out


def _check_items(
    items: Sequence[pystac.Item], keys: Mapping[str, tuple[str, ...]], crs: Any
) -> None:
    """Asset hrefs must resolve and, without a target CRS, assets must carry projection."""
    for item in items:
        for key in keys[item.id]:
            asset = item.assets[key]
            if asset.get_absolute_href() is None:
                raise CatalogError(
                    f"item {item.id}: asset {key!r} has a relative href ({asset.href}) and the "
                    "item has no self link to resolve it: read items with pystac.Item.from_file "
                    "or from a catalog, or make the hrefs absolute"
                )
    if crs is not None:
        return
    for item in items:
        for key in keys[item.id]:
            fields = {**item.properties, **item.assets[key].extra_fields}
            has_crs = any(
                fields.get(k) not in (None, "")
                for k in ("proj:epsg", "proj:code", "proj:wkt2", "proj:projjson")
            )
            has_grid = "proj:shape" in fields and "proj:transform" in fields
            if not (has_crs and has_grid):
                missing = [
                    n
                    for n, ok in (
                        ("CRS (proj:code/proj:epsg)", has_crs),
                        ("proj:shape + proj:transform", has_grid),
                    )
                    if not ok
                ]
                raise ProjectionError(
                    f"item {item.id}, asset {key!r} lacks projection metadata: "
                    f"{' and '.join(missing)}. Add the STAC projection extension to each asset "
                    "(e.g. rio_stac.create_stac_item(..., with_proj=True)), or pass crs='EPSG:...' "
                    "(the grid then comes from the items' lon/lat footprints)"
                )


def _check_crs(crs: Any) -> None:
    """Refuse an output CRS that odc-geo cannot read, before any catalog is searched."""
    if crs is None or (isinstance(crs, str) and crs.lower() == "utm"):
        return
    from odc.geo.crs import CRS

    try:
        CRS(crs)
    except Exception as exc:  # pyproj raises its own CRSError, odc-geo ValueError
        raise CRSError(
            f"crs={crs!r} is not a CRS ({exc}): pass e.g. 'EPSG:32633', or 'utm' for the "
            "UTM zone of the area's centre"
        ) from None


def _target_crs(parsed: Sequence[Any], crs: Any) -> Any:
    if crs is not None:
        return crs
    found: dict[str, list[str]] = {}
    for p in parsed:
        c = p.crs()
        found.setdefault(str(c), []).append(p.id)
    if len(found) > 1:
        listing = "; ".join(
            f"{c}: {len(ids)} items (e.g. {ids[0]})" for c, ids in sorted(found.items())
        )
        raise MixedCRSError(
            f"the items come in {len(found)} CRSs ({listing}) and no target crs was given: pass "
            "crs='EPSG:...' (e.g. the UTM zone holding most of the area) or crs='utm' (the zone "
            "of the area's centre); items in other zones are then reprojected"
        )
    return next(iter(found))


def _anchor(parsed: Sequence[Any], crs: Any, resolution: float) -> Any:
    """Snap the output grid to the data's own pixel edges when it has that resolution.

    Sentinel-2 tile origins are multiples of 10 m, so at 10 m this is odc-stac's default; at
    other resolutions (e.g. a decimated copy) it avoids resampling by a fraction of a pixel.
    """
    for p in parsed:
        for gbox in p.geoboxes():
            if str(gbox.crs) != str(crs) or not np.isclose(abs(gbox.resolution.x), resolution):
                continue
            aff = gbox.affine
            return xy_((aff.c % resolution) / resolution, (aff.f % resolution) / resolution)
    return "default"


def _geobox(
    items: Sequence[pystac.Item], crs: Any, resolution: float, aoi: Geometry | None
) -> GeoBox:
    parsed = list(odc.stac.parse_items(items))
    target = _target_crs(parsed, crs)
    try:
        gbox = odc.stac.output_geobox(
            parsed,
            crs=target,
            resolution=resolution,
            geopolygon=aoi,
            anchor=_anchor(parsed, target, resolution),
        )
    except ValueError as exc:
        raise ProjectionError(f"cannot derive the output grid: {exc}") from None
    if gbox is None or 0 in gbox.shape:
        raise ProjectionError("cannot derive the output grid from the items and the area")
    return gbox


def _load_group(
    items: Sequence[pystac.Item],
    keys: Sequence[str],
    bands: Sequence[str],
    scl_key: str | None,
    offset: float,
    *,
    gbox: GeoBox,
    chunks: tuple[int, int],
    resampling: str,
    mask_classes: frozenset[int],
    dilation: int,
    brightness: bool,
    patch_url: Callable[[str], str] | None,
) -> xr.Dataset:
    """Load items that share asset keys and offset; return masked float32 bands + 'valid'."""
    load = list(dict.fromkeys(keys))
    if scl_key is not None:
        load.append(scl_key)
    # Declared for archives whose items lack raster:bands (Planetary Computer), so every
    # source loads the same dtypes and the same no-data value.
    assets_cfg: dict[str, dict[str, Any]] = {"*": {"data_type": "uint16", "nodata": 0}}
    resamp = dict.fromkeys(keys, resampling)
    if scl_key is not None:
        assets_cfg[scl_key] = {"data_type": "uint8", "nodata": 0}
        resamp[scl_key] = "nearest"  # classes must never be interpolated
    raw = odc.stac.load(
        items,
        bands=load,
        geobox=gbox,
        groupby="solar_day",
        chunks={"time": -1, "y": chunks[0], "x": chunks[1]},
        resampling=resamp,
        stac_cfg={"*": {"assets": assets_cfg, "warnings": "ignore"}},
        nodata=0,  # DN 0 is Sentinel-2's no-data, in L1C, L2A and SCL alike
        patch_url=patch_url,
        fail_on_error=True,
    )
    valid = None
    for key in keys:
        ok = raw[key] != 0
        valid = ok if valid is None else valid & ok
    values = {}
    for band, key in zip(bands, keys, strict=True):
        v = raw[key].astype("float32")
        if offset:
            # Dark pixels below the offset were negative reflectance: clip to 0 as the
            # pre-04.00 products did, so all years share one DN scale.
            v = (v - np.float32(offset)).clip(min=0)
        values[band] = v
    if scl_key is not None and mask_classes:
        scl = raw[scl_key]
        bad = scl.isin(sorted(mask_classes))
        if dilation:
            bad = bad | _dilated(scl.isin(sorted(mask_classes & _SCL_CLOUDS)), dilation)
        valid = cast(xr.DataArray, valid) & ~bad
    if brightness and scl_key is None:
        valid = cast(xr.DataArray, valid) & ~_dilated(values["B02"] >= BRIGHTNESS_DN, dilation)
    out = xr.Dataset({b: v.where(valid) for b, v in values.items()})
    out["valid"] = valid
    return out.drop_vars([c for c in out.coords if c not in ("time", "y", "x", "spatial_ref")])


def _period_stack(
    items: Sequence[pystac.Item],
    load_bands: tuple[str, ...],
    bands: tuple[str, ...],
    plan: Mapping[str, tuple[tuple[str, ...], str | None, float]],
    **kw: Any,
) -> xr.Dataset:
    """All observations of one period: (time, y, x), time in one chunk."""
    groups: dict[tuple, list[pystac.Item]] = {}
    for item in items:
        keys, scl_key, offset = plan[item.id]
        groups.setdefault((keys, scl_key, offset), []).append(item)
    parts = [
        _load_group(members, keys, load_bands, scl_key, offset, **kw)
        for (keys, scl_key, offset), members in groups.items()
    ]
    stack = (
        parts[0]
        if len(parts) == 1
        else xr.concat(parts, "time", join="exact", coords="minimal", compat="override")
    )
    # Merge the groups' time chunks first (per spatial block, cheap), then sort within the
    # one chunk: sorting a multi-chunk axis would gather across chunks.
    stack = stack[[*bands, "valid"]].chunk({"time": -1})
    if len(parts) > 1:
        stack = stack.sortby("time")
    return stack


def _composite(stack: xr.Dataset, bands: Sequence[str], how: str) -> xr.Dataset:
    out = {}
    for band in bands:
        out[band] = xr.apply_ufunc(
            _nanreduce,
            stack[band],
            input_core_dims=[["time"]],
            kwargs={"how": how},
            dask="parallelized",
            output_dtypes=[np.float32],
        )
    out["obs_count"] = stack["valid"].sum("time", dtype="uint16")
    return xr.Dataset(out)


STAGED_MARK = "xjointseg_composites"  # root attribute of the stores _stage writes


def _staged_by_us(store: Any) -> bool:
    """The store's root says load_sentinel2 wrote it (the only kind overwrite may replace)."""
    if isinstance(store, str | os.PathLike) and "://" not in os.fspath(store):
        try:
            meta = json.loads((Path(store) / "zarr.json").read_text())
        except (OSError, ValueError):
            return False
        return bool(meta.get("attributes", {}).get(STAGED_MARK))
    try:
        import zarr

        return bool(zarr.open_group(store, mode="r").attrs.get(STAGED_MARK))
    except Exception:  # nothing there, or not Zarr: not ours either way
        return False


def _check_stage_target(store: Any, overwrite: bool) -> None:
    """Refuse a store that exists, unless overwrite and load_sentinel2 made it."""
    if isinstance(store, str | os.PathLike) and "://" not in os.fspath(store):
        path = Path(store)
        check_writable(path, folder=True)
        if not path.exists() or not any(path.iterdir()):
            return
    elif not overwrite:
        return  # zarr's mode "w-" refuses an existing store below
    if not overwrite:
        raise StagingStoreExistsError(
            f"{store} exists: pass overwrite=True to replace it, or another path"
        )
    if not _staged_by_us(store):
        raise StagingStoreExistsError(
            f"{store} exists and was not written by load_sentinel2: xjointseg does not delete "
            "what it did not create. Pick another path, or remove it yourself"
        )


def _stage(ds: xr.Dataset, store: Any, overwrite: bool) -> xr.Dataset:
    """Write composites to a Zarr v3 store (one Zarr chunk per dask chunk) and reopen lazily."""
    _check_stage_target(store, overwrite)
    out = ds.copy()
    out = out.assign_coords(period=out["period"].astype(object))  # variable-length strings
    out.attrs[STAGED_MARK] = 1
    # Zarr chunks are regular (the last may be smaller): make every variable's chunking so
    for name, var in out.data_vars.items():
        if var.chunks is not None:
            out[name] = var.chunk({d: c[0] for d, c in zip(var.dims, var.chunks, strict=True)})
    encoding: dict[Hashable, dict[str, Any]] = {
        name: {"chunks": tuple(c[0] for c in var.chunks)}
        for name, var in out.data_vars.items()
        if var.chunks is not None
    }
    for name in ("time", "period_start", "period_end"):
        if name in out.coords:
            encoding[name] = dict(_TIME_ENCODING)
    mode: Literal["w", "w-", "a"] = "w" if overwrite else "w-"
    if overwrite and isinstance(store, str | os.PathLike) and _staged_by_us(store):
        # replace only what load_sentinel2 wrote: a user's files in the folder stay
        import fsspec

        fs, root = fsspec.core.url_to_fs(os.fspath(store))
        remove_zarr_store(fs, root.rstrip("/"))
        mode = "a"
    try:
        out.to_zarr(
            store,
            mode=mode,
            zarr_format=3,
            consolidated=False,
            encoding=encoding,
        )
    except (FileExistsError, ValueError) as exc:
        if "exist" in str(exc).lower():
            raise StagingStoreExistsError(
                f"{store} already holds data: pass overwrite=True or another store"
            ) from None
        raise
    except PermissionError as exc:
        raise StorePathError(f"cannot write {store}: {exc.strerror}. Pick another path") from None
    staged = xr.open_zarr(store, zarr_format=3, consolidated=False, chunks={})
    if "spatial_ref" in staged.data_vars:  # the CRS travels as a scalar variable
        staged = staged.set_coords("spatial_ref")
    staged.attrs.pop(STAGED_MARK, None)
    return staged.odc.assign_crs(ds.odc.crs)


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
    if not (isinstance(resolution, int | float) and resolution > 0):
        raise OptionError(f"resolution must be > 0, not {resolution!r}")
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

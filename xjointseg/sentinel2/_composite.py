"""Per period, from items to one composite: the common grid, one ``odc.stac.load`` per group
of items that load identically, the cloud mask (SCL classes, dilated), and the median."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
import odc.stac
import pystac
import xarray as xr
from odc.geo import xy_
from odc.geo.geobox import GeoBox
from odc.geo.geom import Geometry

from ..errors import CatalogError, MixedCRSError, ProjectionError
from ._options import _SCL_CLOUDS, BRIGHTNESS_DN, LoadOptions

#: What to read of an item: the asset keys of the bands, the SCL asset key (None when there
#: is none, or no cloud mask), the DN offset to subtract.
ItemAssets = tuple[tuple[str, ...], str | None, float]


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
    scl_key: str | None,
    offset: float,
    *,
    gbox: GeoBox,
    options: LoadOptions,
) -> xr.Dataset:
    """Load items that share asset keys and offset; return masked float32 bands + 'valid'."""
    load = list(dict.fromkeys(keys))
    if scl_key is not None:
        load.append(scl_key)
    # Declared for archives whose items lack raster:bands (Planetary Computer), so every
    # source loads the same dtypes and the same no-data value.
    assets_cfg: dict[str, dict[str, Any]] = {"*": {"data_type": "uint16", "nodata": 0}}
    resamp = dict.fromkeys(keys, options.resampling)
    if scl_key is not None:
        assets_cfg[scl_key] = {"data_type": "uint8", "nodata": 0}
        resamp[scl_key] = "nearest"  # classes must never be interpolated
    raw = odc.stac.load(
        items,
        bands=load,
        geobox=gbox,
        groupby="solar_day",
        chunks={"time": -1, "y": options.chunk_yx[0], "x": options.chunk_yx[1]},
        resampling=resamp,
        stac_cfg={"*": {"assets": assets_cfg, "warnings": "ignore"}},
        nodata=0,  # DN 0 is Sentinel-2's no-data, in L1C, L2A and SCL alike
        patch_url=options.patch_url,
        fail_on_error=True,
    )
    valid = None
    for key in keys:
        ok = raw[key] != 0
        valid = ok if valid is None else valid & ok
    values = {}
    for band, key in zip(options.read_bands, keys, strict=True):
        v = raw[key].astype("float32")
        if offset:
            # Dark pixels below the offset were negative reflectance: clip to 0 as the
            # pre-04.00 products did, so all years share one DN scale.
            v = (v - np.float32(offset)).clip(min=0)
        values[band] = v
    mask_classes, dilation = options.mask_classes, options.cloud_dilation
    if scl_key is not None and mask_classes:
        scl = raw[scl_key]
        bad = scl.isin(sorted(mask_classes))
        if dilation:
            bad = bad | _dilated(scl.isin(sorted(mask_classes & _SCL_CLOUDS)), dilation)
        valid = cast(xr.DataArray, valid) & ~bad
    if options.l1c_mask == "brightness" and scl_key is None:
        valid = cast(xr.DataArray, valid) & ~_dilated(values["B02"] >= BRIGHTNESS_DN, dilation)
    out = xr.Dataset({b: v.where(valid) for b, v in values.items()})
    out["valid"] = valid
    return out.drop_vars([c for c in out.coords if c not in ("time", "y", "x", "spatial_ref")])


def _period_stack(
    items: Sequence[pystac.Item],
    assets: Mapping[str, ItemAssets],
    *,
    gbox: GeoBox,
    options: LoadOptions,
) -> xr.Dataset:
    """All observations of one period: (time, y, x), time in one chunk.

    ``assets`` holds each item's :data:`ItemAssets`: items that share them load together.
    """
    groups: dict[ItemAssets, list[pystac.Item]] = {}
    for item in items:
        groups.setdefault(assets[item.id], []).append(item)
    parts = [
        _load_group(members, keys, scl_key, offset, gbox=gbox, options=options)
        for (keys, scl_key, offset), members in groups.items()
    ]
    stack = (
        parts[0]
        if len(parts) == 1
        else xr.concat(parts, "time", join="exact", coords="minimal", compat="override")
    )
    # Merge the groups' time chunks first (per spatial block, cheap), then sort within the
    # one chunk: sorting a multi-chunk axis would gather across chunks.
    stack = stack[[*options.band_names, "valid"]].chunk({"time": -1})
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

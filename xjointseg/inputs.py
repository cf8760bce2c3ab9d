"""Reading Sentinel-2 input: the bands a model needs, in its order, checked before any pixel
is computed (band names and aliases, dtype, DN scale, CRS and a 10 m grid in metres).

:func:`segment` and :func:`new_isa` read their images through here, so both refuse the same
bad input with the same errors.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from .errors import (
    BandError,
    ChunkError,
    CRSError,
    DimensionError,
    DTypeError,
    EmptyInputError,
    GridError,
    ValueRangeError,
)
from .schema import (
    INPUT_RESOLUTION,
    band_names,
    check_ground_scale,
    checked_geobox,
    find_band,
    metres_per_unit,
)

if TYPE_CHECKING:
    from odc.geo.crs import CRS

# Sentinel-2 DN (reflectance x 10000) of a block of real land or water are far above this;
# reflectance in 0..1 (a scaled load) never is. Judged only on enough valid pixels.
DN_FLOOR = 1.5
DN_MIN_PIXELS = 64


def _nodata_of(var: xr.DataArray) -> float | None:
    for value in (
        var.attrs.get("nodata"),
        var.encoding.get("_FillValue"),
        var.attrs.get("_FillValue"),
    ):
        if value is not None:
            try:
                return float(value)
            except (TypeError, ValueError):
                raise ValueRangeError(
                    f"{var.name}: its nodata / _FillValue {value!r} is not one number: set "
                    f"the band's fill value (e.g. ds[{str(var.name)!r}].attrs['nodata'] = 0) "
                    "or remove the attribute"
                ) from None
    return None


def _stack_bands(
    obj: xr.Dataset | xr.DataArray, bands: Sequence[str]
) -> tuple[xr.DataArray, list[float | None]]:
    """Return ``(DataArray with a 'band' dim in model order, per-band nodata)``."""
    if isinstance(obj, xr.Dataset):
        return _stack_dataset(obj, bands)
    if not isinstance(obj, xr.DataArray):
        raise DimensionError(f"segment takes an xarray Dataset or DataArray, not {type(obj)}")
    _check_band_dim(obj, bands)
    picks = _band_positions(obj, bands)
    nd = _nodata_of(obj)
    return obj.isel(band=picks).assign_coords(band=list(bands)), [nd] * len(bands)


def _stack_dataset(ds: xr.Dataset, bands: Sequence[str]) -> tuple[xr.DataArray, list[float | None]]:
    names = []
    for band in bands:
        found = find_band(band, list(ds.data_vars))
        if found is None:
            raise BandError(
                f"band {band} (or {'/'.join(band_names(band)[1:]) or 'an alias'}) is missing: "
                f"the Dataset has {sorted(map(str, ds.data_vars))}. Load it too, e.g. "
                f"odc.stac.load(..., bands=[...])."
            )
        names.append(found)
    nodata = [_nodata_of(ds[n]) for n in names]
    arr = xr.concat([ds[n] for n in names], dim="band", coords="minimal", compat="override")
    arr.attrs = {}
    return arr.assign_coords(band=list(bands)), nodata


def _check_band_dim(arr: xr.DataArray, bands: Sequence[str]) -> None:
    """A labelled 'band' dimension, in one chunk."""
    if "band" not in arr.dims:
        lookalike = [
            d
            for d in arr.dims
            if str(d).lower() in ("bands", "channel", "channels", "b", "variable", "spectral")
        ]
        hint = f" Rename it: da.rename({{'{lookalike[0]}': 'band'}})." if lookalike else ""
        raise DimensionError(
            f"a DataArray needs a 'band' dimension holding the bands {tuple(bands)}; "
            f"it has dims {arr.dims}.{hint}"
        )
    if "band" not in arr.coords:
        raise BandError(
            "the 'band' dimension has no labels: name the bands, e.g. "
            f"da.assign_coords(band={list(bands)})"
        )
    if arr.chunks is not None and len(arr.chunksizes["band"]) > 1:
        raise ChunkError(
            "the band dimension is split into several chunks; each block needs all bands: "
            "use da.chunk(band=-1)"
        )


def _band_positions(arr: xr.DataArray, bands: Sequence[str]) -> list[int]:
    """Where each of ``bands`` lies along the 'band' dimension (by name or alias)."""
    labels = [str(b) for b in arr["band"].values]
    twice = sorted({b for b in labels if labels.count(b) > 1})
    if twice:
        raise BandError(
            f"the DataArray labels several bands {twice[0]!r} (bands {labels}): each band "
            "needs its own label, e.g. da.assign_coords(band=['B02', 'B03', 'B04', 'B08'])"
        )
    picks = []
    for band in bands:
        found = find_band(band, labels)
        if found is None:
            names = arr.attrs.get("long_name")  # rioxarray keeps a file's band names here
            hint = (
                f": name them, e.g. da.assign_coords(band=list(da.attrs['long_name'])) "
                f"(the file calls them {list(names)})"
                if isinstance(names, tuple | list) and len(names) == len(labels)
                else ""
            )
            raise BandError(f"band {band} is missing: the DataArray has bands {labels}{hint}")
        picks.append(labels.index(cast(str, found)))  # one of labels
    return picks


def _check_grid(arr: xr.DataArray) -> tuple[GeoBox, tuple[Hashable, ...]]:
    """Return the 10 m GeoBox and the non-spatial leading dims; raise on a bad grid."""
    if arr.odc.spatial_dims is None:
        raise DimensionError(
            f"the input needs y and x dimensions (a raster); it has dims {arr.dims}: "
            "select a window (ds.isel(y=slice(a, b))) rather than one row or column"
        )
    _check_crs(arr.odc.crs)
    ydim, xdim = arr.odc.spatial_dims
    others = tuple(d for d in arr.dims if d not in (ydim, xdim, "band"))
    if len(others) > 1:
        raise DimensionError(
            f"dims must be (y, x) or (time, y, x) plus 'band'; got {arr.dims}: select or "
            f"stack the extra dimensions {others[:-1]}"
        )
    _check_spacing(arr, (ydim, xdim))
    gbox = checked_geobox(
        arr,
        GridError,
        "cannot derive a regular grid from the input coordinates",
        rotated="the grid is rotated; reproject it to a north-up grid first",
    )
    check_ground_scale(gbox, "the input")
    res = gbox.resolution
    if not (np.isclose(abs(res.x), INPUT_RESOLUTION) and np.isclose(abs(res.y), INPUT_RESOLUTION)):
        raise GridError(
            f"the input has {abs(res.x):g} x {abs(res.y):g} m pixels; the model needs "
            f"Sentinel-2's {INPUT_RESOLUTION:g} m grid: load with resolution=10"
        )
    return gbox, others


def _crs_name(crs: CRS) -> str:
    """A CRS as a user names it (EPSG code, else its name), not its WKT."""
    return f"EPSG:{crs.epsg}" if crs.epsg else str(getattr(crs.proj, "name", crs))[:80]


def _check_crs(crs: CRS | None) -> None:
    """A projected CRS in metres."""
    if crs is None:
        raise CRSError(
            "the input has no CRS: attach it, e.g. ds.odc.assign_crs('EPSG:32633') "
            "(odc-stac and rioxarray set it when loading)"
        )
    if crs.geographic:
        raise CRSError(
            f"the input CRS {_crs_name(crs)} is in degrees; the model needs metres: reproject "
            "to a projected CRS such as the local UTM zone (odc.stac.load(..., crs='utm') or "
            "ds.odc.reproject(...))"
        )
    try:
        unit = metres_per_unit(crs)
    except CRSError:
        unit = None
    if unit is None or not np.isclose(unit, 1.0):
        raise CRSError(
            f"the input CRS {_crs_name(crs)} is not in metres ({crs.units[0]}); the model "
            "needs a 10 m grid in metres: reproject, e.g. ds.odc.reproject('utm', "
            "resolution=10) or odc.stac.load(..., crs='utm', resolution=10)"
        )


def _check_spacing(arr: xr.DataArray, spatial_dims: tuple[Hashable, Hashable]) -> None:
    """Evenly spaced y and x coordinates, at least two of each to give the resolution."""
    for dim in spatial_dims:
        coord = np.asarray(arr[dim].values, dtype="float64")
        if coord.size > 2:
            step = np.diff(coord)
            if not np.allclose(step, step[0], rtol=1e-6, atol=1e-6 * abs(step[0])):
                raise GridError(
                    f"the {dim} coordinate is not evenly spaced: the input must be a regular "
                    "raster (resample with odc-geo or rioxarray first)"
                )
    thin = [str(d) for d in spatial_dims if arr.sizes[d] < 2]
    if thin:
        raise GridError(
            f"the input is one pixel along {' and '.join(thin)}: a grid needs at least 2 x 2 "
            "pixels to know its resolution; take a larger window (the model needs context "
            "anyway)"
        )


def _check_dtype(arr: xr.DataArray) -> None:
    kind = arr.dtype.kind
    if kind not in "uif":
        raise DTypeError(
            f"input dtype {arr.dtype} cannot hold reflectance: use integer DN (e.g. uint16) "
            "or floating point values"
        )
    if arr.dtype.itemsize == 1:
        raise ValueRangeError(
            f"the input is {arr.dtype}: 8-bit values are a display product (e.g. the TCI "
            "true-colour image), not Sentinel-2 DN (reflectance x 10000, uint16 or float). "
            "Load the L2A bands B02, B03, B04 (e.g. odc.stac.load(..., bands=['blue', "
            "'green', 'red']))"
        )


def _scale_message(top: float) -> str:
    return (
        f"the input's largest valid value is {top:g}: that is reflectance in 0..1 (a scaled "
        "load: stackstac rescale, a Planetary Computer or GEE export), not Sentinel-2 DN "
        "(reflectance x 10000) as the model needs. Multiply by 10000 (ds * 10000), or load "
        "without rescaling"
    )


#: Below this no valid Sentinel-2 DN lies: raw DN are >= 1 (0 is nodata) and the
#: processing-baseline 04.00 offset (-1000) is the most any harmonisation subtracts.
DN_MIN = -1000.0
#: Above this no DN lies: the bands are uint16 (reflectance x 10000).
DN_MAX = 65535.0
#: Largest value of a band in percent reflectance (0..100, bright clouds a little above).
PERCENT_MAX = 110.0


def _band_ranges(block: np.ndarray, nodata: Sequence[float | None]) -> list[tuple | None]:
    """(min, max, valid count, any fractional value) of each band of a (..., band, y, x)
    block, over its valid values (finite, not the band's nodata); None for an empty band."""
    out: list[tuple | None] = []
    for b, nd in enumerate(nodata):
        v = np.asarray(block[..., b, :, :], dtype="float64")
        ok = np.isfinite(v) if nd is None else np.isfinite(v) & (v != nd)
        valid = v[ok]
        if valid.size == 0:
            out.append(None)
            continue
        low, high = float(valid.min()), float(valid.max())
        # DN are whole numbers (a median of two is a half): a finer fraction is a scale;
        # only asked of bands small enough to be reflectance or percent
        fractional = high <= PERCENT_MAX and bool(
            np.any(np.abs(valid * 2 - np.round(valid * 2)) > 1e-6)
        )
        out.append((low, high, int(valid.size), fractional))
    return out


def check_scale(
    data: np.ndarray, nodata: Sequence[float | None], names: Sequence[str] | None = None
) -> None:
    """Refuse values that are not Sentinel-2 DN (reflectance x 10000): an undeclared fill,
    values scaled up, reflectance 0..1 or percent, or bands of different scales."""
    ranges = _band_ranges(data, nodata)
    bands = [r for r in ranges if r is not None]
    if not bands:
        return
    _check_dn_bounds(min(r[0] for r in bands), max(r[1] for r in bands))
    _check_one_scale(ranges, names)
    _check_not_reflectance(bands)


def _check_dn_bounds(low: float, high: float) -> None:
    """Values below or above any DN: an undeclared fill, or DN scaled once more."""
    if low < DN_MIN:
        raise ValueRangeError(
            f"the input holds {low:g}, below any Sentinel-2 DN: an undeclared fill value? "
            "Declare it in each band's 'nodata' attribute (e.g. "
            "ds['B04'].attrs['nodata'] = fill, or ds.rio.write_nodata(fill)), or mask it "
            "first (ds.where(ds != fill))"
        )
    if high > DN_MAX:
        raise ValueRangeError(
            f"the input holds {high:g}, above any Sentinel-2 DN (uint16, reflectance x "
            "10000): were the values scaled twice (e.g. DN x 1000)? Give the DN as loaded"
        )


def _check_one_scale(ranges: list[tuple | None], names: Sequence[str] | None) -> None:
    """Some bands in reflectance 0..1, the others in DN."""
    bands = [r for r in ranges if r is not None]
    small = [r[1] <= DN_FLOOR and r[3] for r in bands]
    if any(small) and not all(small):
        labels = list(names) if names is not None else [str(i) for i in range(len(ranges))]
        present = [labels[i] for i, r in enumerate(ranges) if r is not None]
        scaled = [name for name, is_small in zip(present, small, strict=True) if is_small]
        raise ValueRangeError(
            f"band(s) {', '.join(scaled)} of the input hold reflectance 0..1 and the others "
            f"DN: give every band as DN (reflectance x 10000), e.g. ds['{scaled[0]}'] * 10000"
        )


def _check_not_reflectance(bands: list[tuple]) -> None:
    """All bands in reflectance 0..1 or in percent, judged on enough valid pixels (or on
    fractions, which DN never have)."""
    high = max(r[1] for r in bands)
    count = sum(r[2] for r in bands)
    fractional = any(r[3] for r in bands)
    if high <= DN_FLOOR and (count >= DN_MIN_PIXELS or fractional):
        raise ValueRangeError(_scale_message(high))
    if high <= PERCENT_MAX and fractional and count >= DN_MIN_PIXELS:
        raise ValueRangeError(
            f"the input's largest valid value is {high:g}: that is reflectance in percent, "
            "not Sentinel-2 DN (reflectance x 10000). Multiply by 100 (ds * 100)"
        )


def checked_block(block: np.ndarray, nodata: tuple, names: tuple = ()) -> np.ndarray:
    """The block itself, after checking it holds DN (lazy input is checked block by block)."""
    check_scale(block, nodata, names or None)
    return block


def _declared_scale(obj: xr.Dataset | xr.DataArray) -> None:
    """Refuse values xarray decoded with a CF ``scale_factor``: reflectance, not DN.

    A scale left in the attributes (``mask_and_scale=False``) means the values are still DN;
    any other reflectance is caught by the value-range check.
    """
    variables = obj.data_vars.values() if isinstance(obj, xr.Dataset) else [obj]
    for var in variables:
        scale = var.encoding.get("scale_factor")
        if scale is not None and 0 < float(scale) < 0.01:
            raise ValueRangeError(
                f"{var.name} was decoded with scale_factor={float(scale):g}, so it holds "
                "reflectance, not DN: open it with mask_and_scale=False (or multiply by "
                f"{1 / float(scale):g}; any add_offset is then applied already)"
            )
        # mask_and_scale=False keeps the offset of processing baseline 04.00 in the attributes
        scale, offset = var.attrs.get("scale_factor"), var.attrs.get("add_offset")
        if isinstance(scale, int | float) and isinstance(offset, int | float) and offset and scale:
            # reflectance x 10000 = stored x (scale x 10000) + offset x 10000
            factor, shift = scale * 10000, offset * 10000
            fix = f"ds['{var.name}']" + (f" * {factor:g}" if factor != 1 else "")
            raise ValueRangeError(
                f"{var.name} holds DN with an offset (scale_factor={scale:g}, add_offset="
                f"{offset:g}: reflectance = DN x {scale:g} {offset:+g}): give reflectance x "
                f"10000, e.g. {fix} + ({shift:g}) (which drops the attributes)"
            )


def _north_up(arr: xr.DataArray) -> tuple[xr.DataArray, dict]:
    """The input flipped to north-up (y descending, x ascending), and the flips done.

    The network must see the scene as it is, not mirrored; the result is flipped back.
    """
    ydim, xdim = arr.odc.spatial_dims
    flips = {}
    for dim, descending in ((ydim, True), (xdim, False)):
        c = arr[dim].values
        if c.size > 1 and bool(c[1] < c[0]) != descending:
            flips[dim] = slice(None, None, -1)
    return (arr.isel(flips) if flips else arr), flips


def checked_input(
    obj: xr.Dataset | xr.DataArray, bands: Sequence[str]
) -> tuple[xr.DataArray, list[float | None], tuple[Hashable, ...], dict]:
    """The bands of ``obj`` as one DataArray ``(..., band, y, x)``, north-up, checked.

    Returns the DataArray (input dtype and values), each band's declared nodata, the dims
    other than band and space (``()`` or ``("time",)``) and the flips done to make it
    north-up. Values are checked here when in memory; lazy input is checked block by block
    by :func:`checked_block` when computed.
    """
    arr, nodata = _stack_bands(obj, bands)
    _check_dtype(arr)
    _declared_scale(obj)
    _, others = _check_grid(arr)
    arr, flips = _north_up(arr)
    ydim, xdim = arr.odc.spatial_dims
    return arr.transpose(*others, "band", ydim, xdim), nodata, others, flips


def read_bands(
    obj: xr.Dataset | xr.DataArray, bands: Sequence[str]
) -> tuple[xr.DataArray, tuple[Hashable, ...]]:
    """Sentinel-2 bands of ``obj`` in the order asked, checked as :func:`segment` checks its
    input; the input must already be north-up.

    Returns the float32 DataArray ``(..., band, y, x)`` with NaN for missing pixels (NaN or
    the declared nodata), and the dims other than band and space. Lazy input stays lazy.
    """
    if 0 in obj.sizes.values():
        raise EmptyInputError(f"the input has no pixels (sizes {dict(obj.sizes)})")
    arr, nodata, others, flips = checked_input(obj, bands)
    if flips:
        raise GridError(
            "the input is not north-up (y must decrease, x increase): reverse the axis that "
            "runs the other way first, ds.isel(y=slice(None, None, -1)) or "
            "ds.isel(x=slice(None, None, -1))"
        )
    names = tuple(str(b) for b in arr.band.values)
    if arr.chunks is None:
        check_scale(arr.values, nodata, names)
    else:
        arr = arr.chunk({"band": -1})  # the DN-scale check reads all bands of a pixel at once
        arr = arr.copy(
            data=arr.data.map_blocks(checked_block, tuple(nodata), names, dtype=arr.dtype)
        )
    fills = [np.nan if nd is None else nd for nd in nodata]
    fill = xr.DataArray(np.asarray(fills, np.float32), dims="band", coords={"band": arr.band})
    arr = arr.astype(np.float32)
    return arr.where((arr != fill) & np.isfinite(arr)), others

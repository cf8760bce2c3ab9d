"""Lazy maps from an ISA cube: the period each pixel first became ISA, ISA fractions on a
coarser grid. Both work block by block on the cube's dask chunks."""

from __future__ import annotations

import math
import re
from typing import Literal

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from ..errors import FactorError, OptionError
from ..schema import NEVER, NODATA, check_period_order, period_labels
from ._zonal import ANALYSIS_BLOCK, _dask, _isa, aligned_chunks, change_rule_of, share_option


def _first_block(block: np.ndarray, gaps: str) -> np.ndarray:
    isa = block == 1
    valid = block != NODATA
    hit = isa.any(axis=0)
    first = isa.argmax(axis=0)
    out = np.where(hit, first, np.where(valid.any(axis=0), NEVER, NODATA)).astype(np.uint8)
    if gaps == "nodata":
        # a period missing before the first ISA one: it may have become ISA during the gap
        missing_before = np.take_along_axis(np.cumsum(~valid, axis=0), first[None], 0)[0]
        out[hit & (missing_before > 0)] = NODATA
    return out


def first_period(
    cube: xr.DataArray | xr.Dataset, *, gaps: Literal["nodata", "ignore"] = "nodata"
) -> xr.DataArray:
    """Lazy 1 m map of the period in which each pixel was first ISA.

    Parameters
    ----------
    cube : xarray.DataArray or Dataset
        uint8 ``(period, y, x)`` ISA cube (at most 254 periods).
    gaps : {"nodata", "ignore"}
        A pixel first seen as ISA after a period with nodata may have become ISA during
        that gap: ``"nodata"`` (default) marks it 255, ``"ignore"`` reports the period in
        which it was first seen as ISA.

    Returns
    -------
    xarray.DataArray
        uint8 ``(y, x)``: the index of the period (0 = the first; ISA from the start),
        254 never ISA (valid at least once), 255 nodata. ``attrs["periods"]`` lists the
        labels; ``flag_values``/``flag_meanings`` say the same for CF readers;
        ``attrs["change_rule"]`` says whether the periods were made consistent
        (:func:`consistent`) or each mapped alone.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> from xjointseg.change import first_period
    >>> grid = GeoBox.from_bbox((0, 0, 3, 1), "EPSG:32633", resolution=1)
    >>> cube = xr_zeros(grid, "uint8", time=["2017-01-01", "2019-01-01"])
    >>> cube[:, 0, 0] = [1, 1]; cube[:, 0, 1] = [0, 1]; cube[:, 0, 2] = [255, 0]
    >>> first_period(cube).values.tolist()
    [[0, 1, 254]]
    """
    cube = _isa(cube)
    if gaps not in ("nodata", "ignore"):
        raise OptionError(f"gaps must be 'nodata' or 'ignore', not {gaps!r}")
    nt = cube.shape[0]
    if nt > NEVER:
        raise OptionError(f"first_period codes at most {NEVER} periods; the cube has {nt}")
    check_period_order(cube, "first_period")
    data = _dask(cube)
    # dask types the method Array.map_blocks as the function map_blocks (func as an Array)
    out = data.map_blocks(
        _first_block,  # type: ignore[arg-type]
        gaps,
        drop_axis=0,
        dtype=np.uint8,
        meta=np.empty((0, 0), np.uint8),
    )
    labels = [str(v)[:10] if isinstance(v, pd.Timestamp) else str(v) for v in period_labels(cube)]
    ydim, xdim = cube.dims[1:]
    coords = {k: v for k, v in cube.coords.items() if cube.dims[0] not in v.dims}
    attrs = {
        "long_name": "period in which the pixel was first impervious",
        "periods": labels,
        "flag_values": [*range(nt), NEVER],
        "flag_meanings": " ".join([*(re.sub(r"\s+", "_", lb) for lb in labels), "never"]),
        "nodata": NODATA,
        "gaps": gaps,
        "change_rule": change_rule_of(cube),
    }
    res = xr.DataArray(out, dims=(ydim, xdim), coords=coords, attrs=attrs, name="first_period")
    return res.odc.assign_crs(cube.odc.crs)


def _share_block(block: np.ndarray, factor: int, least: int) -> np.ndarray:
    *lead, h, w = block.shape
    r = block.reshape(*lead, h // factor, factor, w // factor, factor)
    cell = (-3, -1)
    if block.dtype.kind == "f":  # a probability map: the mean of its finite values
        ok = np.isfinite(r)
        isa = np.where(ok, r, 0).astype(np.float32).sum(axis=cell, dtype=np.float32)
        valid = ok.astype(np.float32).sum(axis=cell, dtype=np.float32)
    else:
        # small integer sums: much faster than numpy's default int64 reduction of booleans
        acc = np.uint16 if factor * factor < 2**16 else np.int64
        isa = (r == 1).view(np.uint8).sum(axis=cell, dtype=acc)
        valid = (r != NODATA).view(np.uint8).sum(axis=cell, dtype=acc)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (isa / valid).astype(np.float32)
    share[valid < least] = np.nan
    return share


def coarse_share(data: da.Array, factor: int, least: int = 1) -> da.Array:
    """The ISA share of each ``factor`` x ``factor`` cell of the last two axes, lazily.

    ``data`` is a uint8 map (1 ISA, 255 nodata) or a probability map (its mean over finite
    values); whole cells only. float32, NaN where fewer than ``least`` pixels are valid.
    """
    ny, nx = data.ndim - 2, data.ndim - 1
    data = data.rechunk(
        {ny: aligned_chunks(data.chunks[ny], factor), nx: aligned_chunks(data.chunks[nx], factor)}
    )
    return da.map_blocks(
        _share_block,
        data,
        factor,
        least,
        chunks=(*data.chunks[:ny], *(tuple(c // factor for c in cs) for cs in data.chunks[ny:])),
        dtype=np.float32,
        meta=np.empty((0,) * data.ndim, np.float32),
    )


def fraction(
    cube: xr.DataArray | xr.Dataset, factor: int = 10, *, min_valid: float = 0.0
) -> xr.DataArray:
    """ISA fraction on a grid ``factor`` times coarser (e.g. 10 m from 1 m), lazily.

    Parameters
    ----------
    cube : xarray.DataArray or Dataset
        uint8 ``(period, y, x)`` ISA cube.
    factor : int
        Fine pixels per coarse pixel side; must divide the grid's height and width.
    min_valid : float
        Coarse pixels with a smaller share of valid fine pixels are NaN (default: NaN only
        where no fine pixel is valid).

    Returns
    -------
    xarray.DataArray
        float32 ``(period, y, x)`` in [0, 1] (ISA pixels / valid pixels), on the coarse grid
        (same CRS and bounds), NaN where too few pixels are valid. Compare it with a 10 m
        product such as WorldCover via :func:`read_worldcover` and
        :func:`xjointseg.metrics.scores`.

    Raises
    ------
    FactorError
        ``factor`` is not a positive integer dividing the grid.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> from xjointseg.change import fraction
    >>> grid = GeoBox.from_bbox((0, 0, 2, 2), "EPSG:32633", resolution=1)
    >>> cube = xr_zeros(grid, "uint8", time=["2017-01-01"])
    >>> cube[0, 0, :] = 1
    >>> fraction(cube, 2).values.tolist()
    [[[0.5]]]
    """
    cube = _isa(cube)
    if isinstance(factor, bool) or not isinstance(factor, int | np.integer) or factor < 1:
        raise FactorError(f"factor must be a positive integer, not {factor!r}")
    factor = int(factor)
    gbox = cube.odc.geobox
    ny, nx = gbox.shape
    if ny % factor or nx % factor:
        raise FactorError(
            f"factor {factor} does not divide the grid ({ny} x {nx} px): pick a divisor of "
            f"both, or crop the cube, e.g. cube.isel(y=slice(0, {ny - ny % factor}), "
            f"x=slice(0, {nx - nx % factor}))"
        )
    data = cube.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(1, ANALYSIS_BLOCK, ANALYSIS_BLOCK))
    least = max(1, math.ceil(share_option("min_valid", min_valid) * factor * factor))
    out = coarse_share(data, factor, least)
    from odc.geo.xr import xr_coords

    coarse = gbox.zoom_out(factor)
    grid = xr_coords(coarse, crs_coord_name="spatial_ref")
    pdim, ydim, xdim = cube.dims
    coords = {
        pdim: cube[pdim],
        ydim: grid[coarse.dimensions[0]].values,
        xdim: grid[coarse.dimensions[1]].values,
    }
    attrs = {
        "long_name": "impervious surface fraction",
        "units": "1",
        "factor": factor,
        "resolution": float(abs(coarse.resolution.x)),
    }
    res = xr.DataArray(out, dims=cube.dims, coords=coords, attrs=attrs, name="isa_fraction")
    return res.odc.assign_crs(gbox.crs)

"""Periods that agree with each other: an optional temporal rule over a cube's periods.

Each period of a cube is mapped alone, so a stack of them flickers: a pixel is ISA in 2019,
not in 2021, ISA again in 2023, and every flicker is a false loss or gain in a growth table.
Impervious land rarely reverts, the assumption behind the temporal consistency checks of the
global multi-year ISA products (GAIA: Gong et al. 2020, "Annual maps of global artificial
impervious area (GAIA) between 1985 and 2018", Remote Sensing of Environment 236:111510;
GISA: Huang et al. 2021, Earth System Science Data 13:5679).

:func:`consistent` makes that assumption explicit, and only where it is asked for: it returns
a new lazy cube and never rewrites the stored periods.

**The rule.** The 1 m placement inside a 10 m input pixel is the least certain part of a map
(two dates place the same share differently), so the rule works on each ``cell`` x ``cell``
block (default 10: one Sentinel-2 pixel): its ISA count over the periods is replaced by the
closest non-decreasing series, the weighted isotonic regression of the cell's ISA share
(weights: the cell's valid pixels in each period; Barlow, Bartholomew, Bremner & Brunk 1972,
*Statistical Inference under Order Restrictions*, Wiley). A share that dips and comes back is
lifted, a blip that goes away is pooled with its neighbours, a steady rise is kept as it is.
Inside the cell the pixels that are ISA in each period are those ISA most often in the
original periods (then: first ISA earliest, then row-major order), so every 1 m pixel that
becomes ISA stays ISA. A pixel that was nodata stays nodata (255): nothing is invented where
the period had no observation. ``cell=1`` applies the same rule to each 1 m pixel alone.

**The rule with evidence** (``images=``): the isotonic rule removes losses that flicker, but
it keeps every gain, and a gain between two maps made alone is mostly the later map's error.
With the images the periods were mapped from, a period may differ from the one before only
in the 10 m pixels where :func:`~xjointseg.new_isa` finds new ISA in the images themselves:
there the later map stands; elsewhere each 1 m pixel keeps its state of the period before
(ISA or not). Where either period has no observation (new_isa's nodata, or the pixel is
nodata in one of the two maps) the later map stands as it is. So the first period holds its
map, and every later change of the cube is a change the images show; losses are only kept
where new_isa saw a change too (new_isa looks for new ISA, not for demolition).
"""

from __future__ import annotations

import hashlib
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from ..errors import ChangeInputError, FactorError, OptionError
from ..schema import FINGERPRINT_COORD, ISA, NODATA, NOT_ISA, check_period_order
from ._zonal import _dask, _isa, aligned_chunks
from .evidence import ChangeRule, new_isa_between

__all__ = ["consistent", "isotonic_increasing"]


def isotonic_increasing(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares non-decreasing fit along the first axis, for many series at once.

    The max-min formula ``fit[t] = max over i <= t of min over j >= t of mean(values[i..j])``
    (weighted means; Barlow et al. 1972), with ``O(T^3)`` work per series: a cube has few
    periods. Points of weight 0 do not pull the fit (their fitted value is that of their
    neighbours).

    Examples
    --------
    >>> import numpy as np
    >>> isotonic_increasing(np.array([0.25, 0.0, 0.5]), np.array([1, 1, 1])).tolist()
    [0.125, 0.125, 0.5]
    >>> isotonic_increasing(np.array([0.2, 0.9, 0.0]), np.array([1, 0, 1])).tolist()
    [0.1, 0.1, 0.1]
    """
    v = np.asarray(values, np.float64) * weights
    w = np.asarray(weights, np.float64)
    nt = v.shape[0]
    cv = np.concatenate([np.zeros_like(v[:1]), np.cumsum(v, axis=0)])
    cw = np.concatenate([np.zeros_like(w[:1]), np.cumsum(w, axis=0)])
    fit = np.empty_like(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        for t in range(nt):
            best = np.full(v.shape[1:], -np.inf)
            for i in range(t + 1):
                low = np.full(v.shape[1:], np.inf)
                for j in range(t, nt):
                    ww = cw[j + 1] - cw[i]
                    mean = np.where(ww > 0, (cv[j + 1] - cv[i]) / ww, np.inf)
                    low = np.minimum(low, mean)
                best = np.maximum(best, np.where(np.isfinite(low), low, -np.inf))
            fit[t] = best
    # a series with no weight at all has no fit; weightless points on an edge take their
    # neighbour's value through the formula, and a series all of weight 0 stays 0
    return np.where(np.isfinite(fit), fit, 0.0)


def _consistent_block(block: np.ndarray, cell: int) -> np.ndarray:
    nt, h, w = block.shape
    s = cell
    cells = block.reshape(nt, h // s, s, w // s, s).transpose(0, 1, 3, 2, 4).reshape(nt, -1, s * s)
    isa, valid = cells == ISA, cells != NODATA
    count = isa.sum(-1)
    nvalid = valid.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(nvalid > 0, count / np.maximum(nvalid, 1), 0.0)
    fit = isotonic_increasing(share, nvalid)
    # ISA pixels per cell and period; a fit of exactly half a pixel counts as ISA (a series
    # 1, 0, 1 of one pixel becomes 1, 1, 1: the assumption that ISA does not revert)
    target = np.floor(fit * nvalid + 0.5).astype(np.int64)
    # one ranking of the cell's pixels for every period: most often ISA first, then the
    # earliest first ISA, then row-major (a stable sort)
    first = np.where(isa.any(0), isa.argmax(0), nt)
    score = isa.sum(0) * (nt + 1) + (nt - first)
    order = np.argsort(-score, axis=-1, kind="stable")
    out = np.full(cells.shape, NODATA, np.uint8)
    for t in range(nt):
        ok = np.take_along_axis(valid[t], order, -1)
        position = np.cumsum(ok, -1)  # 1-based rank among the pixels valid in this period
        chosen = ok & (position <= target[t][:, None])
        ranked = np.where(ok, np.where(chosen, ISA, NOT_ISA), NODATA).astype(np.uint8)
        np.put_along_axis(out[t], order, ranked, -1)
    return out.reshape(nt, h // s, w // s, s, s).transpose(0, 1, 3, 2, 4).reshape(block.shape)


def consistent(
    cube: xr.DataArray | xr.Dataset,
    *,
    cell: int = 10,
    images: Any = None,
    rule: ChangeRule | None = None,
) -> xr.DataArray:
    """A new lazy cube whose periods agree: ISA that appears does not disappear, and, with
    ``images``, changes only where the images show new ISA.

    See the module docstring for the two rules. The stored cube is never changed: write the
    result elsewhere (``to_zarr``) or analyse it directly (``area``, ``growth``,
    ``first_period``).

    Parameters
    ----------
    cube : xarray.DataArray or Dataset
        uint8 ``(period, y, x)`` ISA cube, periods in time order.
    cell : int
        The isotonic rule's blocks, in map pixels: 10 (default) is one Sentinel-2 pixel of a
        1 m map, 1 applies the rule to each pixel alone. Must divide the grid. The rule with
        evidence works on new_isa's 10 m pixels (``cell`` stays 10).
    images : Dataset or DataArray with the cube's periods, or a sequence of one per period
        The Sentinel-2 inputs the periods were mapped from (``load_sentinel2``'s composites,
        with B08, and B11 for the MNDWI test): a period changes only where
        :func:`~xjointseg.new_isa` between it and the period before finds new ISA. None
        (default): the isotonic rule alone.
    rule : ChangeRule, optional
        new_isa's rule, as in :func:`~xjointseg.new_isa` (None: chosen by the bands).

    Returns
    -------
    xarray.DataArray
        uint8 ``(period, y, x)`` on the same grid and periods: ``0``, ``1``, ``255`` where the
        input was nodata. ``attrs["temporal_rule"]`` names the rule (growth tables and
        first_period say it); the ``isa_fingerprint`` of each period (where the cube has
        one) becomes one of the rule and all periods.

    Raises
    ------
    FactorError
        ``cell`` is not a positive integer dividing the grid.
    ChangeInputError
        ``images`` without one image per period; what :func:`~xjointseg.new_isa` refuses.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> grid = GeoBox.from_bbox((0, 0, 2, 1), "EPSG:32633", resolution=1)
    >>> cube = xr_zeros(grid, "uint8", time=["2017", "2019", "2021", "2023"])
    >>> cube[:, 0, 0] = [1, 0, 1, 1]  # a missed detection in 2019
    >>> cube[:, 0, 1] = [0, 1, 0, 0]  # a false one
    >>> consistent(cube, cell=1).values[:, 0].tolist()
    [[1, 0], [1, 0], [1, 0], [1, 0]]
    """
    cube = _isa(cube)
    check_period_order(cube, "consistent")
    if isinstance(cell, bool) or not isinstance(cell, int | np.integer) or cell < 1:
        raise FactorError(f"cell must be a positive integer, not {cell!r}")
    cell = int(cell)
    if images is not None:
        if cell != 10:
            raise OptionError(
                f"cell={cell} is the isotonic rule's: the rule with images works on new_isa's "
                "10 m pixels; leave cell at 10"
            )
        data, rule_text = _tied_to_evidence(cube, images, rule)
    elif rule is not None:
        raise OptionError("rule is new_isa's rule, for the rule with images: pass images= too")
    else:
        data, rule_text = _isotonic(cube, cell)
    res = cube.copy(data=data).rename(cube.name or "isa")
    res.attrs = {**cube.attrs, "temporal_rule": rule_text}
    if FINGERPRINT_COORD in res.coords and res[FINGERPRINT_COORD].ndim == 1:
        fps = [str(v) for v in res[FINGERPRINT_COORD].values]
        joined = hashlib.sha256("\n".join([rule_text, *fps]).encode()).hexdigest()
        res = res.assign_coords(
            {FINGERPRINT_COORD: (cube.dims[0], [f"temporal:{joined}:{t}" for t in range(len(fps))])}
        )
    return res


def _isotonic(cube: xr.DataArray, cell: int) -> tuple[da.Array, str]:
    ny, nx = cube.shape[1:]
    if ny % cell or nx % cell:
        raise FactorError(
            f"cell {cell} does not divide the grid ({ny} x {nx} px): pick a divisor of both "
            "(10 for a 1 m map of segment), or cell=1"
        )
    data = _dask(cube)
    data = data.rechunk(
        {1: aligned_chunks(data.chunks[1], cell), 2: aligned_chunks(data.chunks[2], cell)}
    )
    out = data.map_blocks(_consistent_block, cell, dtype=np.uint8)
    return out, f"isotonic (non-decreasing) ISA count per {cell} x {cell} px cell"


def _period_images(images: Any, cube: xr.DataArray, t: int) -> Any:
    """What new_isa_between takes for the pair (period t - 1, period t)."""
    if isinstance(images, xr.Dataset | xr.DataArray):
        return images  # selected there by the periods' labels
    if isinstance(images, str | bytes) or not hasattr(images, "__len__"):
        raise ChangeInputError(
            "images must hold the cube's periods (load_sentinel2's composites), or be a "
            f"sequence of one image per period, not {type(images).__name__}"
        )
    if len(images) != cube.shape[0]:
        raise ChangeInputError(
            f"images has {len(images)} entries for a cube of {cube.shape[0]} periods: give one "
            "image per period, in the cube's order"
        )
    return (images[t - 1], images[t])


def _tied_to_evidence(
    cube: xr.DataArray, images: Any, rule: ChangeRule | None
) -> tuple[da.Array, str]:
    labels = cube[cube.dims[0]].values
    data = _dask(cube)
    data = data.rechunk(
        {1: aligned_chunks(data.chunks[1], 10), 2: aligned_chunks(data.chunks[2], 10)}
    )
    out, rules = [data[0]], []
    for t in range(1, cube.shape[0]):
        new = new_isa_between(
            cube,
            before=labels[t - 1],
            after=labels[t],
            images=_period_images(images, cube, t),
            rule=rule,
        )
        rules.append(new.attrs["change_rule"])
        coarse = new.data.rechunk(tuple(tuple(c // 10 for c in cs) for cs in data.chunks[1:]))
        seen = da.repeat(da.repeat(coarse, 10, axis=0), 10, axis=1)
        before, now = out[-1], data[t]
        # the later map stands where new ISA was seen or nothing can be said; elsewhere the
        # state of the period before carries over
        stands = (seen != NOT_ISA) | (before == NODATA) | (now == NODATA)
        out.append(da.where(stands, now, before).astype(np.uint8))
    text = "evidence: a period differs from the one before only where new_isa finds new ISA"
    if rules:
        names = sorted(set(rules))
        text += " (rule " + "; ".join(names) + ")"
    return da.stack(out).rechunk({0: -1}), text

"""Scores of a binary ISA map against reference labels, on numpy or dask arrays.

Only four counts (the binary confusion matrix) are computed, block by block for dask input,
so maps of any size are scored without being held in memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from .errors import CubeInputError, MetricInputError

__all__ = [
    "MIXED_SHARES",
    "ROAD_COVER",
    "ROAD_MAX_OTHER",
    "confusion",
    "placement_counts",
    "road_counts",
    "road_scores",
    "road_scores_from_counts",
    "roc_auc",
    "scores",
    "scores_from_counts",
    "smooth_placement",
    "within_pixel_auc",
]


def _array(x: Any, what: str = "the map"):
    """``x`` as a numeric numpy or dask array (DataArray, dask, numpy or nested lists)."""
    if isinstance(x, xr.Dataset):
        raise MetricInputError(
            f"{what} must be an array, not a Dataset: pass one of its variables, e.g. ds['isa']"
        )
    if isinstance(x, xr.DataArray):
        x = x.data
    if not isinstance(x, da.Array):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError) as err:  # ragged lists, objects numpy cannot hold
            raise MetricInputError(f"{what} is not an array of numbers: {err}") from None
    if x.dtype.kind not in "biuf":
        raise MetricInputError(f"{what} must hold numbers, not {x.dtype} ({type(x).__name__})")
    return x


def _map(x: Any, what: str) -> np.ndarray:
    """A 2-D (or stacked 2-D) numeric map in memory."""
    a = np.asarray(_array(x, what))
    if a.ndim < 2:
        raise MetricInputError(f"{what} must be a map (y, x), got shape {a.shape}")
    return a


def _counts(c: Any, keys: Sequence[str], maker: str) -> dict[str, float]:
    """Pooled counts: a mapping with ``keys``, as ``maker`` returns them."""
    if not isinstance(c, Mapping) or any(k not in c for k in keys):
        raise MetricInputError(
            f"counts must be the mapping {maker} returns (keys {', '.join(keys)}; summed over "
            f"scenes), not {c!r:.80}"
        )
    try:
        return {k: float(c[k]) for k in keys}
    except (TypeError, ValueError):
        raise MetricInputError(f"counts must be numbers, got {c!r:.80}") from None


def _ignored(ignore: Any, *maps: Any) -> list[float]:
    """The values to leave out: ``ignore`` (numbers), or by default the ``nodata`` that the
    maps' attributes declare (segment's 255)."""
    if ignore is None:
        declared: list[Any] = [m.attrs.get("nodata") for m in maps if isinstance(m, xr.DataArray)]
        return sorted({float(v) for v in declared if _is_number(v)})
    values = list(np.atleast_1d(np.asarray(ignore, dtype=object)))
    if not all(_is_number(v) for v in values):
        raise MetricInputError(
            f"ignore must be a number or a sequence of numbers (e.g. 255), not {ignore!r}"
        )
    return [float(v) for v in values]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float | np.integer | np.floating) and not isinstance(
        v, bool | np.bool_
    )


def _excluded(x, ignore: Sequence[float]):
    bad = x != x  # NaN marks nodata in float maps (always False for integers)
    for value in ignore:
        bad = bad | (x == value)
    return bad


def _check_same_grid(pred: Any, reference: Any) -> None:
    """Two georeferenced maps must lie on one grid: equal shapes alone may be 1 km apart."""
    if not (isinstance(pred, xr.DataArray) and isinstance(reference, xr.DataArray)):
        return
    import odc.geo.xr  # noqa: F401  (the .odc accessor)

    a, b = pred.odc.geobox, reference.odc.geobox
    if a is None or b is None or a.crs is None or b.crs is None:
        return
    if a.shape != b.shape:
        return  # the shape check below says so
    tol = 1e-6 * abs(a.affine.a)
    same = a.crs == b.crs and np.allclose(tuple(a.affine)[:6], tuple(b.affine)[:6], atol=tol)
    if not same:

        def where(g) -> str:
            crs = f"EPSG:{g.crs.epsg}" if g.crs.epsg else "a custom CRS"
            return f"origin ({g.affine.c:g}, {g.affine.f:g}), {g.affine.a:g} m pixels, {crs}"

        raise CubeInputError(
            f"pred and reference are on different grids ({where(a)} vs {where(b)}): put "
            "them on one grid first (e.g. read_worldcover(path, like=pred), or "
            "reference.odc.reproject(pred.odc.geobox))"
        )


def confusion(pred: Any, reference: Any, ignore: Any = None) -> dict[str, int]:
    """Counts ``tp, fp, fn, tn`` of a binary map (nonzero = ISA) against a reference.

    Pixels where either array is NaN or one of the ``ignore`` values are left out (by
    default the ``nodata`` a DataArray's attributes declare: segment's 255).

    Examples
    --------
    >>> confusion([1, 1, 0, 255], [1, 0, 0, 1], ignore=255)
    {'tp': 1, 'fp': 1, 'fn': 0, 'tn': 1}
    """
    _check_same_grid(pred, reference)
    p, r = _array(pred, "pred"), _array(reference, "reference")
    if p.shape != r.shape:
        raise CubeInputError(
            f"pred and reference must have the same shape, got {p.shape} and {r.shape}: put "
            "them on one grid first (e.g. read_worldcover(path, like=pred))"
        )
    ignore = _ignored(ignore, pred, reference)
    lazy = isinstance(p, da.Array) or isinstance(r, da.Array)
    if lazy:
        chunks = p.chunks if isinstance(p, da.Array) else r.chunks
        p = p if isinstance(p, da.Array) else da.from_array(p, chunks=chunks)
        r = r if isinstance(r, da.Array) else da.from_array(r, chunks=chunks)
    keep = ~(_excluded(p, ignore) | _excluded(r, ignore))
    pos_p, pos_r = p != 0, r != 0
    counts = {
        "tp": (pos_p & pos_r & keep).sum(),
        "fp": (pos_p & ~pos_r & keep).sum(),
        "fn": (~pos_p & pos_r & keep).sum(),
        "tn": (~pos_p & ~pos_r & keep).sum(),
    }
    if lazy:
        (counts,) = dask.compute(counts)  # one pass over the blocks for all four counts
    return {k: int(v) for k, v in counts.items()}


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def scores(pred: Any, reference: Any, ignore: Any = None) -> dict[str, float]:
    """Precision, recall, F1, IoU, overall accuracy and macro F1 of a binary ISA map.

    Parameters
    ----------
    pred : array-like, dask array or xarray.DataArray
        The map to score; nonzero = ISA (1), 0 = not ISA.
    reference : array-like, dask array or xarray.DataArray
        Reference labels on the same grid; nonzero = ISA.
    ignore : number or sequence of numbers, optional
        Values that mark pixels to leave out in either array (e.g. 255 nodata); NaN always
        is. None (default): the ``nodata`` that DataArrays declare in their attributes
        (segment's maps: 255); pass ``ignore=[]`` to count every value.

    Returns
    -------
    dict
        ``precision, recall, f1, iou`` (of the ISA class), ``oa`` (overall accuracy),
        ``macro_f1`` (mean F1 of ISA and not ISA, as JointSeg reports), and the counts
        ``tp, fp, fn, tn``. NaN where a ratio is undefined.

    Examples
    --------
    >>> s = scores([1, 1, 0, 0], [1, 0, 0, 0])
    >>> s["precision"], s["recall"], s["oa"]
    (0.5, 1.0, 0.75)
    """
    return scores_from_counts(confusion(pred, reference, ignore))


def scores_from_counts(counts: dict[str, int]) -> dict[str, float]:
    """:func:`scores` from the four counts of :func:`confusion` (e.g. summed over scenes).

    Examples
    --------
    >>> scores_from_counts({"tp": 1, "fp": 1, "fn": 1, "tn": 1})["f1"]
    0.5
    """
    c = _counts(counts, ("tp", "fp", "fn", "tn"), "confusion()")
    tp, fp, fn, tn = (c[k] for k in ("tp", "fp", "fn", "tn"))
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    f1_neg = _ratio(2 * tn, 2 * tn + fp + fn)
    return {
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": f1,
        "iou": _ratio(tp, tp + fp + fn),
        "oa": _ratio(tp + tn, tp + fp + fn + tn),
        "macro_f1": (f1 + f1_neg) / 2,
        **c,
    }


def roc_auc(score: Any, reference: Any) -> float:
    """Area under the ROC curve: the chance that a random positive pixel of ``reference``
    scores higher than a random negative one (ties count one half).

    ``score`` is any number per pixel (e.g. an ISA fraction), ``reference`` 1 for positive,
    0 for negative; other values and NaN scores are left out. NaN if a class is absent.

    Examples
    --------
    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    """
    s = np.asarray(_array(score, "score"), np.float64).ravel()
    r = np.asarray(_array(reference, "reference")).ravel()
    if s.shape != r.shape:
        raise MetricInputError(
            f"score and reference must have one value per pixel each, got {s.size} and {r.size}"
        )
    keep = ((r == 0) | (r == 1)) & ~np.isnan(s)
    s, r = s[keep], r[keep] == 1
    n_pos, n_neg = int(r.sum()), int((~r).sum())
    if not n_pos or not n_neg:
        return float("nan")
    # Mann-Whitney U from mid-ranks (tied scores share the mean of their ranks)
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mid_rank = ends - (counts - 1) / 2.0
    rank_sum = mid_rank[inverse][r].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


#: Label ISA shares of the 10 m pixels that :func:`within_pixel_auc` scores: mixed pixels,
#: where there is something to place.
MIXED_SHARES = (0.2, 0.8)


def _scale(scale: Any) -> int:
    if isinstance(scale, bool | np.bool_) or not isinstance(scale, int | np.integer) or scale < 1:
        raise MetricInputError(
            f"scale must be a positive integer (fine pixels per coarse pixel side, 10 for a "
            f"1 m map of 10 m input), not {scale!r}"
        )
    return int(scale)


def _fraction(name: str, value: Any) -> float:
    if not _is_number(value) or not 0 <= value <= 1:
        raise MetricInputError(f"{name} must be a number in 0..1, not {value!r}")
    return float(value)


def _pair_of_maps(a: Any, b: Any, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Two (H, W) maps of one shape, in memory."""
    x, y = _map(a, names[0]), _map(b, names[1])
    for m, name in ((x, names[0]), (y, names[1])):
        if m.ndim != 2:
            raise MetricInputError(
                f"{name} must be one map (y, x), got shape {m.shape}: score each map alone "
                "and pool the counts"
            )
    if x.shape != y.shape:
        raise MetricInputError(
            f"{names[0]} and {names[1]} must have the same shape, got {x.shape} and "
            f"{y.shape}: put them on one grid first"
        )
    return x, y


def _cells(a: np.ndarray, scale: int) -> np.ndarray:
    """(H, W) -> (H/scale * W/scale, scale * scale): the pixels of each ``scale`` cell."""
    h, w = a.shape[-2:]
    if h % scale or w % scale:
        raise CubeInputError(f"a {h} x {w} map does not hold whole {scale} x {scale} cells")
    return a.reshape(h // scale, scale, w // scale, scale).swapaxes(1, 2).reshape(-1, scale**2)


def placement_counts(
    score: Any, label: Any, scale: int = 10, shares: tuple[float, float] = MIXED_SHARES
) -> dict[str, float]:
    """The pair counts behind :func:`within_pixel_auc` (to sum over scenes): ``wins`` (ISA
    pixel above a non-ISA pixel of its cell; ties one half), ``pairs`` and ``cells``."""
    scale = _scale(scale)
    if not isinstance(shares, tuple | list) or len(shares) != 2:
        raise MetricInputError(f"shares must be a pair (low, high) of label shares, not {shares!r}")
    lo, hi = (_fraction("shares", v) for v in shares)
    score, label = _pair_of_maps(score, label, ("score", "label"))
    s = _cells(score.astype(np.float32), scale)
    y = _cells(label, scale)
    clean = ((y == 0) | (y == 1)).all(axis=1) & ~np.isnan(s).any(axis=1)
    share = (y == 1).mean(axis=1)
    keep = clean & (share >= lo) & (share <= hi)
    s, pos = s[keep], y[keep] == 1
    wins = pairs = 0.0
    for i in range(0, len(s), 512):  # (cells, 100, 100) comparisons, a block at a time
        a, p = s[i : i + 512], pos[i : i + 512]
        weight = p[:, :, None] & ~p[:, None, :]  # (ISA pixel, non-ISA pixel) of one cell
        diff = a[:, :, None] - a[:, None, :]
        wins += float(((diff > 0) + 0.5 * (diff == 0))[weight].sum())
        pairs += float(weight.sum())
    return {"wins": wins, "pairs": pairs, "cells": float(keep.sum())}


def within_pixel_auc(
    score: Any, label: Any, scale: int = 10, shares: tuple[float, float] = MIXED_SHARES
) -> float:
    """Placement skill of a fine map inside the coarse input pixels: over every mixed
    ``scale`` x ``scale`` cell (label ISA share within ``shares``, all labels 0 or 1), the
    chance that an ISA pixel of a cell scores above a non-ISA pixel of the *same* cell
    (ties one half), pooled over the pairs of all cells. 0.5: the map says nothing about
    where, inside a 10 m pixel, the ISA lies. NaN without a mixed cell.

    ``score`` and ``label`` are (H, W) on one grid, H and W multiples of ``scale``; labels
    other than 0 and 1 (weak, ignored) leave their cell out.

    Examples
    --------
    >>> label = np.array([[1, 0], [1, 0]])
    >>> within_pixel_auc([[0.9, 0.2], [0.6, 0.7]], label, scale=2)
    0.75
    """
    c = placement_counts(score, label, scale, shares)
    return c["wins"] / c["pairs"] if c["pairs"] else float("nan")


def smooth_placement(prob: Any, scale: int = 10) -> np.ndarray:
    """The placement a 10 m field alone makes: each ``scale`` cell's mean probability,
    up-sampled bilinearly back to the fine grid (the baseline of :func:`within_pixel_auc`)."""
    import torch
    import torch.nn.functional as F

    scale = _scale(scale)
    p = _map(prob, "prob").astype(np.float32)
    if p.ndim != 2:
        raise MetricInputError(f"prob must be one map (y, x), got shape {p.shape}")
    h, w = p.shape[-2:]
    mean = _cells(p, scale).mean(axis=1).reshape(h // scale, w // scale)
    up = F.interpolate(
        torch.from_numpy(mean)[None, None], scale_factor=scale, mode="bilinear", align_corners=False
    )
    return up[0, 0].numpy()


#: Road cover of the 10 m pixels that :func:`road_scores` calls road pixels, and the most
#: other ISA (buildings) they may hold: a stretch of road, not a street between houses.
ROAD_COVER, ROAD_MAX_OTHER = 0.3, 0.05


def road_counts(
    mask: Any,
    road: Any,
    other: Any = None,
    *,
    scale: int = 10,
    min_cover: float = ROAD_COVER,
    max_other: float = ROAD_MAX_OTHER,
) -> dict[str, float]:
    """The sums behind :func:`road_scores` (to pool over scenes): ``road_px``, ``road_hit``
    (1 m road pixels and those the mask calls ISA), ``cells`` (road 10 m pixels),
    ``share`` and ``cover`` (the sums over them of the mask's ISA share and of the road
    cover)."""
    scale = _scale(scale)
    min_cover, max_other = _fraction("min_cover", min_cover), _fraction("max_other", max_other)
    mask, road = _pair_of_maps(mask, road, ("mask", "road"))
    if mask.dtype.kind == "f" or not np.isin(mask, (0, 1, 255)).all():
        raise MetricInputError(
            "mask must be the 0/1/255 ISA mask of segment() (uint8), not a probability map "
            f"({mask.dtype}): threshold it first or pass segment's mask"
        )
    m = _cells(mask, scale)
    r = _cells(road.astype(bool), scale)
    valid = (m != 255).all(axis=1)
    cover = r.mean(axis=1)
    road_cell = valid & (cover >= min_cover)
    if other is not None:  # away from buildings: a road, not a street between houses
        other = _pair_of_maps(mask, other, ("mask", "other"))[1]
        road_cell &= _cells(other.astype(bool), scale).mean(axis=1) <= max_other
    share = (m == 1).mean(axis=1)
    return {
        "road_px": float((r & (m != 255)).sum()),
        "road_hit": float((r & (m == 1)).sum()),
        "cells": float(road_cell.sum()),
        "share": float(share[road_cell].sum()),
        "cover": float(cover[road_cell].sum()),
    }


def road_scores(
    mask: Any,
    road: Any,
    other: Any = None,
    *,
    scale: int = 10,
    min_cover: float = ROAD_COVER,
    max_other: float = ROAD_MAX_OTHER,
) -> dict[str, float]:
    """How a 1 m ISA mask (0, 1, 255 nodata) sees the roads of a reference.

    ``recall_1m``: the share of road pixels called ISA. On the 10 m pixels at least
    ``min_cover`` (0.3) road and, where ``other`` (the reference's other ISA, e.g.
    buildings) is given, at most ``max_other`` (0.05) of it: ``cells``, the mask's mean
    ISA share there (``share``) and the roads' mean cover (``cover``): a map that counts
    roads at their real area has ``share`` near ``cover``. ``scale``: fine pixels per 10 m
    pixel side. Sum :func:`road_counts` to pool scenes.

    Examples
    --------
    >>> mask = np.zeros((10, 20), np.uint8); mask[:4, :] = 1
    >>> road = np.zeros((10, 20), bool); road[:5, :] = True
    >>> s = road_scores(mask, road)
    >>> s["recall_1m"], s["cells"], s["share"], s["cover"]
    (0.8, 2.0, 0.4, 0.5)
    """
    counts = road_counts(mask, road, other, scale=scale, min_cover=min_cover, max_other=max_other)
    return road_scores_from_counts(counts)


def road_scores_from_counts(c: dict[str, float]) -> dict[str, float]:
    """:func:`road_scores` from pooled :func:`road_counts`."""
    c = _counts(c, ("road_px", "road_hit", "cells", "share", "cover"), "road_counts()")
    return {
        "recall_1m": _ratio(c["road_hit"], c["road_px"]),
        "cells": c["cells"],
        "share": c["share"] / c["cells"] if c["cells"] else float("nan"),
        "cover": c["cover"] / c["cells"] if c["cells"] else float("nan"),
    }

"""Numpy level: segment one window of a scene on the scene's global tile grid.

Why a global tile grid: the network is run on fixed-size tiles whose origins are multiples
of ``tile`` counted from the scene origin, each with exactly ``model.halo`` pixels of
context (outside the scene: the neutral fill value). Every output pixel therefore comes from
the same tensor computation, of the same shape, whatever the Dask chunking — so results do
not depend on chunking even bit for bit, although convolution kernels may pick other
algorithms for other tensor shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..schema import NODATA


@dataclass(frozen=True)
class Window:
    """Where a block of data sits in the scene (all in input pixels).

    The block's *core* — the pixels to produce output for — starts at scene row/column
    ``(y0, x0)`` and has shape ``(ny, nx)``. The data handed over covers the core plus
    ``top``/``left`` pixels of context before it (and whatever follows it); ``scene`` is the
    scene's full shape, where real edges lie.
    """

    y0: int
    x0: int
    ny: int
    nx: int
    top: int
    left: int
    scene: tuple[int, int]


def valid_pixels(data: np.ndarray, nodata: Sequence[float | None]) -> np.ndarray:
    """True where every band holds a finite value other than its declared nodata."""
    if data.dtype.kind == "f":
        valid = np.isfinite(data).all(axis=0)
    else:
        valid = np.ones(data.shape[1:], dtype=bool)
    for band, nd in zip(data, nodata, strict=True):
        if nd is not None and not (isinstance(nd, float) and np.isnan(nd)):
            valid &= band != nd
    return valid


def _tile_slices(start: int, stop: int, tile: int) -> range:
    """Global tile indices whose core intersects ``[start, stop)``."""
    return range(start // tile, -(-stop // tile))


def segment_window(
    data: np.ndarray,
    window: Window,
    *,
    model,
    output: str,
    tile: int,
    nodata: Sequence[float | None],
    batch_size: int,
    precision: str = "auto",
) -> np.ndarray:
    """Segment the core of ``window``; return ``(scale*ny, scale*nx)`` uint8 or float32.

    ``data`` is ``(band, h, w)`` in any real dtype, in the model's band order. Missing pixels
    (NaN or ``nodata``) are replaced by the model's fill value before inference so they do
    not disturb their neighbours, and their output is 255 (mask) or NaN (probability).
    Tiles whose core holds no valid pixel are not run.
    """
    s, halo = model.scale, model.halo
    valid = valid_pixels(data, nodata)
    # neutral value for missing input: the model's own, else zero
    fill = np.asarray(getattr(model, "fill_values", np.zeros(len(data))), np.float32)
    fill = fill[:, None, None]
    x = np.where(valid, data.astype(np.float32, copy=False), fill)

    w = window
    core_valid = valid[w.top : w.top + w.ny, w.left : w.left + w.nx]
    kind = np.uint8 if output == "mask" else np.float32
    out = np.full((w.ny * s, w.nx * s), NODATA if output == "mask" else np.nan, kind)
    if not core_valid.any():
        return out  # an all-nodata block costs no inference

    # Scene rows/cols covered by the data, clipped to the scene (beyond it lies fill).
    have_y = (max(w.y0 - w.top, 0), min(w.y0 - w.top + data.shape[1], w.scene[0]))
    have_x = (max(w.x0 - w.left, 0), min(w.x0 - w.left + data.shape[2], w.scene[1]))
    size = tile + 2 * halo

    jobs: list[tuple[np.ndarray, tuple[int, int]]] = []
    for ty in _tile_slices(w.y0, w.y0 + w.ny, tile):
        for tx in _tile_slices(w.x0, w.x0 + w.nx, tile):
            oy, ox = ty * tile, tx * tile  # tile core origin in the scene
            # the part of this tile's core inside the block's core, in core coordinates
            cy = slice(max(oy, w.y0) - w.y0, min(oy + tile, w.y0 + w.ny) - w.y0)
            cx = slice(max(ox, w.x0) - w.x0, min(ox + tile, w.x0 + w.nx) - w.x0)
            if not core_valid[cy, cx].any():
                continue
            buf = np.broadcast_to(fill, (fill.shape[0], size, size)).copy()
            y_a, y_b = max(oy - halo, have_y[0]), min(oy + tile + halo, have_y[1])
            x_a, x_b = max(ox - halo, have_x[0]), min(ox + tile + halo, have_x[1])
            if y_a < y_b and x_a < x_b:
                src = x[
                    :,
                    y_a - (w.y0 - w.top) : y_b - (w.y0 - w.top),
                    x_a - (w.x0 - w.left) : x_b - (w.x0 - w.left),
                ]
                buf[
                    :, y_a - (oy - halo) : y_b - (oy - halo), x_a - (ox - halo) : x_b - (ox - halo)
                ] = src
            jobs.append((buf, (oy, ox)))

    # "auto" is the model's own default: models outside xjointseg need not know precision=
    options = {} if precision == "auto" else {"precision": precision}
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start : start + batch_size]
        batch = np.stack([b for b, _ in chunk])
        result = model.predict(batch, output=output, margin=halo, **options)
        for pred, (oy, ox) in zip(result, (o for _, o in chunk), strict=True):
            # paste the part of the tile core that lies in the block core
            ya, yb = max(oy, w.y0), min(oy + tile, w.y0 + w.ny)
            xa, xb = max(ox, w.x0), min(ox + tile, w.x0 + w.nx)
            out[(ya - w.y0) * s : (yb - w.y0) * s, (xa - w.x0) * s : (xb - w.x0) * s] = pred[
                (ya - oy) * s : (yb - oy) * s, (xa - ox) * s : (xb - ox) * s
            ]

    missing = np.repeat(np.repeat(~core_valid, s, axis=0), s, axis=1)
    out[missing] = NODATA if output == "mask" else np.nan
    return out

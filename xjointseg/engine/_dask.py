"""Dask level: halo exchange, one task per block, output chunks ``scale`` times larger.

``overlap`` gives each block ``halo`` pixels of its neighbours (none beyond the scene edges:
they are real edges); ``map_blocks`` runs :func:`~xjointseg.engine._blocks.segment_window` on it and
returns only the block's core at 1 m, so the output chunks are exactly ``scale`` x the input
chunks. The block function crops itself instead of leaving it to ``trim_internal``: nothing
is computed or allocated for the halo at 1 m, and there is no trim step whose depth could be
given in the wrong units (the classic ``map_overlap(trim=True)`` shape bug).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import accumulate

import dask.array as da
import numpy as np

from ..errors import ChunkError
from ._blocks import Window, segment_window


def plan_chunks(
    size: int, chunks: Sequence[int], *, tile: int, halo: int, keep: bool = False
) -> tuple[int, ...]:
    """Chunks along one axis whose boundaries fall on the global tile grid.

    Boundaries of ``chunks`` are snapped to the nearest multiple of ``tile``; a last chunk
    smaller than ``halo`` is merged into its neighbour, because a halo cannot be taken from a
    neighbour smaller than itself. With ``keep=True`` the chunks must already satisfy this,
    else :class:`ChunkError`.
    """
    minimum = max(tile, halo)
    bounds = list(accumulate(chunks))[:-1]
    snapped: list[int] = []
    for b in bounds:
        s = int(round(b / tile)) * tile
        if s - (snapped[-1] if snapped else 0) >= minimum and size - s >= 1:
            snapped.append(s)
    if snapped and size - snapped[-1] < halo:
        snapped.pop()
    planned = tuple(np.diff([0, *snapped, size]).tolist())
    if keep and planned != tuple(chunks):
        raise ChunkError(
            f"chunks {tuple(chunks)} cannot be used as they are: block boundaries must fall on "
            f"multiples of the tile size ({tile} px) and no chunk may be smaller than the "
            f"halo ({halo} px). Rechunk to e.g. {planned}, or pass chunks='auto'."
        )
    return planned


def split_chunks(
    plans: Sequence[tuple[int, ...]], *, tile: int, halo: int, min_blocks: int
) -> list[tuple[int, ...]]:
    """Split the largest chunks of ``plans`` (one per spatial axis) along the tile grid until
    there are ``min_blocks`` blocks, or no chunk can be split.

    Splitting costs no model work (every tile is computed the same whatever block holds it)
    and moves only 10 m halo pixels between tasks; it lets that many tasks run at once and
    keeps the last ones short. A piece is never smaller than ``max(tile, halo)``.
    """
    pieces = [list(p) for p in plans]  # mutable copies, split in place below
    minimum = max(tile, halo)
    while math.prod(len(p) for p in pieces) < min_blocks:
        best = None  # (size, axis, index, where the first piece ends)
        for axis, plan in enumerate(pieces):
            for i, size in enumerate(plan):
                # cut at a multiple of tile (blocks start on the tile grid) near the middle,
                # leaving both pieces at least `minimum`
                lo, hi = -(-minimum // tile), (size - minimum) // tile
                if lo <= hi and (best is None or size > best[0]):
                    best = (size, axis, i, min(max(round(size / 2 / tile), lo), hi) * tile)
        if best is None:
            break
        size, axis, i, cut = best
        pieces[axis][i : i + 1] = [cut, size - cut]
    return [tuple(p) for p in pieces]


def _segment_task(
    block: np.ndarray,
    *,
    model_ref,
    kind: str,
    tile: int,
    halo: int,
    y_chunks: tuple[int, ...],
    x_chunks: tuple[int, ...],
    nodata: tuple,
    batch_size: int,
    precision: str,
    block_id: tuple[int, int, int],
) -> np.ndarray:
    model = model_ref.load()  # per-process cache: loaded once per worker, never shipped
    _, iy, ix = block_id
    window = Window(
        y0=sum(y_chunks[:iy]),
        x0=sum(x_chunks[:ix]),
        ny=y_chunks[iy],
        nx=x_chunks[ix],
        top=halo if iy > 0 else 0,
        left=halo if ix > 0 else 0,
        scene=(sum(y_chunks), sum(x_chunks)),
    )
    return np.stack(
        [
            segment_window(
                frame,
                window,
                model=model,
                output=kind,
                tile=tile,
                nodata=nodata,
                batch_size=batch_size,
                precision=precision,
            )
            for frame in block
        ]
    )


def segment_array(
    arr: da.Array,
    *,
    model,
    output: str,
    tile: int,
    halo: int,
    nodata: Sequence[float | None],
    batch_size: int,
    device: str | None = None,
    precision: str = "auto",
) -> da.Array:
    """Lazy ``(time, scale*y, scale*x)`` segmentation of a ``(time, band, y, x)`` dask array.

    ``arr`` must already be chunked as :func:`plan_chunks` says (band axis whole, time in
    single steps); nothing is computed here.
    """
    s = model.scale
    _, _, y_chunks, x_chunks = arr.chunks
    if halo > 0 and (len(y_chunks) > 1 or len(x_chunks) > 1):
        # boundary="none": no halo beyond the scene edges, which are real edges
        arr_o = da.overlap.overlap(
            arr, depth={0: 0, 1: 0, 2: halo, 3: halo}, boundary="none", allow_rechunk=False
        )
        for core, grown in zip((y_chunks, x_chunks), arr_o.chunks[2:], strict=True):
            last = len(core) - 1
            expect = tuple(c + halo * ((i > 0) + (i < last)) for i, c in enumerate(core))
            if grown != expect:  # output chunks are derived from this: never guess them
                raise ChunkError(
                    f"dask's overlap gave blocks {grown}, not {expect}: every block must be "
                    "at least the halo wide; rechunk the input (chunks=...) and try again"
                )
    else:
        arr_o = arr
    from ..models.model import model_ref  # torch: imported when a graph is built, not before

    dtype = np.uint8 if output == "mask" else np.float32
    return da.map_blocks(
        _segment_task,
        arr_o,
        drop_axis=1,
        chunks=(arr.chunks[0], tuple(c * s for c in y_chunks), tuple(c * s for c in x_chunks)),
        dtype=dtype,
        meta=np.empty((0, 0, 0), dtype=dtype),
        model_ref=model_ref(model, device),
        kind=output,
        tile=tile,
        halo=halo,
        y_chunks=y_chunks,
        x_chunks=x_chunks,
        nodata=tuple(nodata),
        batch_size=batch_size,
        precision=precision,
        token=f"isa-{output}",
    )

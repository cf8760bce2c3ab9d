"""Reading a cube back: :func:`open_cube` (lazy, with its CRS) and :func:`status`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import NotACubeError, OptionError
from ._store import _book, _done_blocks, _records, _Target


def open_cube(
    store: str | os.PathLike,
    *,
    variable: str = "isa",
    chunks: Mapping[str, int] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """Open a cube written by :func:`to_zarr`, lazily, with its CRS and attributes.

    Parameters
    ----------
    store : str or path
        Local path or fsspec URL.
    variable : {"isa", "probability"}
        ``"isa"``: uint8 0/1/255. ``"probability"`` (if written): float with NaN for nodata.
    chunks : mapping, optional
        Dask chunks; default: the stored inner chunks (at most 2048 px a side).
    storage_options : mapping, optional
        fsspec options for URLs.

    Returns
    -------
    xarray.DataArray
        ``(period, y, x)`` on the cube's grid, CRS in a ``spatial_ref`` coordinate.

    Raises
    ------
    NotACubeError
        Nothing is at ``store``, or it is not a cube written by xjointseg.

    Examples
    --------
    >>> import tempfile, xjointseg
    >>> from xjointseg.cube import open_cube
    >>> from xjointseg.testing import synthetic_scene, toy_model
    >>> store = tempfile.mkdtemp() + "/cube.zarr"
    >>> _ = synthetic_scene(16, 16, times=2).isa.segment(model=toy_model()).isa.to_zarr(store)
    >>> cube = open_cube(store)
    >>> cube.dims, cube.odc.crs.epsg
    (('time', 'y', 'x'), 32633)
    """
    target = _Target.make(store, storage_options)
    fs, root = target.fs()
    meta = _book(fs, root) if not fs.isfile(root) else None
    if meta is None:
        raise NotACubeError(
            f"no xjointseg cube at {target.url}"
            + (" (something is there, but not a complete cube)" if fs.exists(root) else "")
            + ": write one with isa.isa.to_zarr(store)"
        )
    _check_chunks(chunks, [meta["dim"], *meta["grid"]["dims"]])
    ds = xr.open_zarr(
        target.url,
        consolidated=False,
        chunks={} if chunks is None else dict(chunks),
        # isa stays uint8 with 255 (its _FillValue is for CF readers); probability decodes
        mask_and_scale={"isa": False},
        storage_options=target.storage_options,
    )
    if not isinstance(variable, str) or variable not in ds.data_vars:
        raise OptionError(
            f"the cube has no variable {variable!r}; it has {sorted(map(str, ds.data_vars))}"
        )
    out = ds[variable]
    out.attrs.update({k: v for k, v in ds.attrs.items() if k not in out.attrs})
    out.attrs.pop("_FillValue", None)  # for CF readers; the attrs say nodata=255
    return out


def status(
    store: str | os.PathLike, *, storage_options: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Which periods of a cube are complete: one row per period with blocks done and total.

    Examples
    --------
    >>> import tempfile, xjointseg
    >>> from xjointseg.cube import status
    >>> from xjointseg.testing import synthetic_scene, toy_model
    >>> store = tempfile.mkdtemp() + "/cube.zarr"
    >>> _ = synthetic_scene(16, 16, times=2).isa.segment(model=toy_model()).isa.to_zarr(store)
    >>> status(store)[["blocks_done", "blocks", "complete"]].values.tolist()
    [[1, 1, True], [1, 1, True]]
    """
    target = _Target.make(store, storage_options)
    fs, root = target.fs()
    meta = _book(fs, root) if not fs.isfile(root) else None
    if meta is None:
        raise NotACubeError(f"no xjointseg cube at {target.url}")
    ny, nx = meta["grid"]["shape"]
    by, bx = meta["block"]
    total = -(-ny // by) * -(-nx // bx)
    rows = []
    for i, rec in enumerate(_records(fs, root)):
        done = len(_done_blocks(fs, root, i, rec["fingerprint"]))
        rows.append(
            {
                "period": rec["period"],
                "blocks_done": done,
                "blocks": total,
                "complete": done == total,
                "fingerprint": rec["fingerprint"],
                "model": rec["model"],
            }
        )
    return pd.DataFrame(rows)


def _check_chunks(chunks: Any, dims: list[str]) -> None:
    """``chunks`` as open_cube takes it: dims of the cube -> a block side (or -1: whole)."""
    if chunks is None:
        return
    example = f"e.g. chunks={{{dims[1]!r}: 2048, {dims[2]!r}: 2048}}"
    if not isinstance(chunks, Mapping):
        raise OptionError(f"chunks must map the cube's dims {dims} to block sides, {example}")
    unknown = [d for d in chunks if d not in dims]
    if unknown:
        raise OptionError(f"chunks names {unknown}, which the cube lacks: its dims are {dims}")
    bad = {
        d: c
        for d, c in chunks.items()
        if isinstance(c, bool) or not isinstance(c, int | np.integer) or not (c >= 1 or c == -1)
    }
    if bad:
        raise OptionError(f"chunks must be whole numbers >= 1 (or -1: whole), got {bad}; {example}")

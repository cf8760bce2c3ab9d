"""The step ``xjointseg demo`` and ``xjointseg map`` share: write an ISA map into a cube,
resumably, with one progress display, and say what was done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xarray as xr

from ..cube import open_cube, to_zarr
from ..errors import CubeMismatchError, NotACubeError, PeriodConflictError
from ..progress import compute

__all__ = ["CubeRun", "write_cube"]


@dataclass(frozen=True)
class CubeRun:
    """What :func:`write_cube` did."""

    cube: xr.DataArray  # the cube as open_cube opens it
    pixels: int  # 1 m pixels segmented and written in this run (0: it was complete)
    seconds: float  # wall time of computing and writing
    resumed: bool  # a cube of the same computation was there: its blocks were kept
    replaced: bool  # a cube of ours made by another computation was there and was replaced


def _is_cube(store: Any) -> bool:
    try:
        open_cube(store)
    except NotACubeError:
        return False
    return True


def write_cube(
    isa: xr.DataArray,
    store: str | Path,
    *,
    overwrite: bool = False,
    replace_own: bool = False,
    flag: str = "overwrite=True",
    client: Any = None,
    progress: bool = False,
    on_replace: Callable[[], None] | None = None,
    zarr_format: int | None = None,
) -> CubeRun:
    """Write ``isa`` into the cube at ``store`` (resuming what is there) and open it.

    ``replace_own``: a cube of xjointseg's made by another computation is replaced without
    asking (the demo's own folder); anything else that is not a cube is never deleted.
    ``flag`` is how the caller names the overwrite option in messages (``--overwrite``).
    ``on_replace`` is called before such a replacement starts (to say so).
    """
    existed, replaced = _is_cube(store), False
    try:
        job = to_zarr(isa, store, compute=False, overwrite=overwrite, zarr_format=zarr_format)
    except (CubeMismatchError, PeriodConflictError) as exc:
        if not (replace_own and existed):
            if flag == "overwrite=True":
                raise
            raise type(exc)(str(exc).replace("overwrite=True", flag)) from None
        if on_replace is not None:
            on_replace()
        job = to_zarr(isa, store, compute=False, overwrite=True, zarr_format=zarr_format)
        replaced = True
    start = time.perf_counter()
    pixels = int(compute(job, client=client, progress=progress))
    seconds = time.perf_counter() - start
    return CubeRun(
        cube=open_cube(store),
        pixels=pixels,
        seconds=seconds,
        resumed=existed and not replaced,
        replaced=replaced,
    )

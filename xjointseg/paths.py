"""Local paths xjointseg writes: refused before any work is done when they cannot be written.

One check for every writer (cube stores, staged composites, COGs, the demo's files), so a
path under a file or in a read-only folder always fails the same way, with a
:class:`~xjointseg.errors.StorePathError` that names the culprit.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import StorePathError

__all__ = ["check_writable"]


def check_writable(path: str | os.PathLike, *, folder: bool = False) -> None:
    """Refuse ``path`` if it cannot be written: a file where a ``folder`` (a Zarr store) is
    meant, a file among its parents, or a read-only folder where it would be made."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise StorePathError(f"{path} is a file, not a Zarr store: pick a folder path")
    nearest = next(
        (p for p in ((path,) if folder else ()) + tuple(path.parents) if p.exists()), None
    )
    if nearest is None or not nearest.is_dir():
        raise StorePathError(f"cannot write {path}: {nearest} is a file, not a folder")
    if not os.access(nearest, os.W_OK):
        raise StorePathError(f"cannot write {path}: {nearest} is read-only. Pick another path")

"""Paths xjointseg writes: refused before any work is done when they cannot be written, and
replaced only as far as xjointseg wrote them.

One check for every writer (cube stores, staged composites, COGs, the demo's files), so a
path under a file or in a read-only folder always fails the same way, with a
:class:`~xjointseg.errors.StorePathError` that names the culprit. One removal for every Zarr
store xjointseg replaces (cubes, staged composites): its Zarr nodes go, a user's notes or
sidecar files in the same folder stay.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from .errors import OptionError, StorePathError

__all__ = ["check_protocol", "check_writable", "remove_zarr_store"]


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


def remove_zarr_store(fs, root: str, own: tuple[str, ...] = ()) -> None:
    """Delete the Zarr store at ``root`` that xjointseg wrote, keeping what it did not write.

    Removed: the ``own`` entries (bookkeeping folders) first, then every child that is a Zarr
    node (a folder with its own ``zarr.json``), then the root ``zarr.json`` last, so a store
    cut short by a kill still says it was ours. Anything else (a user's notes, a sidecar file,
    a folder that is not a Zarr node) stays where it is.
    """
    children = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False))
    ordered = [c for c in own if c in children] + [c for c in children if c not in own]
    for name in ordered:
        path = f"{root}/{name}"
        if name in own or (fs.isdir(path) and fs.exists(f"{path}/zarr.json")):
            fs.rm(path, recursive=True)
    if fs.exists(f"{root}/zarr.json"):
        fs.rm(f"{root}/zarr.json")
    for name in fs.ls(root, detail=False):  # zarr's temporary files beside the root metadata
        if posixpath.basename(name.rstrip("/")).startswith("zarr.json.") and name.endswith(
            ".partial"
        ):
            fs.rm(name)


def check_protocol(url: str) -> None:
    """An fsspec URL whose protocol fsspec knows, with its package installed."""
    import fsspec

    protocol = url.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise OptionError(
            f"{url}: fsspec knows no protocol {protocol!r}; use a local path or a URL such as "
            "s3://, gs://, az://, https://, memory://"
        ) from None
    except ImportError as exc:
        raise OptionError(
            f"{url}: the {protocol}:// protocol needs a package that is not installed ({exc})"
        ) from None

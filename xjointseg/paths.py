"""Paths xjointseg writes: refused before any work is done when they cannot be written, and
replaced only as far as xjointseg wrote them.

One check for every writer (cube stores, staged composites, COGs, the demo's files), so a
path under a file or in a read-only folder always fails the same way, with a
:class:`~xjointseg.errors.StorePathError` that names the culprit. For every Zarr store
xjointseg replaces (cubes, staged composites), one check that xjointseg wrote it and one
removal: its Zarr nodes go, a user's notes or sidecar files in the same folder stay.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from .errors import OptionError, StorePathError

__all__ = [
    "check_protocol",
    "check_writable",
    "foreign_nodes",
    "is_url",
    "remove_zarr_store",
    "written_by_xjointseg",
]


def is_url(path: Any) -> bool:
    """True for an fsspec URL (``s3://...``, ``file://...``); False for a local path or
    anything that is not a path."""
    return isinstance(path, str | os.PathLike) and "://" in os.fspath(path)


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


def zarr_attrs(fs, node: str) -> Any:
    """The attributes of the Zarr group at ``node`` (Zarr v3: in ``zarr.json``; v2: in
    ``.zattrs`` beside ``.zgroup``), read as JSON; None when missing or unreadable."""
    try:
        meta = json.loads(fs.cat_file(f"{node}/zarr.json"))
        return meta.get("attributes") if isinstance(meta, dict) else None
    except (OSError, ValueError):  # missing, unreadable, not JSON
        pass
    try:
        if fs.exists(f"{node}/.zgroup"):
            return json.loads(fs.cat_file(f"{node}/.zattrs"))
    except (OSError, ValueError):
        pass
    return None


def written_by_xjointseg(
    store: Any, mark: str, value: Any, storage_options: Mapping[str, Any] | None = None
) -> bool:
    """Whether xjointseg wrote the Zarr ``store``: its root attribute ``mark`` is ``value``,
    as the writer left it (the only kind of store xjointseg ever replaces or deletes).

    ``store`` is a local path, an fsspec URL or a zarr store object. A store whose root
    metadata is missing or unreadable (torn by a kill, not Zarr) is not ours.
    """
    if isinstance(store, str | os.PathLike):
        import fsspec

        fs, root = fsspec.core.url_to_fs(os.fspath(store), **(storage_options or {}))
        attrs = zarr_attrs(fs, root.rstrip("/"))
    else:
        import zarr

        try:
            attrs = dict(zarr.open_group(store, mode="r").attrs)
        except Exception:  # nothing there, or not Zarr
            return False
    return isinstance(attrs, Mapping) and attrs.get(mark) == value


#: The files that make a folder a Zarr node: v3, and v2 (array, group)
ZARR_NODE_MARKERS = ("zarr.json", ".zarray", ".zgroup")
#: Every metadata file of a Zarr node (v2 keeps attributes and consolidated metadata apart)
ZARR_NODE_FILES = (*ZARR_NODE_MARKERS, ".zattrs", ".zmetadata")


def foreign_nodes(fs, root: str, ours: Collection[str]) -> list[str]:
    """The children of the Zarr store at ``root`` that are Zarr nodes (variables, groups)
    not named in ``ours``: what a user added to a store xjointseg wrote, which replacing
    the store would delete."""
    children = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False))
    return [c for c in children if c not in ours and _is_zarr_node(fs, f"{root}/{c}")]


def _is_zarr_node(fs, path: str) -> bool:
    """A folder with its own Zarr metadata (``zarr.json``, or v2's ``.zarray``/``.zgroup``)."""
    return fs.isdir(path) and any(fs.exists(f"{path}/{m}") for m in ZARR_NODE_MARKERS)


def remove_zarr_store(fs, root: str, own: tuple[str, ...] = ()) -> None:
    """Delete the Zarr store at ``root`` that xjointseg wrote, keeping what it did not write.

    Removed: the ``own`` entries (bookkeeping folders) first, then every child that is a Zarr
    node (a folder with its own ``zarr.json``, or ``.zarray``/``.zgroup`` in Zarr v2), then
    the root metadata last, so a store cut short by a kill still says it was ours. Anything
    else (a user's notes, a sidecar file, a folder that is not a Zarr node) stays where it is.
    """
    children = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False))
    ordered = [c for c in own if c in children] + [c for c in children if c not in own]
    for name in ordered:
        path = f"{root}/{name}"
        if name in own or _is_zarr_node(fs, path):
            fs.rm(path, recursive=True)
    # the attributes that say "ours" go last
    for name in sorted(ZARR_NODE_FILES, key=lambda n: n in ("zarr.json", ".zattrs")):
        if fs.exists(f"{root}/{name}"):
            fs.rm(f"{root}/{name}")
    remaining = fs.ls(root, detail=False) if fs.exists(root) else []  # an emptied folder
    # of an object store (memory://, s3://) is gone with its last object
    for name in remaining:  # zarr's temporary files beside the root metadata
        base = posixpath.basename(name.rstrip("/"))
        if base.startswith(tuple(f"{n}." for n in ZARR_NODE_FILES)) and base.endswith(".partial"):
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

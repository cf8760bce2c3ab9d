"""Where a cube lives and its bookkeeping: the fsspec target, small JSON objects, the period
records and block markers, and the checks on what a store holds before anything is deleted."""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import OptionError
from ..paths import check_protocol, check_writable, is_url, written_by_xjointseg, zarr_attrs

BOOK = "_xjointseg"

FORMAT = 1


@dataclass(frozen=True)
class _Target:
    """Where a cube lives: a URL or path plus fsspec options (picklable, sent to tasks)."""

    url: str
    options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def make(cls, store: str | os.PathLike, storage_options: Mapping | None) -> _Target:
        if not isinstance(store, str | os.PathLike):
            raise OptionError(
                f"store must be a local path or an fsspec URL (str), not {type(store).__name__}"
            )
        if storage_options is not None and not isinstance(storage_options, Mapping):
            raise OptionError(
                "storage_options must be a mapping of fsspec options (e.g. {'anon': True}), "
                f"not {storage_options!r}"
            )
        url = os.fspath(store)
        if not is_url(url):
            url = str(Path(url).expanduser().absolute())
        else:
            check_protocol(url)
        return cls(url, tuple(sorted((storage_options or {}).items())))

    @property
    def storage_options(self) -> dict | None:
        return dict(self.options) if is_url(self.url) else None

    @property
    def local(self) -> bool:
        return not is_url(self.url) or self.url.startswith("file://")

    def fs(self):
        import fsspec

        fs, root = fsspec.core.url_to_fs(self.url, **dict(self.options))
        return fs, root.rstrip("/")

    def open_array(self, name: str, mode: str = "r+"):
        import zarr

        return zarr.open_array(
            self.url,
            path=name,
            mode=mode,
            storage_options=self.storage_options,
            config={"write_empty_chunks": False},
        )

    def open_group(self, path: str = "", mode: Literal["r", "r+", "a", "w", "w-"] = "r+"):
        import zarr

        return zarr.open_group(self.url, path=path, mode=mode, storage_options=self.storage_options)


def _read_json(fs, path: str) -> dict | None:
    """A JSON object, or None when missing or unreadable (a write cut short by a kill)."""
    try:
        return json.loads(fs.cat_file(path))
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return None


def _put(fs, path: str, data: bytes) -> None:
    fs.makedirs(posixpath.dirname(path), exist_ok=True)  # local folders must exist first
    fs.pipe_file(path, data)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, indent=1).encode()


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _records(fs, root: str) -> list[dict]:
    """The period records 0..n-1 (contiguous); a missing or torn record ends the list."""
    out: list[dict] = []
    while (rec := _read_json(fs, f"{root}/{BOOK}/periods/{len(out):04d}.json")) is not None:
        out.append(rec)
    return out


def _write_record(fs, root: str, index: int, rec: dict) -> None:
    _put(fs, f"{root}/{BOOK}/periods/{index:04d}.json", _dumps(rec))


def _done_dir(root: str, index: int, fp: str) -> str:
    return f"{root}/{BOOK}/done/{index:04d}/{fp[:16]}"


def _done_blocks(fs, root: str, index: int, fp: str) -> set[str]:
    """Blocks of a period whose marker is complete (a marker torn by a kill is ignored)."""
    try:
        entries = fs.ls(_done_dir(root, index, fp), detail=True)
    except FileNotFoundError:
        return set()
    size = len(fp.encode())
    return {posixpath.basename(e["name"]) for e in entries if e.get("size") == size}


def _book(fs, root: str) -> dict | None:
    attrs = zarr_attrs(fs, f"{root}/{BOOK}")
    return attrs.get("xjointseg_cube") if isinstance(attrs, dict) else None


#: Zarr formats a cube can be written in: 3 (sharded, the default) or 2 (GDAL >= 3.4 and
#: QGIS read it; one chunk per block)
ZARR_FORMATS = (2, 3)


def _group_nodes(fmt: int, attrs: dict) -> dict[str, bytes]:
    """The files of a Zarr group node holding ``attrs``, in format ``fmt``."""
    if fmt == 3:
        return {"zarr.json": _dumps({"zarr_format": 3, "node_type": "group", "attributes": attrs})}
    return {".zgroup": _dumps({"zarr_format": 2}), ".zattrs": _dumps(attrs)}


def _has_root(fs, root: str) -> bool:
    """Whether Zarr group metadata (either format) stands at ``root``."""
    return fs.exists(f"{root}/zarr.json") or fs.exists(f"{root}/.zgroup")


def _is_ours(target: _Target) -> bool:
    """A store whose root says it is an xjointseg cube (the only kind overwrite may delete)."""
    return written_by_xjointseg(target.url, "xjointseg_cube_format", FORMAT, dict(target.options))


def _check_store_path(target: _Target) -> None:
    """A local store must be a folder (or not exist yet) that can be written."""
    if target.local:
        check_writable(target.fs()[1], folder=True)


def _is_partial_template(target: _Target) -> bool:
    """A template whose creation was cut short: ours, and no block written yet.

    Remote stores can hold one, and local ones where the template was being moved into a
    folder that also holds a user's files (else it is built aside and renamed whole). Only a
    root carrying the cube's own format attribute counts: other stores are never deleted.
    """
    fs, root = target.fs()
    return _is_ours(target) and not fs.exists(f"{root}/{BOOK}/done")

"""Staging composites in a Zarr v3 store (``load_sentinel2(store=...)``): written once,
reopened lazily; replaced only when load_sentinel2 staged it, and then only its Zarr nodes."""

from __future__ import annotations

import os
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Literal

import xarray as xr

from ..errors import StagingStoreExistsError, StorePathError
from ..paths import (
    check_protocol,
    check_writable,
    foreign_nodes,
    is_url,
    remove_zarr_store,
    written_by_xjointseg,
    zarr_attrs,
)

_TIME_ENCODING = {
    "units": "milliseconds since 1970-01-01",
    "calendar": "proleptic_gregorian",
    "dtype": "int64",
}

# The root attribute (name, value) of the stores _stage writes.
STAGED_MARK, STAGED_VALUE = "xjointseg_composites", 1
# The root attribute that lists the Zarr nodes _stage wrote (what overwrite may remove)
NODES_ATTR = "xjointseg_nodes"


def _staged_by_us(store: Any) -> bool:
    """The store's root says load_sentinel2 wrote it (the only kind overwrite may replace)."""
    return written_by_xjointseg(store, STAGED_MARK, STAGED_VALUE)


def _refuse_foreign_nodes(fs, root: str, store: Any) -> None:
    """Refuse to replace a staged store that holds Zarr variables it did not write (a
    user's). Stores of versions that did not list their nodes: every Zarr node is taken as
    staged."""
    attrs = zarr_attrs(fs, root)
    ours = attrs.get(NODES_ATTR) if isinstance(attrs, dict) else None
    if not isinstance(ours, list):
        return
    foreign = foreign_nodes(fs, root, set(ours))
    if foreign:
        raise StagingStoreExistsError(
            f"{store} holds Zarr variables that load_sentinel2 did not write "
            f"({', '.join(foreign)}): overwrite would delete them, and xjointseg does not "
            "delete what it did not create. Move them to another store, or pick another path"
        )


def _holds_something(store: Any) -> bool:
    """Anything at ``store``: a local folder with entries, a URL with objects under it, a
    mapping with keys."""
    if isinstance(store, str | os.PathLike):
        if is_url(store):
            import fsspec

            fs, root = fsspec.core.url_to_fs(os.fspath(store))
            return bool(fs.exists(root) and fs.ls(root, detail=False))
        path = Path(store)
        return path.exists() and any(path.iterdir())
    return len(store) > 0 if hasattr(store, "__len__") else True


def _check_stage_target(store: Any, overwrite: bool) -> None:
    """Refuse a store that exists, unless overwrite and load_sentinel2 made it."""
    if is_url(store):
        check_protocol(os.fspath(store))
    elif isinstance(store, str | os.PathLike):
        check_writable(Path(store), folder=True)
    if not _holds_something(store):
        return
    if not overwrite:
        raise StagingStoreExistsError(
            f"{store} exists: pass overwrite=True to replace it, or another path"
        )
    if not _staged_by_us(store):
        raise StagingStoreExistsError(
            f"{store} exists and was not written by load_sentinel2: xjointseg does not delete "
            "what it did not create. Pick another path, or remove it yourself"
        )


def _stage(ds: xr.Dataset, store: Any, overwrite: bool) -> xr.Dataset:
    """Write composites to a Zarr v3 store (one Zarr chunk per dask chunk) and reopen lazily."""
    _check_stage_target(store, overwrite)
    out = ds.copy()
    out = out.assign_coords(period=out["period"].astype(object))  # variable-length strings
    out.attrs[STAGED_MARK] = STAGED_VALUE
    out.attrs[NODES_ATTR] = sorted(str(name) for name in out.variables)
    # Zarr chunks are regular (the last may be smaller): make every variable's chunking so
    for name, var in out.data_vars.items():
        if var.chunks is not None:
            out[name] = var.chunk({d: c[0] for d, c in zip(var.dims, var.chunks, strict=True)})
    encoding: dict[Hashable, dict[str, Any]] = {
        name: {"chunks": tuple(c[0] for c in var.chunks)}
        for name, var in out.data_vars.items()
        if var.chunks is not None
    }
    for name in ("time", "period_start", "period_end"):
        if name in out.coords:
            encoding[name] = dict(_TIME_ENCODING)
    mode: Literal["w", "w-", "a"] = "w" if overwrite else "w-"
    if overwrite and isinstance(store, str | os.PathLike) and _staged_by_us(store):
        # replace only what load_sentinel2 wrote: a user's files in the folder stay
        import fsspec

        fs, root = fsspec.core.url_to_fs(os.fspath(store))
        _refuse_foreign_nodes(fs, root.rstrip("/"), store)
        remove_zarr_store(fs, root.rstrip("/"))
        mode = "a"
    try:
        out.to_zarr(
            store,
            mode=mode,
            zarr_format=3,
            consolidated=False,
            encoding=encoding,
        )
    except (FileExistsError, ValueError) as exc:
        if "exist" in str(exc).lower():
            raise StagingStoreExistsError(
                f"{store} already holds data: pass overwrite=True or another store"
            ) from None
        raise
    except PermissionError as exc:
        raise StorePathError(f"cannot write {store}: {exc.strerror}. Pick another path") from None
    staged = xr.open_zarr(store, zarr_format=3, consolidated=False, chunks={})
    if "spatial_ref" in staged.data_vars:  # the CRS travels as a scalar variable
        staged = staged.set_coords("spatial_ref")
    staged.attrs.pop(STAGED_MARK, None)
    return staged.odc.assign_crs(ds.odc.crs)

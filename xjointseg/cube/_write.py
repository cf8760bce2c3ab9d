"""The write: :func:`to_zarr` as a checked plan (:func:`plan_write`), then one delayed task
per missing block, each writing one shard and then its marker."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import dask
import dask.array as da
import numpy as np
import xarray as xr

from ..errors import CubeError, CubeInputError, CubeMismatchError, OptionError
from ..paths import foreign_nodes, remove_zarr_store
from ..progress import compute as compute_job
from ..schema import check_isa_map, check_isa_values, period_key, period_kind
from ._periods import _claim_periods, _compatible, _mismatch_message, _record, _sources
from ._read import open_cube
from ._store import (
    BOOK,
    FORMAT,
    ZARR_FORMATS,
    _book,
    _check_store_path,
    _done_blocks,
    _done_dir,
    _has_root,
    _is_ours,
    _is_partial_template,
    _put,
    _Target,
)
from ._template import (
    _as_dask,
    _block_layout,
    _create,
    _extra_coords,
    _fingerprints,
    _grid_meta,
    _regular,
    _same_grid,
    _template,
)


def to_zarr(
    isa: xr.DataArray,
    store: str | os.PathLike,
    *,
    probability: xr.DataArray | None = None,
    overwrite: bool = False,
    sources: Mapping[Any, Sequence[str]] | Sequence[str] | None = None,
    fingerprint: str | None = None,
    part: tuple[int, int] | None = None,
    inner_chunks: int | tuple[int, int] | None = None,
    progress: bool = False,
    compute: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    zarr_format: int | None = None,
):
    """Write an ISA map with a period dimension to a Zarr v3 cube; resume if interrupted.

    The store is created once from a template (all periods, coordinates, CRS, attributes),
    then every period and block is written as a region, one Zarr shard per dask block. Calling
    the same write again is a resume: blocks already written are skipped, so after a crash or
    a kill the same call finishes the cube, identical to an uninterrupted run. Periods not yet
    in the store are appended without touching the others.

    Parameters
    ----------
    isa : xarray.DataArray
        uint8 ``(period, y, x)`` as :func:`~xjointseg.segment` returns it: 0 not ISA, 1 ISA,
        255 nodata, with a CRS. The period dimension (``time`` or any name) needs labels:
        datetimes, integers or strings.
    store : str or path
        A local path or an fsspec URL (``s3://...``, ``memory://...``).
    probability : xarray.DataArray, optional
        ``segment(..., output="probability")`` on the same grid and periods; stored as uint8
        (``value * 0.004``, 255 nodata) and read back as float with NaN.
    overwrite : bool
        Replace what conflicts instead of refusing: periods written by a different
        computation are rewritten; an xjointseg cube for another grid, variables or model is
        deleted and created anew. Default False: such a write raises. Anything at ``store``
        that is not an xjointseg cube is never deleted, whatever ``overwrite`` says, and
        replacing a cube removes only its own Zarr nodes (a user's files inside stay).
    sources : sequence of str, or mapping period -> sequence of str, optional
        Source item ids recorded with each period (and in the ``source_items`` attribute).
        Default: ``isa.attrs["source_items"]`` if present.
    fingerprint : str, optional
        A name for the computation of every period, used instead of what identifies it by
        default (see Notes): for lazy maps not made by :func:`~xjointseg.segment`.
    part : (k, n), optional
        Write only every n-th block, starting at block k (blocks counted over periods, rows,
        columns): n jobs running the same call with k = 0..n-1 share the work.
    inner_chunks : int or (int, int), optional
        Side of the inner Zarr chunks of each shard (a divisor of the block side). Default:
        the block itself up to 2048 px, else the largest divisor <= 2048.
    progress : bool
        Show a progress bar on stderr (dask's ``ProgressBar``; local schedulers only).
    compute : bool
        False: create or check the store now, return a ``dask.delayed`` object that writes
        the missing blocks when computed (e.g. together with other work).
    storage_options : mapping, optional
        fsspec options for URLs (credentials, endpoint...).
    zarr_format : {3, 2}, optional
        The Zarr format of a new cube: 3 (sharded; the default) or 2, which GDAL (>= 3.4)
        and so QGIS and rasterio open as a raster with its CRS, 1 m pixels and nodata 255
        (``ZARR:"cube.zarr":/isa``, one band per period; GDAL reads Zarr v3 shards only
        from 3.13). In v2 each block is one chunk (no ``inner_chunks``). Default: the
        format of the cube already there, else 3.

    Returns
    -------
    xarray.DataArray or dask.delayed.Delayed
        The cube as :func:`open_cube` opens it (lazy), or the delayed write.

    Notes
    -----
    Each period has a fingerprint in the store, made of what defines its computation, never
    of the chunking: the map's ``isa_fingerprint`` coordinate that segment() records (the
    bytes of in-memory input, or dask's token of lazy input; the model's sha256, tile,
    halo), else the map's bytes when in memory,
    else dask's token of the period's slice; plus the grid and the model's sha256. The same
    map rechunked is the same period. Values are checked as each block is written: only 0, 1
    and 255 are stored (:func:`xjointseg.schema.check_isa_values`). Completed blocks are
    recorded by one small marker object each, written after the block's data, so concurrent
    writers never update a shared object. Several jobs may write the same cube with
    ``part=``; on object stores, create it first (one call with ``compute=False``) and start
    the jobs after. Adding periods is not meant to run concurrently with other writers.

    Raises
    ------
    CubeInputError
        ``isa`` is not a uint8 ``(period, y, x)`` map with a CRS, or ``probability`` does not
        match it.
    CubeMismatchError
        The store exists for another grid, variables or model, or is not an xjointseg cube.
    StorePathError
        ``store`` is a file, lies under one, or its folder cannot be written.
    PeriodConflictError
        A period in the store was written by a different computation.
    FingerprintError
        A lazy map cannot be tokenized deterministically (pass ``fingerprint=``).

    Examples
    --------
    >>> import tempfile, numpy as np, xarray as xr
    >>> import xjointseg
    >>> from xjointseg.testing import synthetic_scene, toy_model
    >>> ds = synthetic_scene(32, 40, times=2)
    >>> isa = ds.isa.segment(model=toy_model())
    >>> store = tempfile.mkdtemp() + "/cube.zarr"
    >>> cube = isa.isa.to_zarr(store)
    >>> cube.shape == isa.shape, cube.dtype.name
    (True, 'uint8')
    >>> bool((cube == isa).all())  # writing again resumes: nothing left to do
    True
    """
    for name, flag in (("compute", compute), ("progress", progress)):
        if not isinstance(flag, bool | np.bool_):
            raise OptionError(f"{name} must be True or False, not {flag!r}")
    plan = plan_write(
        isa,
        store,
        probability=probability,
        overwrite=overwrite,
        sources=sources,
        fingerprint=fingerprint,
        part=part,
        inner_chunks=inner_chunks,
        storage_options=storage_options,
        zarr_format=zarr_format,
    )
    job = _write_job(plan, *_prepare_store(plan))
    if not compute:
        return job
    compute_job(job, progress=progress)
    return open_cube(plan.target.url, storage_options=plan.target.storage_options)


@dataclass(frozen=True)
class WritePlan:
    """What :func:`to_zarr` will write, checked before the store is touched.

    Made by :func:`plan_write`; executing it creates or checks the store, claims the
    periods and writes the missing blocks.
    """

    isa: xr.DataArray  # the checked map, periods first
    arrays: tuple[tuple[str, da.Array], ...]  # ("isa", ...) and maybe ("probability", ...)
    keys: tuple[str, ...]  # one text key per period
    fingerprints: tuple[str, ...]  # what defines each period's computation
    info: tuple[dict, ...]  # per period: source items, other coordinates
    meta: Mapping[str, Any]  # format, dim, period kind, grid, variables, model, coords
    target: _Target
    overwrite: bool = False
    part: tuple[int, int] | None = None
    inner_chunks: int | tuple[int, int] | None = None


def plan_write(
    isa: xr.DataArray,
    store: str | os.PathLike,
    *,
    probability: xr.DataArray | None = None,
    overwrite: bool = False,
    sources: Mapping[Any, Sequence[str]] | Sequence[str] | None = None,
    fingerprint: str | None = None,
    part: tuple[int, int] | None = None,
    inner_chunks: int | tuple[int, int] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    zarr_format: int | None = None,
) -> WritePlan:
    """Check everything :func:`to_zarr` is given and return the plan of the write.

    Writes nothing and computes nothing; raises what :func:`to_zarr` raises
    for bad input.
    """
    isa = check_isa_map(isa)
    pdim = isa.dims[0]
    kind = period_kind(isa[pdim].values)
    keys = [period_key(v, kind) for v in isa[pdim].values]
    maps = [("isa", isa)]
    if probability is not None:
        maps.append(("probability", _check_probability(probability, isa, keys, kind)))
    part = _check_write_options(overwrite, zarr_format, inner_chunks, part)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "dim": str(pdim),
        "period_kind": kind,
        "grid": _grid_meta(isa),
        "variables": [name for name, _ in maps],
        "model": isa.attrs.get("model"),
        "model_sha256": isa.attrs.get("model_sha256"),
        "coords": _extra_coords(isa),
        "zarr_format": None if zarr_format is None else int(zarr_format),
    }
    info = [
        {
            "sources": src,
            "coords": {
                name: period_key(isa[name].values[j], ck) for name, ck in meta["coords"].items()
            },
        }
        for j, src in enumerate(_sources(sources, isa, keys, kind))
    ]
    target = _Target.make(store, storage_options)
    _check_store_path(target)
    return WritePlan(
        isa=isa,
        arrays=tuple((name, _as_dask(m)) for name, m in maps),
        keys=tuple(keys),
        fingerprints=tuple(_fingerprints(maps, keys, meta, fingerprint)),
        info=tuple(info),
        meta=meta,
        target=target,
        overwrite=bool(overwrite),
        part=part,
        inner_chunks=inner_chunks,
    )


def _check_write_options(
    overwrite: Any, zarr_format: Any, inner_chunks: Any, part: Any
) -> tuple[int, int] | None:
    """Refuse options no write can use; return ``part`` as two ints (or None)."""
    if not isinstance(overwrite, bool | np.bool_):
        raise OptionError(f"overwrite must be True or False, not {overwrite!r}")
    if zarr_format is not None and (
        isinstance(zarr_format, bool) or zarr_format not in ZARR_FORMATS
    ):
        raise OptionError(
            f"zarr_format must be 3 (sharded) or 2 (for GDAL and QGIS), not {zarr_format!r}"
        )
    if zarr_format == 2 and inner_chunks is not None:
        raise OptionError("inner_chunks are chunks inside Zarr v3 shards: not with zarr_format=2")
    if part is not None:
        ints = (
            isinstance(part, tuple | list)
            and len(part) == 2
            and all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in part)
        )
        if not (ints and part[1] >= 1 and 0 <= part[0] < part[1]):
            raise OptionError(
                f"part must be (k, n), two ints with 0 <= k < n (job k of n), got {part!r}"
            )
        return (int(part[0]), int(part[1]))
    return None


def _check_probability(probability, isa: xr.DataArray, keys: list[str], kind: str):
    prob = check_isa_map(probability, "probability", dtype=False)
    if prob.dtype.kind != "f":
        raise CubeInputError(
            f"probability must be float in [0, 1] (segment(output='probability')), not {prob.dtype}"
        )
    if (
        prob.dims != isa.dims
        or prob.shape != isa.shape
        or not _same_grid(_grid_meta(prob), _grid_meta(isa))
    ):
        raise CubeInputError("probability must have the same dims, periods and grid as isa")
    if [period_key(v, kind) for v in prob[prob.dims[0]].values] != keys:
        raise CubeInputError("probability must have the same period labels as isa")
    return prob


def _prepare_store(plan: WritePlan) -> tuple[dict, list[int]]:
    """Create the store (or check the one there), claim the periods: (meta, store indices).

    The block layout is the store's if it exists, else the input's dask chunks.
    """
    target, meta = plan.target, dict(plan.meta)
    fs, root = target.fs()
    existing = _book(fs, root)
    if meta["zarr_format"] is None:  # a cube keeps its format; a new one is Zarr v3
        meta["zarr_format"] = existing.get("zarr_format", 3) if existing is not None else 3
    if existing is not None and not _compatible(existing, meta):
        if not plan.overwrite:
            raise CubeMismatchError(_mismatch_message(existing, meta, target.url))
        _refuse_foreign_nodes(fs, root, existing, target.url)
        remove_zarr_store(fs, root, own=(BOOK,))  # a cube of ours (its bookkeeping says so)
        existing = None
    elif existing is None:
        _clear_for_template(target, plan.overwrite)
    if existing is None:
        data = plan.arrays[0][1]
        if not (_regular(data.chunks[1]) and _regular(data.chunks[2])):
            # a Zarr chunk grid is regular: make the dask blocks so (each still one shard)
            data = data.rechunk({1: data.chunks[1][0], 2: data.chunks[2][0]})
        block, inner = _block_layout(data, plan.inner_chunks)
        meta.update(block=block, inner=inner)
        records = [
            _record(key, fp, meta, info)
            for key, fp, info in zip(plan.keys, plan.fingerprints, plan.info, strict=True)
        ]
        ds, encoding = _template(plan.isa, len(plan.arrays) > 1, block, inner, records, meta)
        if not _create(target, ds, encoding, meta, records):
            # a concurrent writer created it first (_create found its book): check theirs
            existing = cast(dict, _book(fs, root))
            if not _compatible(existing, meta):
                raise CubeMismatchError(_mismatch_message(existing, meta, target.url))
    if existing is not None:
        meta |= {k: existing[k] for k in ("block", "inner", "coords")}
    indices = _claim_periods(
        target, meta, list(plan.keys), list(plan.fingerprints), list(plan.info), plan.overwrite
    )
    return meta, indices


def _clear_for_template(target: _Target, overwrite: bool) -> None:
    """Make room for a new template: refuse anything there but an xjointseg cube."""
    fs, root = target.fs()
    if not (_has_root(fs, root) or (fs.exists(root) and fs.ls(root))):
        return
    if not _is_ours(target):
        # never delete what xjointseg did not make, overwrite=True or not
        raise CubeMismatchError(
            f"{target.url} exists and is not an xjointseg cube: xjointseg does not "
            "delete what it did not create. Pick another path, or remove it yourself"
        )
    if not (overwrite or _is_partial_template(target)):
        raise CubeMismatchError(
            f"{target.url} holds an incomplete xjointseg cube: pass overwrite=True to "
            "replace it, or pick another path"
        )
    _refuse_foreign_nodes(fs, root, _book(fs, root), target.url)
    remove_zarr_store(fs, root, own=(BOOK,))


def _refuse_foreign_nodes(fs, root: str, book: dict | None, url: str) -> None:
    """Before a cube is replaced: refuse where the store holds Zarr variables or groups the
    cube did not write (a user's, added with xarray or zarr), which replacing it would
    delete. The cube's own: those its bookkeeping names (a template cut short before its
    bookkeeping: the names any cube has)."""
    ours = {"isa", "probability", "spatial_ref", "time", "y", "x", BOOK}
    if book is not None:
        ours |= {*book.get("variables", ()), book.get("dim", "time"), *book.get("coords", {})}
        ours |= set(book.get("grid", {}).get("dims", ()))
    foreign = foreign_nodes(fs, root, ours)
    if foreign:
        raise CubeMismatchError(
            f"{url} holds Zarr variables that xjointseg did not write ({', '.join(foreign)}): "
            "replacing the cube would delete them, and xjointseg does not delete what it did "
            "not create. Move them to another store (or remove them yourself), then overwrite"
        )


def _write_job(plan: WritePlan, meta: dict, indices: list[int]):
    """One delayed task per missing block (one shard each), summed: the 1 m pixels written."""
    target = plan.target
    fs, root = target.fs()
    block = tuple(meta["block"])
    # each dask block becomes exactly one shard of the store's layout
    arrays = [(name, data.rechunk((1, block[0], block[1]))) for name, data in plan.arrays]
    _check_layout(target, arrays, block)
    shape = tuple(meta["grid"]["shape"])
    dims = (meta["dim"], *meta["grid"]["dims"])
    delayed_blocks = [data.to_delayed(optimize_graph=True) for _, data in arrays]
    tasks = []
    nby, nbx = delayed_blocks[0].shape[1:]
    part = plan.part
    for j, index in enumerate(indices):
        fp = plan.fingerprints[j]
        done = _done_blocks(fs, root, index, fp)
        for iy in range(nby):
            for ix in range(nbx):
                if part is not None and ((j * nby + iy) * nbx + ix) % part[1] != part[0]:
                    continue
                if f"{iy}.{ix}" in done:
                    continue
                blocks = [d[j, iy, ix] for d in delayed_blocks]
                tasks.append(
                    dask.delayed(_write_block, pure=False)(
                        blocks[0],
                        blocks[1] if len(blocks) > 1 else None,
                        target=target,
                        index=index,
                        iy=iy,
                        ix=ix,
                        block=block,
                        shape=shape,
                        dims=dims,
                        fingerprint=fp,
                        dask_key_name=f"xjointseg-write-{index}-{iy}-{ix}-{uuid.uuid4().hex}",
                    )
                )
    return dask.delayed(sum, pure=False)(tasks)


def _sweep_partials(target: _Target, var: str, index: int, iy: int, ix: int) -> None:
    """Remove temporary files a killed writer left for this shard (zarr's atomic writes)."""
    if not target.local:
        return
    _, root = target.fs()
    v3 = Path(root, var, "c", str(index), str(iy)), f"{ix}.*.partial"
    v2 = Path(root, var), f"{index}.{iy}.{ix}.*.partial"
    for folder, pattern in (v3, v2):
        for p in folder.glob(pattern):
            p.unlink(missing_ok=True)


def _write_block(
    isa_block: np.ndarray,
    prob_block: np.ndarray | None,
    *,
    target: _Target,
    index: int,
    iy: int,
    ix: int,
    block: tuple[int, int],
    shape: tuple[int, int],
    dims: tuple[str, str, str],
    fingerprint: str,
) -> int:
    y0, x0 = iy * block[0], ix * block[1]
    expect = (1, min(block[0], shape[0] - y0), min(block[1], shape[1] - x0))
    # one dask block = one Zarr shard/chunk: no two tasks ever write the same object
    for values in (isa_block, prob_block):
        if values is not None and values.shape != expect:
            raise CubeError(
                f"block ({iy}, {ix}) of period {index} has shape {values.shape}, the store's "
                f"layout needs {expect}: a block would span two shards"
            )
    check_isa_values(isa_block)  # lazy maps: their values are first seen here
    part = xr.Dataset({"isa": (dims, np.asarray(isa_block, dtype=np.uint8))})
    if prob_block is not None:
        finite = prob_block[np.isfinite(prob_block)]
        if finite.size and (finite.min() < -1e-6 or finite.max() > 1 + 1e-6):
            raise CubeInputError(
                f"probability values in block ({iy}, {ix}) of period {index} lie in "
                f"[{finite.min():g}, {finite.max():g}], not [0, 1]: pass segment(..., "
                "output='probability') as it is (not in percent)"
            )
        # xarray encodes it as the store says (scale_factor, _FillValue 255 for NaN);
        # the clip only removes rounding outside [0, 1]
        part["probability"] = (dims, np.clip(prob_block, 0.0, 1.0))
    for var in part.data_vars:
        _sweep_partials(target, str(var), index, iy, ix)
    region = (slice(index, index + 1), slice(y0, y0 + expect[1]), slice(x0, x0 + expect[2]))
    part.to_zarr(
        target.url,
        region=dict(zip(dims, region, strict=True)),
        mode="r+",
        consolidated=False,
        write_empty_chunks=False,  # an all-nodata block stays unwritten: it reads as fill
        storage_options=target.storage_options,
    )
    fs, root = target.fs()
    _put(fs, f"{_done_dir(root, index, fingerprint)}/{iy}.{ix}", fingerprint.encode())
    return int(isa_block.size)


def _check_layout(target: _Target, arrays: list, block: tuple[int, int]) -> None:
    """Each dask block must be exactly one shard (or chunk) of the store: refuse otherwise."""
    for name, data in arrays:
        z = target.open_array(name, mode="r")
        unit = tuple((z.shards or z.chunks)[1:])
        fits = all(
            all(c == block[axis - 1] for c in data.chunks[axis][:-1])
            and data.chunks[axis][-1] <= block[axis - 1]
            for axis in (1, 2)
        )
        if unit != tuple(block) or not fits:
            raise CubeMismatchError(
                f"{name} in {target.url} is stored in {unit} px shards, but the blocks to "
                f"write are {block}: write to a new store"
            )

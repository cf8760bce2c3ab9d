"""Multi-period ISA cubes in Zarr v3: a template written once, then one region write per period
and block. Writing is resumable after a kill, refuses a different computation, and lets
disjoint blocks be written by several workers or jobs at once.

Store layout (a local path or any fsspec URL)::

    cube.zarr/
      zarr.json               root group; attrs model, model_sha256, xjointseg_version, source_items
      isa/                    uint8 (period, y, x): 0 not ISA, 1 ISA, 255 nodata (also the fill
                              value, so a block never written reads as nodata, never as "not ISA")
      probability/            optional uint8, probability = value * 0.004, 255 nodata (CF-scaled)
      time/ y/ x/ spatial_ref coordinates; the CRS as a CF grid mapping (rioxarray, odc-geo)
      _xjointseg/             bookkeeping group; attrs: grid, block layout, variables, model
        periods/0003.json     one record per period: label, fingerprint, model, source items
        done/0003/<fp>/2.5    one marker per completed block (period 3, block row 2, column 5),
                              written after the block's data; its content is the fingerprint

Each dask block of the (rechunked) input is one Zarr shard (or one chunk when blocks are
small), so one task writes one object and concurrent tasks never touch the same object.
xarray writes the template (``Dataset.to_zarr(compute=False)``) and each block
(``to_zarr(region=...)``, encoded as the store's attributes say); the bookkeeping group, the
period records and the block markers are small JSON objects of their own. Appending periods
resizes the arrays with zarr directly, in an order a kill cannot leave unreadable (see
_sync_periods): the data arrays first, the period coordinate, whose length readers take as
the number of periods, last. xarray's ``to_zarr(append_dim=...)`` grows each array in turn,
coordinate included, in no order this module controls, so a kill between two arrays could
leave a store whose periods disagree in length; and it writes the new periods' data in the
same call, where here they are written block by block, resumably.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from . import __version__
from .errors import (
    CubeError,
    CubeInputError,
    CubeMismatchError,
    NotACubeError,
    OptionError,
    PeriodConflictError,
)
from .paths import check_writable
from .progress import compute as compute_job
from .schema import (
    FINGERPRINT_COORD,
    FLAG_MEANINGS,
    FLAG_VALUES,
    NODATA,
    check_isa_map,
    check_isa_values,
    key_value,
    period_digest,
    period_key,
    period_kind,
)

PROBABILITY_SCALE = 0.004  # 250 steps over [0, 1]; 251..254 unused, 255 nodata
BOOK = "_xjointseg"
FORMAT = 1
DEFAULT_BLOCK = 4096  # 1 m pixels per block side when the input is not a dask array
INNER_MAX = 2048  # largest inner chunk side inside a shard (4 MiB of uint8)
INNER_MIN = 256  # below this, sharding costs more than it saves: one chunk per block
# Zarr v3 codec metadata, as it stands in zarr.json (zarr builds the codec from it)
COMPRESSOR = {
    "name": "blosc",
    "configuration": {"cname": "zstd", "clevel": 5, "shuffle": "bitshuffle"},
}

__all__ = ["WritePlan", "open_cube", "plan_write", "status", "to_zarr"]


# --- storage ------------------------------------------------------------------------------


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
        url = os.fspath(store)
        if "://" not in url:
            url = str(Path(url).expanduser().absolute())
        return cls(url, tuple(sorted((storage_options or {}).items())))

    @property
    def storage_options(self) -> dict | None:
        return dict(self.options) if "://" in self.url else None

    @property
    def local(self) -> bool:
        return "://" not in self.url or self.url.startswith("file://")

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

    def open_group(self, path: str = "", mode: str = "r+"):
        import zarr

        return zarr.open_group(
            self.url, path=path, mode=mode, storage_options=self.storage_options, zarr_format=3
        )


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


# --- periods ------------------------------------------------------------------------------


def _coord_values(records: list[dict], name: str, kind: str, pdim: str) -> np.ndarray:
    """The values of a coordinate along the period dimension, rebuilt from the records."""
    keys = [r["period"] if name == pdim else r.get("coords", {}).get(name) for r in records]
    values = [key_value(k, kind) for k in keys]
    return np.array(values, dtype=object) if kind == "str" else np.array(values)


def _extra_coords(isa: xr.DataArray) -> dict[str, str]:
    """Other 1-D coordinates along the period dimension (labels, period ends...) and kinds."""
    pdim = isa.dims[0]
    return {
        str(name): period_kind(np.asarray(c.values))
        for name, c in isa.coords.items()
        if name not in (pdim, FINGERPRINT_COORD) and c.dims == (pdim,)
    }


def _period_encoding(kind: str) -> dict:
    if kind == "datetime":
        # explicit units: the first write must not pick units that later periods overflow
        return {
            "units": "seconds since 1970-01-01",
            "calendar": "proleptic_gregorian",
            "dtype": "int64",
        }
    return {}


# --- checks on the input ------------------------------------------------------------------


def _as_dask(arr: xr.DataArray) -> da.Array:
    data = arr.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(1, DEFAULT_BLOCK, DEFAULT_BLOCK))
    if any(c != 1 for c in data.chunks[0]):
        data = data.rechunk({0: 1})
    return data


def _regular(chunks: tuple[int, ...]) -> bool:
    return all(c == chunks[0] for c in chunks[:-1]) and chunks[-1] <= chunks[0]


def _inner(block: int, wanted: int | None) -> int:
    """The inner chunk side for a shard side: a divisor of it, as large as INNER_MAX allows."""
    if wanted is not None:
        if wanted < 1 or block % wanted:
            raise OptionError(
                f"inner_chunks={wanted} must divide the block side ({block} px): pick a divisor"
            )
        return wanted
    if block <= INNER_MAX:
        return block
    for c in range(INNER_MAX, INNER_MIN - 1, -1):
        if block % c == 0:
            return c
    return block


# --- fingerprints -------------------------------------------------------------------------


def _period_identity(arr: xr.DataArray, j: int) -> str:
    """What defines period ``j`` of a map, whatever its chunking: the ``isa_fingerprint``
    that segment() records (input identity, model, tile, halo), else the data's digest."""
    coord = arr.coords.get(FINGERPRINT_COORD)
    if coord is not None and coord.dims == arr.dims[:1]:  # one per period, as segment() sets
        return "segment:" + str(coord.values[j])
    return period_digest(arr.data, j)


def _fingerprints(
    arrays: Sequence[tuple[str, xr.DataArray]], keys: Sequence[str], meta: dict, user: str | None
) -> list[str]:
    common = {
        "grid": meta["grid"],
        "model_sha256": meta["model_sha256"],
        "variables": [name for name, _ in arrays],
    }
    out = []
    for j, key in enumerate(keys):
        parts = {**common, "period": key}
        if user is not None:
            parts["user"] = str(user)
        else:
            parts["computation"] = [_period_identity(arr, j) for _, arr in arrays]
        out.append(hashlib.sha256(_dumps(parts)).hexdigest())
    return out


# --- metadata -----------------------------------------------------------------------------


def _grid_meta(isa: xr.DataArray) -> dict:
    gbox = isa.odc.geobox
    return {
        "crs": gbox.crs.to_wkt(),
        "transform": [float(v) for v in tuple(gbox.affine)[:6]],
        "shape": [int(s) for s in gbox.shape],
        "dims": [str(d) for d in isa.dims[1:]],
    }


def _same_grid(a: dict, b: dict) -> bool:
    from odc.geo.crs import CRS

    if a["shape"] != b["shape"] or a["dims"] != b["dims"]:
        return False
    if CRS(a["crs"]) != CRS(b["crs"]):
        return False
    tol = 1e-6 * abs(a["transform"][0])
    return bool(np.allclose(a["transform"], b["transform"], rtol=0, atol=tol))


def _describe_grid(g: dict) -> str:
    from odc.geo.crs import CRS

    crs = CRS(g["crs"])
    t = g["transform"]
    name = f"EPSG:{crs.epsg}" if crs.epsg else "a custom CRS"
    return f"{g['shape'][0]} x {g['shape'][1]} px of {t[0]:g} m at ({t[2]:g}, {t[5]:g}) in {name}"


def _block_layout(data: da.Array, inner: int | Sequence[int] | None) -> tuple[list, list]:
    block = [data.chunks[1][0], data.chunks[2][0]]
    wanted = [None, None] if inner is None else list(np.broadcast_to(inner, 2))
    if not all(w is None or isinstance(w, int | np.integer) for w in wanted):
        raise OptionError(f"inner_chunks must be an int or (int, int), not {inner!r}")
    wanted = [None if w is None else int(w) for w in wanted]
    return [int(b) for b in block], [_inner(b, w) for b, w in zip(block, wanted, strict=True)]


# --- bookkeeping --------------------------------------------------------------------------


def _records(fs, root: str) -> list[dict]:
    """The period records 0..n-1 (contiguous); a missing or torn record ends the list."""
    out = []
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
    meta = _read_json(fs, f"{root}/{BOOK}/zarr.json")
    if meta is None:
        return None
    return meta.get("attributes", {}).get("xjointseg_cube")


# --- template -----------------------------------------------------------------------------


def _template(
    isa: xr.DataArray, prob: bool, block: list, inner: list, records: list[dict], meta: dict
) -> tuple[xr.Dataset, dict]:
    from odc.geo.xr import xr_coords

    pdim, ydim, xdim = isa.dims
    n = len(records)
    shape = (n, *isa.shape[1:])
    chunks = (1, *block)
    gbox = isa.odc.geobox
    grid = xr_coords(gbox, crs_coord_name="spatial_ref")
    kinds = {pdim: meta["period_kind"], **meta["coords"]}
    coords = {
        name: xr.Variable(pdim, _coord_values(records, name, kind, pdim))
        for name, kind in kinds.items()
    }
    coords |= {
        ydim: xr.Variable(ydim, grid[gbox.dimensions[0]].values, grid[gbox.dimensions[0]].attrs),
        xdim: xr.Variable(xdim, grid[gbox.dimensions[1]].values, grid[gbox.dimensions[1]].attrs),
        "spatial_ref": grid["spatial_ref"].variable,
    }
    attrs = {
        k: _jsonable(v)
        for k, v in isa.attrs.items()
        # source items live in the root attrs and the period records (appends update them)
        if k not in ("_FillValue", "grid_mapping", "coordinates", "source_items", "stac_items")
    }
    attrs.update(nodata=NODATA, grid_mapping="spatial_ref")
    attrs.setdefault("flag_values", list(FLAG_VALUES))
    attrs.setdefault("flag_meanings", FLAG_MEANINGS)
    sharded = list(inner) != list(block)
    enc_common = {"compressors": [dict(COMPRESSOR)], "fill_value": NODATA}
    if sharded:
        enc_common.update(chunks=(1, *inner), shards=chunks)
    else:
        enc_common.update(chunks=chunks)
    dims = (pdim, ydim, xdim)
    data_vars = {
        "isa": xr.Variable(dims, da.full(shape, NODATA, dtype=np.uint8, chunks=chunks), attrs=attrs)
    }
    encoding = {"isa": dict(enc_common)}
    encoding |= {name: _period_encoding(kind) for name, kind in kinds.items()}
    if prob:
        data_vars["probability"] = xr.Variable(
            dims,
            da.zeros(shape, dtype=np.float32, chunks=chunks),
            attrs={
                "long_name": "impervious surface probability",
                "grid_mapping": "spatial_ref",
                "model": attrs.get("model"),
                "model_sha256": attrs.get("model_sha256"),
            },
            encoding={"coordinates": "spatial_ref"},
        )
        encoding["probability"] = {
            **enc_common,
            "dtype": "uint8",
            "scale_factor": PROBABILITY_SCALE,
            "add_offset": 0.0,
            "_FillValue": NODATA,
        }
    ds = xr.Dataset(data_vars, coords=coords)
    return ds, encoding


def _root_attrs(meta: dict, records: list[dict]) -> dict:
    items = sorted({s for r in records for s in r.get("sources", [])})
    return {
        "title": "impervious surface (ISA) cube, 1 m",
        "model": meta["model"],
        "model_sha256": meta["model_sha256"],
        "xjointseg_version": __version__,
        "source_items": items,
        "Conventions": "CF-1.8",
        "xjointseg_cube_format": FORMAT,
    }


def _create(
    target: _Target, ds: xr.Dataset, encoding: dict, meta: dict, records: list[dict]
) -> bool:
    """Write the template (metadata, coordinates, records); False if another writer won."""
    fs, root = target.fs()
    ds = ds.assign_attrs(_root_attrs(meta, records))

    def write(t: _Target, mode: str) -> None:
        ds.to_zarr(
            t.url,
            mode=mode,
            compute=False,
            zarr_format=3,
            consolidated=False,
            encoding=encoding,
            storage_options=t.storage_options,
        )
        tfs, troot = t.fs()
        for i, rec in enumerate(records):
            _write_record(tfs, troot, i, rec)
        # the bookkeeping group is written last: its presence says the template is whole
        # (its zarr.json by hand: opened through xarray or zarr, the group's folder would be
        # walked, and the records and markers in it are not Zarr nodes)
        node = {"zarr_format": 3, "node_type": "group", "attributes": {"xjointseg_cube": meta}}
        _put(tfs, f"{troot}/{BOOK}/zarr.json", _dumps(node))

    if target.local:
        # build beside the store, then rename: a kill leaves no half template in the store,
        # and of two writers creating it at once exactly one rename wins
        parent, name = os.path.split(root)
        tmp = os.path.join(parent, f".{name}.xjointseg-tmp-{uuid.uuid4().hex[:12]}")
        try:
            write(_Target(tmp), "w-")
            try:
                os.rename(tmp, root)
            except OSError:
                if _book(fs, root) is None:
                    raise
                return False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return True
    write(target, "w")
    return True


# --- writing blocks -----------------------------------------------------------------------


def _sweep_partials(target: _Target, var: str, index: int, iy: int, ix: int) -> None:
    """Remove temporary files a killed writer left for this shard (zarr's atomic writes)."""
    if not target.local:
        return
    _, root = target.fs()
    folder = Path(root, var, "c", str(index), str(iy))
    for p in folder.glob(f"{ix}.*.partial"):
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
        # xarray encodes it as the store says (scale_factor, _FillValue 255 for NaN)
        part["probability"] = (dims, np.clip(prob_block, 0.0, 1.0))
    for var in part.data_vars:
        _sweep_partials(target, str(var), index, iy, ix)
    region = (slice(index, index + 1), slice(y0, y0 + expect[1]), slice(x0, x0 + expect[2]))
    part.to_zarr(
        target.url,
        region=dict(zip(dims, region, strict=True)),
        mode="r+",
        zarr_format=3,
        consolidated=False,
        write_empty_chunks=False,  # an all-nodata block stays unwritten: it reads as fill
        storage_options=target.storage_options,
    )
    fs, root = target.fs()
    _put(fs, f"{_done_dir(root, index, fingerprint)}/{iy}.{ix}", fingerprint.encode())
    return int(isa_block.size)


# --- public API ---------------------------------------------------------------------------


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
        that is not an xjointseg cube is never deleted, whatever ``overwrite`` says.
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
    if part is not None:
        k, n = part
        if not (isinstance(n, int) and isinstance(k, int) and n >= 1 and 0 <= k < n):
            raise OptionError(f"part must be (k, n) with 0 <= k < n, got {part!r}")
    meta = {
        "format": FORMAT,
        "dim": str(pdim),
        "period_kind": kind,
        "grid": _grid_meta(isa),
        "variables": [name for name, _ in maps],
        "model": isa.attrs.get("model"),
        "model_sha256": isa.attrs.get("model_sha256"),
        "coords": _extra_coords(isa),
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
    if existing is not None and not _compatible(existing, meta):
        if not plan.overwrite:
            raise CubeMismatchError(_mismatch_message(existing, meta, target.url))
        fs.rm(root, recursive=True)  # a cube of ours (its bookkeeping says so)
        existing = None
    if existing is None:
        _clear_for_template(target, plan.overwrite)
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
            existing = _book(fs, root)  # a concurrent writer created it first: check theirs
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
    if not (fs.exists(f"{root}/zarr.json") or (fs.exists(root) and fs.ls(root))):
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
    fs.rm(root, recursive=True)


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


def _sources(sources, isa: xr.DataArray, keys: list[str], kind: str) -> list[list[str]]:
    """Source item ids per period: given, or from attrs (``stac_items`` of load_sentinel2)."""
    if sources is None:
        sources = isa.attrs.get("source_items", isa.attrs.get("stac_items"))
        if isinstance(sources, str) and sources.lstrip().startswith(("{", "[")):
            sources = json.loads(sources)
    if sources is None:
        return [[] for _ in keys]
    if isinstance(sources, str):
        sources = [sources]
    if isinstance(sources, Mapping):
        # keys may be period coordinate values or the labels of a "period" coordinate
        labels = [str(v) for v in isa["period"].values] if "period" in isa.coords else keys
        out = []
        for key, label in zip(keys, labels, strict=True):
            found = [v for k, v in sources.items() if str(k) == label]
            found = found or [v for k, v in sources.items() if _safe_key(k, kind) == key]
            out.append([str(s) for s in found[0]] if found else [])
        return out
    return [[str(s) for s in sources] for _ in keys]


def _safe_key(value: Any, kind: str) -> str | None:
    try:
        return period_key(value, kind)
    except (TypeError, ValueError):
        return None


def _record(key: str, fp: str, meta: dict, info: dict) -> dict:
    return {
        "period": key,
        "fingerprint": fp,
        "model": meta["model"],
        "model_sha256": meta["model_sha256"],
        "sources": info["sources"],
        "coords": info["coords"],
    }


def _compatible(existing: dict, meta: dict) -> bool:
    return (
        existing.get("format") == FORMAT
        and existing["dim"] == meta["dim"]
        and existing["period_kind"] == meta["period_kind"]
        and existing["variables"] == meta["variables"]
        and existing.get("model_sha256") == meta["model_sha256"]
        and _same_grid(existing["grid"], meta["grid"])
    )


def _mismatch_message(existing: dict, meta: dict, url: str) -> str:
    what = []
    if not _same_grid(existing["grid"], meta["grid"]):
        what.append(
            f"its grid is {_describe_grid(existing['grid'])}, this map's is "
            f"{_describe_grid(meta['grid'])}"
        )
    if existing.get("model_sha256") != meta["model_sha256"]:
        what.append(
            f"it was made with model {existing.get('model')!r} (sha256 "
            f"{str(existing.get('model_sha256'))[:12]}...), this map with {meta['model']!r} "
            f"(sha256 {str(meta['model_sha256'])[:12]}...)"
        )
    if existing["variables"] != meta["variables"]:
        what.append(f"it holds {existing['variables']}, this write {meta['variables']}")
    if existing["dim"] != meta["dim"] or existing["period_kind"] != meta["period_kind"]:
        what.append(
            f"its periods are {existing['dim']!r} ({existing['period_kind']}), this map's "
            f"{meta['dim']!r} ({meta['period_kind']})"
        )
    return (
        f"the cube at {url} cannot take this map: {'; '.join(what) or 'another format'}. "
        "Write to a new store, or pass overwrite=True to delete it and start again."
    )


def _is_ours(target: _Target) -> bool:
    """A store whose root says it is an xjointseg cube (the only kind overwrite may delete)."""
    fs, root = target.fs()
    meta = _read_json(fs, f"{root}/zarr.json")
    attrs = (meta or {}).get("attributes", {})
    return attrs.get("xjointseg_cube_format") == FORMAT


def _check_store_path(target: _Target) -> None:
    """A local store must be a folder (or not exist yet) that can be written."""
    if target.local:
        check_writable(target.fs()[1], folder=True)


def _is_partial_template(target: _Target) -> bool:
    """A template whose creation was cut short: ours, and no block written yet.

    Only remote stores can hold one (a local template is built aside and renamed), and only
    a root carrying the cube's own format attribute counts: other stores are never deleted.
    """
    if target.local:
        return False
    fs, root = target.fs()
    meta = _read_json(fs, f"{root}/zarr.json")
    attrs = (meta or {}).get("attributes", {})
    return attrs.get("xjointseg_cube_format") == FORMAT and not fs.exists(f"{root}/{BOOK}/done")


def _claim_periods(
    target: _Target,
    meta: dict,
    keys: list[str],
    fps: list[str],
    info: list[dict],
    overwrite: bool,
) -> list[int]:
    """Store index of each input period; append new ones, refuse or replace conflicting ones."""
    fs, root = target.fs()
    records = _records(fs, root)
    _sync_periods(target, meta, records)  # finish an append a kill interrupted
    stored = [r["period"] for r in records]
    indices = []
    new = []
    for j, key in enumerate(keys):
        if key not in stored:
            new.append(j)
            indices.append(len(stored) + len(new) - 1)
            continue
        i = stored.index(key)
        indices.append(i)
        if records[i]["fingerprint"] == fps[j]:
            continue
        if not overwrite:
            raise PeriodConflictError(
                f"period {key} in {target.url} was written by a different computation "
                "(other inputs, model, weights or settings). Pass overwrite=True to replace it, "
                "write to a new store, or select only new periods, e.g. "
                f"isa.sel({meta['dim']}=[...])."
            )
        rec = _record(key, fps[j], meta, info[j])
        _write_record(fs, root, i, rec)
        records[i] = rec
        # markers of the replaced computation no longer count; its blocks get rewritten
        if fs.exists(f"{root}/{BOOK}/done/{i:04d}"):
            fs.rm(f"{root}/{BOOK}/done/{i:04d}", recursive=True)
    if new:
        kind = meta["period_kind"]
        if kind != "str":
            last = max((key_value(k, kind) for k in stored), default=None)
            early = [keys[j] for j in new if last is not None and key_value(keys[j], kind) <= last]
            if early:
                raise CubeMismatchError(
                    f"periods can only be added after the last one in the cube ({stored[-1]}); "
                    f"{early} would come before it: write them to a new cube"
                )
        for j in new:
            rec = _record(keys[j], fps[j], meta, info[j])
            _write_record(fs, root, len(records), rec)
            records.append(rec)
        _sync_periods(target, meta, records)
    return indices


def _sync_periods(target: _Target, meta: dict, records: list[dict]) -> None:
    """Make the arrays and the period coordinate as long as the records say (appends)."""
    pdim, kind = meta["dim"], meta["period_kind"]
    coord = target.open_array(pdim)
    n = len(records)
    if coord.shape[0] >= n:  # never shrink: records can only be missing if torn by a kill
        return
    if target.local:  # metadata rewrites a kill cut short left temporary files behind
        _, root = target.fs()
        for name in [*meta["variables"], *meta["coords"], pdim, ""]:
            for p in Path(root, name).glob("zarr.*.partial"):
                p.unlink(missing_ok=True)
    for var in meta["variables"]:
        arr = target.open_array(var)
        if arr.shape[0] != n:
            arr.resize((n, *arr.shape[1:]))
    # the period coordinate last: its length is what readers take as the periods
    for name, ck in [*meta["coords"].items(), (pdim, kind)]:
        var = xr.Variable((pdim,), _coord_values(records, name, ck, pdim))
        var.encoding = _period_encoding(ck)
        encoded = xr.conventions.encode_cf_variable(var, name=name)
        arr = coord if name == pdim else target.open_array(name)
        arr.resize((n,))
        arr[:] = np.asarray(encoded.values, dtype=arr.dtype)
    group = target.open_group()
    group.attrs.update({"source_items": _root_attrs(meta, records)["source_items"]})


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
    ds = xr.open_zarr(
        target.url,
        consolidated=False,
        zarr_format=3,
        chunks={} if chunks is None else dict(chunks),
        storage_options=target.storage_options,
    )
    if variable not in ds.data_vars:
        raise OptionError(
            f"the cube has no variable {variable!r}; it has {sorted(map(str, ds.data_vars))}"
        )
    out = ds[variable]
    out.attrs.update({k: v for k, v in ds.attrs.items() if k not in out.attrs})
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
    meta = _book(fs, root)
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

"""The cube's layout: period coordinates and their encoding, block and shard sizes, the
fingerprint of each period's computation, grid metadata, and the template written once."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Hashable, Sequence
from typing import Any, Literal

import dask.array as da
import numpy as np
import xarray as xr

from .._version import __version__
from ..errors import OptionError
from ..paths import ZARR_NODE_FILES
from ..schema import (
    FINGERPRINT_COORD,
    FLAG_MEANINGS,
    FLAG_VALUES,
    NODATA,
    key_value,
    period_digest,
    period_kind,
)
from ._store import (
    BOOK,
    FORMAT,
    _book,
    _dumps,
    _group_nodes,
    _jsonable,
    _put,
    _Target,
    _write_record,
)

PROBABILITY_SCALE = 0.004  # 250 steps over [0, 1]; 251..254 unused, 255 nodata

DEFAULT_BLOCK = 4096  # 1 m pixels per block side when the input is not a dask array

INNER_MAX = 2048  # largest inner chunk side inside a shard (4 MiB of uint8)

INNER_MIN = 256  # below this, sharding costs more than it saves: one chunk per block

# Zarr v3 codec metadata, as it stands in zarr.json (zarr builds the codec from it)
COMPRESSOR = {
    "name": "blosc",
    "configuration": {"cname": "zstd", "clevel": 5, "shuffle": "bitshuffle"},
}


def _coord_values(records: list[dict], name: str, kind: str, pdim: Hashable) -> np.ndarray:
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
    message = f"inner_chunks must be an int or (int, int), not {inner!r}"
    try:
        wanted = [None, None] if inner is None else list(np.broadcast_to(inner, 2))
    except ValueError:  # a sequence of another length
        raise OptionError(message) from None
    if not all(
        w is None or (isinstance(w, int | np.integer) and not isinstance(w, bool)) for w in wanted
    ):
        raise OptionError(message)
    wanted = [None if w is None else int(w) for w in wanted]
    return [int(b) for b in block], [_inner(b, w) for b, w in zip(block, wanted, strict=True)]


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
    # CF attributes, so clients that never import xjointseg know which axis is which
    period_cf = {"axis": "T", "long_name": "period"}
    if meta["period_kind"] == "datetime":
        period_cf["standard_name"] = "time"
    coords[pdim].attrs.update(period_cf)
    space = {ydim: ("Y", gbox.dimensions[0]), xdim: ("X", gbox.dimensions[1])}
    for dim, (axis, name) in space.items():
        cf = {"standard_name": f"projection_{axis.lower()}_coordinate", "axis": axis}
        coords[dim] = xr.Variable(dim, grid[name].values, {**grid[name].attrs, **cf})
    coords["spatial_ref"] = grid["spatial_ref"].variable
    attrs = {
        k: _jsonable(v)
        for k, v in isa.attrs.items()
        # source items live in the root attrs and the period records (appends update them)
        if k not in ("_FillValue", "grid_mapping", "coordinates", "source_items", "stac_items")
    }
    attrs.update(nodata=NODATA, grid_mapping="spatial_ref")
    attrs.setdefault("flag_values", list(FLAG_VALUES))
    attrs.setdefault("flag_meanings", FLAG_MEANINGS)
    enc_common: dict[str, Any]
    if meta["zarr_format"] == 2:  # no shards in v2: each block is one chunk
        enc_common = {"compressors": [_v2_compressor()], "chunks": chunks}
    else:
        enc_common = {"compressors": [dict(COMPRESSOR)], "fill_value": NODATA, "chunks": chunks}
        if list(inner) != list(block):
            enc_common.update(chunks=(1, *inner), shards=chunks)
    dims = (pdim, ydim, xdim)
    data_vars = {
        "isa": xr.Variable(dims, da.full(shape, NODATA, dtype=np.uint8, chunks=chunks), attrs=attrs)
    }
    # _FillValue too: CF readers (plain xarray.open_zarr, GDAL) then read 255 as missing,
    # so a client that never imports xjointseg averages the valid pixels only
    encoding = {"isa": {**enc_common, "_FillValue": NODATA}}
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


def _v2_compressor():
    """:data:`COMPRESSOR` as Zarr v2 writes it (numcodecs)."""
    from numcodecs import Blosc

    return Blosc(cname="zstd", clevel=5, shuffle=Blosc.BITSHUFFLE)


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

    fmt = meta["zarr_format"]

    def write(t: _Target, mode: Literal["w-", "w", "a"]) -> None:
        ds.to_zarr(
            t.url,
            mode=mode,
            compute=False,
            zarr_format=fmt,
            consolidated=False,
            encoding=encoding,
            storage_options=t.storage_options,
        )
        tfs, troot = t.fs()
        for i, rec in enumerate(records):
            _write_record(tfs, troot, i, rec)
        # the bookkeeping group is written last: its presence says the template is whole
        # (its metadata by hand: opened through xarray or zarr, the group's folder would be
        # walked, and the records and markers in it are not Zarr nodes)
        for name, data in _group_nodes(fmt, {"xjointseg_cube": meta}).items():
            _put(tfs, f"{troot}/{BOOK}/{name}", data)

    # files of a user's that a replaced cube left in the folder stay (never deleted)
    kept = fs.exists(root) and bool(fs.ls(root))
    if target.local:
        # build beside the store, then rename: a kill leaves no half template in the store,
        # and of two writers creating it at once exactly one rename wins
        parent, name = os.path.split(root)
        tmp = os.path.join(parent, f".{name}.xjointseg-tmp-{uuid.uuid4().hex[:12]}")
        try:
            write(_Target(tmp), "w-")
            try:
                if kept:
                    _move_into(tmp, root)
                else:
                    os.rename(tmp, root)
            except OSError:
                if _book(fs, root) is None:
                    raise
                return False
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return True
    write(target, "a" if kept else "w")  # "w" would delete the user's files too
    return True


def _move_into(tmp: str, root: str) -> None:
    """Move a template's entries into a folder that holds other files: the arrays, then the
    root metadata, the bookkeeping group last (its presence says the template is whole)."""
    names = sorted(os.listdir(tmp), key=lambda n: (n == BOOK, n in ZARR_NODE_FILES, n))
    for name in names:
        os.rename(os.path.join(tmp, name), os.path.join(root, name))

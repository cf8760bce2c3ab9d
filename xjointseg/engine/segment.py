"""Xarray level: check the input, pick the model's bands, segment lazily, put the result on
the exact 1 m grid.

Everything that can be wrong with the input is checked (by :mod:`xjointseg.inputs` and the
options here) before any pixel is computed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import dask.array as da
import numpy as np
import xarray as xr
from odc.geo.xr import xr_coords

from .._system import available_memory, dask_client_active, parallel_slots
from .._version import __version__
from ..errors import (
    EmptyInputError,
    OptionError,
)
from ..inputs import check_scale, checked_block, checked_input
from ..schema import (
    BAND_ALIASES,  # noqa: F401  (re-exported: the band table lives in schema)
    FINGERPRINT_COORD,
    FLAG_MEANINGS,
    FLAG_VALUES,
    NODATA,
    OUTPUT_KINDS,
    PRECISIONS,
    find_band,
    in_memory,
    period_digest,
    recipe_digests,
)
from ._dask import plan_chunks, segment_array, split_chunks

if TYPE_CHECKING:
    from ..models.model import Model

DEFAULT_BLOCK = 1024  # input pixels per block side for numpy-backed input

# The default tile (input pixels per side of the global tile grid) is the largest multiple
# of TILE_STEP up to MAX_TILE whose activations fit the memory budget of one tile:
MAX_TILE = 256  # beyond it the halo's share of the work is small: the lite networks do
# 9-10 % fewer MACs per output pixel at 256 than at 128, and barely fewer at 512
TILE_STEP = 32
LARGEST_TILE = 8192  # the largest tile= accepted, input pixels (activations grow with its area)
MEMORY_SHARE = 4  # one tile's activations take at most a quarter of the memory there is:
# the rest holds the process (torch, the weights), the block's input and output, Dask
CPU_TILE_BYTES = 256 << 20  # and at most 256 MiB on a CPU: there a tile of that size
# runs fastest per pixel (its working set stays in cache: `benchmarks/bench_tile.py`), and
# the halo's share of the work, which grows as tiles shrink, is mostly at 10 m and cheap
BLOCKS_PER_SLOT = 4  # chunks="auto" splits blocks until each parallel slot has this many


def _as_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise OptionError(f"{name} must be an int, not {value!r}")
    return int(value)


def _check_device(device) -> None:
    """Refuse a device string torch cannot parse now, not later inside a dask task.

    Only the syntax: "cuda" may be meant for workers that have a GPU the client lacks.
    """
    if device == "auto":
        return
    import torch

    try:
        torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise OptionError(
            f"device {device!r} is not a torch device: use 'auto', 'cpu', 'cuda' or 'cuda:1'"
        ) from None


def default_tile(
    model: Model, *, batch_size: int = 1, scene: tuple[int, int] | None = None
) -> tuple[int, str]:
    """The tile size ``segment`` uses when ``tile`` is not given, and why.

    The largest multiple of 32 (and of ``model.align``) up to 256 input pixels whose
    activations — measured by :meth:`Model.activation_bytes` — fit one tile's share of the
    memory: a quarter of what this process may use (see
    :func:`xjointseg._system.available_memory`: a Dask worker's memory limit, the cgroup
    limit, the available system memory), shared by the tiles that run at once (on a CPU one
    per torch thread), and at most 256 MiB on a CPU, where such a tile is the fastest per
    pixel; on a GPU, a quarter of its free memory, shared by the ``batch_size`` tiles of a
    batch. Never larger than the scene needs. A model without ``activation_bytes`` gets 256.

    Examples
    --------
    >>> from xjointseg.testing import toy_model
    >>> tile, why = default_tile(toy_model())
    >>> tile % 32 == 0 and 32 <= tile <= 256
    True
    """
    step = math.lcm(TILE_STEP, int(model.align))
    candidates = list(range(step, max(MAX_TILE, step) + 1, step))
    if scene is not None:  # a tile beyond the scene would only compute fill
        need = -(-max(scene) // step) * step
        candidates = [t for t in candidates if t <= need] or candidates[:1]
    if not hasattr(model, "activation_bytes"):
        return candidates[-1], "the model does not report its activation memory"
    memory, source = _memory_there_is(model)
    at_once = _tiles_at_once(model, batch_size)
    if source == "free GPU memory":
        budget, why = memory // MEMORY_SHARE // at_once, source
    else:
        budget = min(memory // MEMORY_SHARE // at_once, CPU_TILE_BYTES)
        why = source if budget < CPU_TILE_BYTES else "the CPU cap of 256 MiB per tile"
        why += f", {at_once} tiles at once"
    # activations grow with the tile: bisect for the largest candidate that fits
    lo, hi = 0, len(candidates) - 1
    if model.activation_bytes(candidates[0]) > budget:
        hi = 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if model.activation_bytes(candidates[mid]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    tile = candidates[lo]
    return tile, f"{tile} px: {model.activation_bytes(tile) / 2**20:.0f} MiB per tile ({why})"


def _memory_there_is(model: Model) -> tuple[int, str]:
    """Bytes the model's tiles may draw on, and where that figure comes from: the free
    memory of its GPU, or what this process may use (:func:`available_memory`)."""
    device = getattr(model, "device", None)
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0], "free GPU memory"
    return available_memory()


def _tiles_at_once(model: Model, batch_size: int) -> int:
    """How many tiles' activations are alive at once: a batch on a GPU; on the CPU one tile
    per torch thread (:mod:`xjointseg.models._threads`), whatever the batch."""
    import torch

    from ..models.model import Model

    on_cpu = getattr(getattr(model, "device", None), "type", "cpu") == "cpu"
    if on_cpu and isinstance(model, Model):
        return torch.get_num_threads()
    return max(batch_size, 1)  # a GPU, or a model of its own: one batch at a time


def _check_tile_memory(model: Model, tile: int, batch_size: int) -> None:
    """Refuse a tile whose activations cannot fit the memory there is (before any work)."""
    if not hasattr(model, "activation_bytes"):
        return
    memory, source = _memory_there_is(model)
    need = model.activation_bytes(tile) * _tiles_at_once(model, batch_size)
    if need > memory:
        raise OptionError(
            f"tile={tile} needs {need / 2**30:.3g} GiB of activations at once, more than "
            f"the {memory / 2**30:.3g} GiB there is ({source}): pick a smaller tile, or leave "
            "tile unset (segment picks the largest that fits)"
        )


def _model_block_params(
    model: Model, tile: int | None, halo: int | None, batch_size: int, scene: tuple[int, int]
):
    given = tile is not None
    if tile is None:
        tile, _ = default_tile(model, batch_size=batch_size, scene=scene)
    tile = _as_int(tile, "tile")
    if tile < 1 or tile % model.align:
        raise OptionError(
            f"tile={tile} must be a positive multiple of the model's align ({model.align})"
        )
    if given:
        if tile > LARGEST_TILE:
            raise OptionError(
                f"tile={tile} is larger than any tile segment runs ({LARGEST_TILE} px, "
                f"{LARGEST_TILE * 10 / 1000:g} km of input): pick a smaller tile, or leave "
                "tile unset"
            )
        _check_tile_memory(model, tile, batch_size)
    halo = model.halo if halo is None else _as_int(halo, "halo")
    if halo < 0:
        raise OptionError(f"halo must be >= 0, got {halo}")
    return tile, halo


def segment(
    obj: xr.Dataset | xr.DataArray,
    model: str | Model = "jointseg",
    *,
    output: Literal["mask", "probability"] = "mask",
    halo: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    tile: int | None = None,
    chunks: Literal["auto", "keep"] | int = "auto",
    precision: Literal["auto", "fp32", "bf16"] = "auto",
) -> xr.DataArray:
    """Map impervious surfaces at 1 m from 10 m Sentinel-2, lazily.

    Parameters
    ----------
    obj : xarray.Dataset or xarray.DataArray
        Sentinel-2 DN (reflectance x 10000, L2A). A Dataset of band variables (``B02``... or
        ``blue, green, red, nir``), or a DataArray with a labelled ``band`` dimension. Dims
        ``(y, x)`` or ``(time, y, x)``, a projected CRS, 10 m pixels. NaN or the declared
        ``nodata`` attribute marks missing pixels.
    model : str or Model
        ``"jointseg"`` (bundled), ``"bilinear"`` (the baseline), a weights path, or a loaded
        :class:`~xjointseg.Model`.
    output : {"mask", "probability"}
        ``"mask"``: uint8, 0 not ISA, 1 ISA, 255 nodata, decided by the model's mask rule
        (``model.mask_rule``: a threshold, or each 10 m pixel's expected ISA allocated to its
        highest-ranked 1 m pixels). ``"probability"``: float32 in [0, 1], NaN for nodata.
    halo : int, optional
        Input pixels of context exchanged between blocks; defaults to the model's receptive
        field radius (``model.halo``), which makes the result independent of chunking. A
        smaller value is faster but results then change near block edges.
    batch_size : int, optional
        Tiles per call of the model; default 8 on GPU, and on the CPU as many as torch has
        threads (there each tile runs alone on one torch thread, the tiles side by side).
    device : str
        ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda"``...
    tile : int, optional
        Input pixels per tile side of the global tile grid. By default the largest multiple
        of 32 up to 256 whose activations (measured for this model) fit a quarter of the
        memory this process or Dask worker may use, shared by the tiles that run at once,
        and at most 256 MiB on a CPU (64 px for the bundled networks) — see
        :func:`default_tile`; ``result.attrs["tile"]`` says which. For a given tile the
        result is bit-identical whatever the chunking; other tiles change it only through
        floating-point rounding. Where memory is short the default follows the memory free
        at the call: pass ``tile=`` where runs must repeat exactly (e.g. resuming a cube).
    chunks : "auto", "keep" or int
        ``"auto"``: keep the input's dask chunks, moving their boundaries onto the tile grid
        (numpy input: blocks of 1024 px), then split blocks along the tile grid until each
        thread of the active ``distributed`` client has 4 of them, or until there are 4
        without a client (no extra model work: tiles do not depend on blocks). An int:
        blocks of about that many input pixels. ``"keep"``: use the input chunks unchanged,
        or raise :class:`ChunkError` if they do not fit the tile grid and the halo.
    precision : {"auto", "fp32", "bf16"}
        ``"auto"``: bf16 autocast on GPUs that support it, fp32 on every CPU (so every CPU
        gives the same mask, whatever its instruction set). Fixed where ``segment`` is
        called and named in ``attrs["precision"]`` and the fingerprint; with
        ``device="auto"`` and a ``distributed`` client, each worker decides for its own
        device and the attrs say ``"auto"``. On a CPU each tile runs on one torch thread, so
        results are bit-identical whatever the scheduler and thread count, in fp32 and bf16.
        ``"bf16"`` is faster on CPUs that compute it natively (AVX-512 BF16, AMX). The 10 m
        layers stay in fp32 under bf16, so masks differ from fp32 only where the decision is
        within rounding: under a threshold rule 99.98-99.99 % of the pixels agree on real
        scenes; under the shipped fraction rule 99.59-99.96 %, ISA moving between near-equal
        pixels inside a 10 m pixel, whose ISA count stays the same in 97.3-99.8 % of them.
        ``"fp32"`` for full precision everywhere.

    Returns
    -------
    xarray.DataArray
        Lazy, dims ``(y, x)`` or ``(time, y, x)`` on the 1 m grid: the input grid zoomed 10x
        (same CRS, same bounds, 10x the pixels per axis). ``attrs`` name the model and the
        sha256 of its weights.

    Examples
    --------
    >>> import xjointseg
    >>> from xjointseg.testing import synthetic_scene, toy_model
    >>> ds = synthetic_scene(48, 40)
    >>> isa = ds.isa.segment(model=toy_model())
    >>> isa.shape, isa.dtype.name, float(isa.x[1] - isa.x[0])
    ((480, 400), 'uint8', 1.0)
    """
    return plan_segment(**locals()).run()


@dataclass(frozen=True)
class SegmentPlan:
    """What :func:`segment` will compute, checked before any pixel is.

    Made by :func:`plan_segment`; :meth:`run` builds the lazy 1 m map. The plan says what a
    call will do before it does it: which tile and halo, how many blocks, on which model.
    """

    model: Model
    input: xr.DataArray  # the checked input, bands stacked on ``band``
    blocks: da.Array  # (period, band, y, x) on the blocks the model will run on
    periods: tuple[Hashable, ...]  # the leading non-spatial dims (empty: a single map)
    flips: Mapping[Hashable, slice]  # axes flipped to north-up, flipped back in the result
    nodata: tuple[float | None, ...]  # per band
    identity: tuple[Any, ...]  # what identifies each period's input (see _input_identity)
    source_items: str | None  # JSON of the source items per period, if the input has them
    output: Literal["mask", "probability"]
    tile: int
    halo: int
    batch_size: int
    device: str
    precision: Literal["auto", "fp32", "bf16"]

    def run(self) -> xr.DataArray:
        """The lazy 1 m map of :func:`segment` (computes nothing)."""
        result = segment_array(
            self.blocks,
            model=self.model,
            output=self.output,
            tile=self.tile,
            halo=self.halo,
            nodata=self.nodata,
            batch_size=self.batch_size,
            device=self.device,  # resolved on each worker: "auto" picks that worker's GPU
            precision=self.precision,  # resolved by each worker for its own device
        )
        gbox = self.input.odc.geobox
        s = self.model.scale
        hr = gbox.zoom_to(shape=(gbox.shape[0] * s, gbox.shape[1] * s))
        dims: tuple[Hashable, ...] = (*self.periods, *hr.dimensions)
        coords = self._coords(hr)
        out = xr.DataArray(
            result if self.periods else result[0],
            dims=dims,
            coords=coords,
            attrs=self._attrs(),
            name="isa",
        )
        out = out.odc.assign_crs(gbox.crs)
        if self.flips:  # back to the input's orientation
            ydim = self.input.odc.spatial_dims[0]
            out = out.isel({dims[-2 if d == ydim else -1]: f for d, f in self.flips.items()})
        return out

    def _coords(self, hr) -> dict[Hashable, Any]:
        """The 1 m grid's coordinates, the input's period coordinates and the fingerprint."""
        coords: dict[Hashable, Any] = dict(xr_coords(hr, crs_coord_name="spatial_ref"))
        for name, coord in self.input.coords.items():  # time and its companions (labels)
            if name in ("band", "spatial_ref") or name in coords:
                continue
            if set(coord.dims) <= set(self.periods):  # scalar ones too: isel(time=0)
                coords[name] = coord
        setting = {
            "model_sha256": getattr(self.model, "sha256", ""),
            "model": getattr(self.model, "name", type(self.model).__name__),
            "bands": list(self.model.bands),
            "nodata": list(self.nodata),
            "output": self.output,
            "tile": self.tile,
            "halo": self.halo,
            "scale": self.model.scale,
        }
        if self.precision != "auto":  # "auto": resolved by each worker for its device
            setting["precision"] = self.precision
        fps = [_digest({"input": i, **setting}) for i in self.identity]
        fp = np.array(fps if self.periods else fps[0], dtype=object)
        coords[FINGERPRINT_COORD] = (self.periods, fp)
        return coords

    def _attrs(self) -> dict[str, Any]:
        m = self.model
        mask = self.output == "mask"
        attrs: dict[str, Any] = {
            "long_name": "impervious surface" if mask else "impervious surface probability",
            "model": getattr(m, "name", type(m).__name__),
            "model_sha256": getattr(m, "sha256", ""),
            "model_halo": m.halo,
            "scale": m.scale,
            "tile": self.tile,
            "halo": self.halo,
            "precision": self.precision,
            "xjointseg_version": __version__,
        }
        if mask:
            attrs.update(nodata=NODATA, flag_values=list(FLAG_VALUES), flag_meanings=FLAG_MEANINGS)
        if self.source_items is not None:
            attrs["source_items"] = self.source_items
        return attrs


def plan_segment(
    obj: xr.Dataset | xr.DataArray,
    model: str | Model = "jointseg",
    *,
    output: Literal["mask", "probability"] = "mask",
    halo: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    tile: int | None = None,
    chunks: Literal["auto", "keep"] | int = "auto",
    precision: Literal["auto", "fp32", "bf16"] = "auto",
) -> SegmentPlan:
    """Check everything :func:`segment` is given and return the plan of the computation.

    Takes :func:`segment`'s arguments, loads the model, checks the input and chooses the
    tile and the blocks; computes no pixel (in-memory input has its values checked here).
    Raises what :func:`segment` raises for bad input.

    Examples
    --------
    >>> from xjointseg.testing import synthetic_scene, toy_model
    >>> plan = plan_segment(synthetic_scene(48, 40), toy_model(), tile=32)
    >>> plan.tile, plan.halo, plan.blocks.numblocks[2:]
    (32, 3, (1, 1))
    """
    _check_options(obj, output, batch_size, precision, chunks, device)
    from ..models.model import load_model  # torch: imported on the first call, not before

    m = load_model(model, device=device)
    arr, nodata, others, flips = checked_input(obj, m.bands)
    if precision != "auto" and "precision" not in inspect.signature(m.predict).parameters:
        raise OptionError(
            f"precision={precision!r} needs a model whose predict() takes precision=; "
            f"{type(m).__name__}.predict does not: leave precision='auto'"
        )
    if precision == "auto" and hasattr(m, "resolve_precision"):
        if device != "auto" or not dask_client_active():
            # the map is computed on this machine's kind of device: fix the precision here,
            # so that attrs and the fingerprint name it (workers of a distributed client
            # with device="auto" each resolve it for their own device)
            precision = cast(Literal["fp32", "bf16"], m.resolve_precision("auto"))
    if batch_size is None:
        on_gpu = getattr(getattr(m, "device", None), "type", "cpu") == "cuda"
        batch_size = 8 if on_gpu else _tiles_at_once(m, 1)
    tile, halo = _model_block_params(m, tile, halo, batch_size, arr.odc.geobox.shape)
    data = arr.data if others else arr.data[None]  # (period, band, y, x)
    return SegmentPlan(
        model=m,
        input=arr,
        blocks=_blocks(data, chunks, tile, halo, tuple(nodata), tuple(m.bands)),
        periods=tuple(others),
        flips=dict(flips),
        nodata=tuple(nodata),
        identity=tuple(_input_identity(obj, data, others, m.bands)),
        source_items=_source_items(obj),
        output=output,
        tile=tile,
        halo=halo,
        batch_size=int(batch_size),
        device=device,
        precision=precision,
    )


def _check_options(obj, output, batch_size, precision, chunks, device) -> None:
    """The options that need neither the model nor the input's values."""
    if output not in OUTPUT_KINDS:
        raise OptionError(f"output must be one of {OUTPUT_KINDS}, not {output!r}")
    if batch_size is not None and _as_int(batch_size, "batch_size") < 1:
        raise OptionError(f"batch_size must be >= 1, got {batch_size}")
    if precision not in PRECISIONS:
        raise OptionError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if isinstance(obj, xr.Dataset | xr.DataArray) and 0 in obj.sizes.values():
        raise EmptyInputError(f"the input has no pixels (sizes {dict(obj.sizes)})")
    if isinstance(chunks, bool) or not (
        chunks in ("auto", "keep") or (isinstance(chunks, int | np.integer) and chunks >= 1)
    ):
        raise OptionError(f"chunks must be 'auto', 'keep' or an int >= 1, not {chunks!r}")
    _check_device(device)


def _blocks(data, chunks, tile: int, halo: int, nodata: tuple, bands: tuple) -> da.Array:
    """``(period, band, y, x)`` data on blocks whose edges lie on the tile grid.

    In-memory values are checked now; lazy ones by each block when it is computed.
    """
    lazy = isinstance(data, da.Array)
    if not lazy:
        check_scale(np.asarray(data), list(nodata), list(bands))
        size = DEFAULT_BLOCK if chunks in ("auto", "keep") else int(chunks)
        data = da.from_array(data, chunks=(1, -1, size, size))
    elif isinstance(chunks, int):
        data = data.rechunk((1, -1, chunks, chunks))
    plan = [
        plan_chunks(n, c, tile=tile, halo=halo, keep=chunks == "keep")
        for n, c in zip(data.shape[2:], data.chunks[2:], strict=True)
    ]
    if chunks == "auto":  # enough blocks to keep every parallel slot busy to the end
        plan = split_chunks(
            plan,
            tile=tile,
            halo=halo,
            min_blocks=-(-BLOCKS_PER_SLOT * parallel_slots() // data.shape[0]),
        )
    data = data.rechunk((1, -1, *plan))
    if lazy:
        data = data.map_blocks(checked_block, nodata=nodata, names=bands, dtype=data.dtype)
    return data


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _source_items(obj: xr.Dataset | xr.DataArray) -> str | None:
    """Item ids per period label, as JSON, from load_sentinel2's (or a cube's) attrs."""
    value = obj.attrs.get("source_items", obj.attrs.get("stac_items"))
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _input_identity(obj, data, others, bands) -> list:
    """What identifies each period's input: the bytes when the values are in memory (so
    neither chunking nor other periods enter it); for bands load_sentinel2 made and nothing
    changed since, its recipe (items, grid, options: chunking does not enter it either),
    with the grid and period labels the input has now; else dask's deterministic token of
    the period's slice (the same for the same lazy computation).

    Source items alone would not do: a band changed after loading keeps its attrs.
    """
    n = data.shape[0] if others else 1
    # data is (period, band, y, x) here, also for a single period
    variables = obj.data_vars.values() if isinstance(obj, xr.Dataset) else [obj]
    loaded = all(in_memory(v.data) for v in variables)
    if not loaded and isinstance(obj, xr.Dataset) and others:
        names = [find_band(b, list(obj.data_vars)) for b in bands]
        recipes = recipe_digests([obj[name].data for name in names if name is not None])
        if recipes is not None and len(recipes) == n:
            grid, labels = str(obj.odc.geobox), obj[others[0]].values
            return [
                _digest([r, grid, str(label)]) for r, label in zip(recipes, labels, strict=True)
            ]
    return [period_digest(data, t, loaded) for t in range(n)]

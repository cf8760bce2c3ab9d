"""Xarray level: check the input, pick the model's bands, segment lazily, put the result on
the exact 1 m grid.

Everything that can be wrong with the input is checked here, before any pixel is computed.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Literal

import dask.array as da
import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from . import __version__
from ._dask import plan_chunks, segment_array
from .errors import (
    BandError,
    ChunkError,
    CRSError,
    DimensionError,
    DTypeError,
    EmptyInputError,
    GridError,
    OptionError,
)
from .models.model import OUTPUT_KINDS, Model, load_model

# Sentinel-2 band names and the names archives also use for them (odc-stac / Earth Search
# common names and asset keys).
BAND_ALIASES: dict[str, tuple[str, ...]] = {
    "B01": ("coastal",),
    "B02": ("blue",),
    "B03": ("green",),
    "B04": ("red",),
    "B05": ("rededge1", "rededge"),
    "B06": ("rededge2",),
    "B07": ("rededge3",),
    "B08": ("nir", "nir08"),
    "B8A": ("nir08", "rededge4", "narrow_nir"),
    "B09": ("nir09", "watervapor"),
    "B11": ("swir16",),
    "B12": ("swir22",),
}

DEFAULT_BLOCK = 1024  # input pixels per block side for numpy-backed input
DEFAULT_TILE = 256  # input pixels per tile side (the global tile grid)
INPUT_RESOLUTION = 10.0  # metres: what the networks were built for


def _names_for(band: str) -> tuple[str, ...]:
    return (band, *BAND_ALIASES.get(band.upper(), ()))


def _find(band: str, available: Sequence[Hashable]) -> Hashable | None:
    lookup = {str(a).lower(): a for a in available}
    for name in _names_for(band):
        if name.lower() in lookup:
            return lookup[name.lower()]
    return None


def _nodata_of(var: xr.DataArray) -> float | None:
    for value in (
        var.attrs.get("nodata"),
        var.encoding.get("_FillValue"),
        var.attrs.get("_FillValue"),
    ):
        if value is not None:
            return float(value)
    return None


def _stack_bands(obj: xr.Dataset | xr.DataArray, bands: Sequence[str]):
    """Return ``(DataArray with a 'band' dim in model order, per-band nodata)``."""
    if isinstance(obj, xr.Dataset):
        names = []
        for band in bands:
            found = _find(band, list(obj.data_vars))
            if found is None:
                raise BandError(
                    f"band {band} (or {'/'.join(_names_for(band)[1:]) or 'an alias'}) is missing: "
                    f"the Dataset has {sorted(map(str, obj.data_vars))}. Load it too, e.g. "
                    f"odc.stac.load(..., bands=[...])."
                )
            names.append(found)
        nodata = [_nodata_of(obj[n]) for n in names]
        arr = xr.concat([obj[n] for n in names], dim="band", coords="minimal", compat="override")
        arr.attrs = {}
        return arr.assign_coords(band=list(bands)), nodata

    if not isinstance(obj, xr.DataArray):
        raise DimensionError(f"segment takes an xarray Dataset or DataArray, not {type(obj)}")
    if "band" not in obj.dims:
        lookalike = [
            d
            for d in obj.dims
            if str(d).lower() in ("bands", "channel", "channels", "b", "variable", "spectral")
        ]
        hint = f" Rename it: da.rename({{'{lookalike[0]}': 'band'}})." if lookalike else ""
        raise DimensionError(
            f"a DataArray needs a 'band' dimension holding the bands {tuple(bands)}; "
            f"it has dims {obj.dims}.{hint}"
        )
    if "band" not in obj.coords:
        raise BandError(
            "the 'band' dimension has no labels: name the bands, e.g. "
            f"da.assign_coords(band={list(bands)})"
        )
    if obj.chunks is not None and len(obj.chunksizes["band"]) > 1:
        raise ChunkError(
            "the band dimension is split into several chunks; each block needs all bands: "
            "use da.chunk(band=-1)"
        )
    labels = [str(b) for b in obj["band"].values]
    picks = []
    for band in bands:
        found = _find(band, labels)
        if found is None:
            raise BandError(f"band {band} is missing: the DataArray has bands {labels}")
        picks.append(labels.index(found))
    nd = _nodata_of(obj)
    return obj.isel(band=picks).assign_coords(band=list(bands)), [nd] * len(bands)


def _check_grid(arr: xr.DataArray) -> tuple[GeoBox, tuple[Hashable, ...]]:
    """Return the 10 m GeoBox and the non-spatial leading dims; raise on a bad grid."""
    crs = arr.odc.crs
    if crs is None:
        raise CRSError(
            "the input has no CRS: attach it, e.g. ds.odc.assign_crs('EPSG:32633') "
            "(odc-stac and rioxarray set it when loading)"
        )
    if crs.geographic:
        raise CRSError(
            f"the input CRS {crs} is in degrees; the model needs metres: reproject to a "
            "projected CRS such as the local UTM zone (odc.stac.load(..., crs='utm') or "
            "ds.odc.reproject(...))"
        )
    ydim, xdim = arr.odc.spatial_dims
    others = tuple(d for d in arr.dims if d not in (ydim, xdim, "band"))
    if len(others) > 1:
        raise DimensionError(
            f"dims must be (y, x) or (time, y, x) plus 'band'; got {arr.dims}: select or "
            f"stack the extra dimensions {others[:-1]}"
        )
    for dim in (ydim, xdim):
        coord = np.asarray(arr[dim].values, dtype="float64")
        if coord.size > 2:
            step = np.diff(coord)
            if not np.allclose(step, step[0], rtol=1e-6, atol=1e-6 * abs(step[0])):
                raise GridError(
                    f"the {dim} coordinate is not evenly spaced: the input must be a regular "
                    "raster (resample with odc-geo or rioxarray first)"
                )
    gbox = arr.odc.geobox
    if gbox is None or not isinstance(gbox, GeoBox):
        raise GridError("cannot derive a regular grid from the input coordinates")
    aff = gbox.affine
    if abs(aff.b) > 1e-9 * abs(aff.a) or abs(aff.d) > 1e-9 * abs(aff.e):
        raise GridError("the grid is rotated; reproject it to a north-up grid first")
    res = gbox.resolution
    if not (np.isclose(abs(res.x), INPUT_RESOLUTION) and np.isclose(abs(res.y), INPUT_RESOLUTION)):
        raise GridError(
            f"the input has {abs(res.x):g} x {abs(res.y):g} m pixels; the model needs "
            f"Sentinel-2's {INPUT_RESOLUTION:g} m grid: load with resolution=10"
        )
    return gbox, others


def _check_dtype(arr: xr.DataArray) -> None:
    kind = arr.dtype.kind
    if kind not in "uif":
        raise DTypeError(
            f"input dtype {arr.dtype} cannot hold reflectance: use integer DN (e.g. uint16) "
            "or floating point values"
        )


def _model_block_params(model: Model, tile: int | None, halo: int | None):
    tile = DEFAULT_TILE if tile is None else int(tile)
    if tile < 1 or tile % model.align:
        raise OptionError(
            f"tile={tile} must be a positive multiple of the model's align ({model.align})"
        )
    halo = model.halo if halo is None else int(halo)
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
        ``"mask"``: uint8, 0 not ISA, 1 ISA, 255 nodata. ``"probability"``: float32 in
        [0, 1], NaN for nodata.
    halo : int, optional
        Input pixels of context exchanged between blocks; defaults to the model's receptive
        field radius (``model.halo``), which makes the result independent of chunking. A
        smaller value is faster but results then change near block edges.
    batch_size : int, optional
        Tiles per forward pass; default 1 on CPU, 8 on GPU.
    device : str
        ``"auto"`` (CUDA if present), ``"cpu"``, ``"cuda"``...
    tile : int, optional
        Input pixels per tile side of the global tile grid (default 256). Results depend on
        the tile size only through floating-point rounding.
    chunks : "auto", "keep" or int
        ``"auto"``: keep the input's dask chunks, moving their boundaries onto the tile grid
        (numpy input: blocks of 1024 px). An int: blocks of about that many input pixels.
        ``"keep"``: use the input chunks unchanged, or raise :class:`ChunkError` if they do not
        fit the tile grid and the halo.

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
    if output not in OUTPUT_KINDS:
        raise OptionError(f"output must be one of {OUTPUT_KINDS}, not {output!r}")
    if batch_size is not None and int(batch_size) < 1:
        raise OptionError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(obj, xr.Dataset | xr.DataArray) and 0 in obj.sizes.values():
        raise EmptyInputError(f"the input has no pixels (sizes {dict(obj.sizes)})")
    m = load_model(model, device=device)
    arr, nodata = _stack_bands(obj, m.bands)
    _check_dtype(arr)
    gbox, others = _check_grid(arr)
    tile, halo = _model_block_params(m, tile, halo)
    if batch_size is None:
        on_gpu = getattr(getattr(m, "device", None), "type", "cpu") == "cuda"
        batch_size = 8 if on_gpu else 1

    ydim, xdim = arr.odc.spatial_dims
    arr = arr.transpose(*others, "band", ydim, xdim)
    data = arr.data
    if not others:
        data = data[None]
    if not isinstance(data, da.Array):
        size = DEFAULT_BLOCK if chunks in ("auto", "keep") else int(chunks)
        data = da.from_array(data, chunks=(1, -1, size, size))
    elif isinstance(chunks, int):
        data = data.rechunk((1, -1, chunks, chunks))
    keep = chunks == "keep"
    plan = [
        plan_chunks(n, c, tile=tile, halo=halo, keep=keep)
        for n, c in zip(data.shape[2:], data.chunks[2:], strict=True)
    ]
    data = data.rechunk((1, -1, *plan))
    result = segment_array(
        data,
        model=m,
        output=output,
        tile=tile,
        halo=halo,
        nodata=nodata,
        batch_size=batch_size,
        device=device,  # resolved on each worker: "auto" picks that worker's GPU
    )
    if not others:
        result = result[0]

    s = m.scale
    hr = gbox.zoom_to(shape=(gbox.shape[0] * s, gbox.shape[1] * s))
    coords = dict(xr_coords(hr, crs_coord_name="spatial_ref"))
    dims: tuple[Hashable, ...] = (*others, *hr.dimensions)
    for name, coord in arr.coords.items():  # time and its companions (e.g. period labels)
        if name != "band" and coord.dims and set(coord.dims) <= set(others):
            coords[name] = coord
    attrs = {
        "long_name": "impervious surface" if output == "mask" else "impervious surface probability",
        "model": getattr(m, "name", type(m).__name__),
        "model_sha256": getattr(m, "sha256", ""),
        "model_halo": m.halo,
        "scale": s,
        "tile": tile,
        "halo": halo,
        "xjointseg_version": __version__,
    }
    if output == "mask":
        attrs.update(nodata=255, flag_values=[0, 1], flag_meanings="not_impervious impervious")
    out = xr.DataArray(result, dims=dims, coords=coords, attrs=attrs, name="isa")
    return out.odc.assign_crs(gbox.crs)

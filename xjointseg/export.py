"""Export one period of an ISA map as a Cloud-Optimized GeoTIFF (COG) for GIS tools.

The map is streamed block by block into a tiled scratch GeoTIFF beside the target, then
GDAL's COG driver lays it out with overviews (nearest or mode: the mask is categorical, so
no averaging), and the finished file is renamed into place. Memory stays bounded by a few
blocks whatever the scene size, and a failed export never leaves a partial file under the
target name.

GDAL rather than odc-geo's ``save_cog_with_dask``: that writer pads the raster to a multiple
of the overview factors (the file would be larger than the map), writes neither GDAL's COG
layout marker nor dataset-level GDAL metadata (the model and period tags), and its local-file
sink has every Dask worker write parts beside the target (a filesystem shared with the
workers). Here the blocks are computed wherever Dask runs them and written by this process.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import dask
import dask.array as da
import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from ._version import __version__
from .errors import OptionError, XJointSegError
from .paths import check_writable
from .progress import bar as progress_bar
from .schema import NODATA, check_255_declared, check_isa_values, checked_geobox, select_period

if TYPE_CHECKING:
    from odc.geo.crs import CRS

__all__ = ["ExportError", "ExportExistsError", "to_cog"]

RESAMPLINGS = ("nearest", "mode")
COMPRESSIONS = ("deflate", "zstd", "lzw", "lerc", "none")
MEMORY_BUDGET = 256 * 2**20  # bytes of blocks computed at once before they are written
# GIS viewers show the mask without styling: not ISA light grey, ISA red, nodata transparent
COLORMAP = {0: (235, 235, 235, 255), 1: (200, 30, 45, 255), NODATA: (0, 0, 0, 0)}


class ExportError(XJointSegError, ValueError):
    """The map cannot be written as a COG as given (dims, dtype, grid, several periods)."""


class ExportExistsError(XJointSegError, FileExistsError):
    """The COG's path is taken and ``overwrite`` is False, or by a file xjointseg did not write."""


SOFTWARE_TAG = "software"  # GeoTIFF tag whose value starts with "xjointseg" in our COGs


def is_own_cog(path: str | os.PathLike) -> bool:
    """True for a GeoTIFF that :func:`to_cog` wrote (its tags say so)."""
    import rasterio

    try:
        with rasterio.open(path) as src:
            return str(src.tags().get(SOFTWARE_TAG, "")).startswith("xjointseg")
    except rasterio.errors.RasterioError:
        return False


def _one_map(isa: Any, period: Any) -> tuple[xr.DataArray, Any]:
    """The 2-D (y, x) map to write and its period label (None for a 2-D input)."""
    if isinstance(isa, xr.Dataset):
        raise ExportError(
            "to_cog writes a DataArray: pass the ISA map, e.g. ds['isa'] or the result of "
            "segment() / open_cube()"
        )
    if not isinstance(isa, xr.DataArray):
        raise ExportError(f"to_cog takes an xarray DataArray, not {type(isa).__name__}")
    if isa.odc.crs is None:
        raise ExportError(
            "the map has no CRS: attach it with isa.odc.assign_crs(...) (segment() sets it)"
        )
    if isa.ndim == 2:
        if period is not None:
            raise OptionError("period= selects along a period dimension; this map has none")
        # a period picked out of a cube keeps its label as a scalar coordinate
        scalar = [n for n in ("time", "period", "year") if n in isa.coords and isa[n].ndim == 0]
        return isa, isa[scalar[0]].values if scalar else None
    if isa.ndim != 3:
        raise ExportError(f"to_cog writes a (y, x) or (period, y, x) map; got dims {isa.dims}")
    pdim = isa.dims[0]
    if period is None:
        if isa.sizes[pdim] != 1:
            labels = [str(v)[:10] for v in isa[pdim].values] if pdim in isa.coords else []
            raise ExportError(
                f"the map holds {isa.sizes[pdim]} periods along {pdim!r} {labels}; a GeoTIFF "
                "takes one: pass period= (a position such as -1, or a label)"
            )
        one = isa.isel({pdim: 0})
    else:
        one = select_period(isa, period)
    label = one[pdim].values if pdim in one.coords else None
    return one, label


def _check_grid(one: xr.DataArray) -> GeoBox:
    """The map's GeoBox: (y, x) dims on a regular, axis-aligned grid."""
    # dims are known only on a grid; a transposed map is told so, rotated or not
    if isinstance(one.odc.geobox, GeoBox) and one.dims != tuple(one.odc.spatial_dims):
        raise ExportError(f"the map's dims must be (y, x); got {one.dims}")
    return checked_geobox(
        one,
        ExportError,
        "the map is not on a regular grid (evenly spaced x and y)",
        rotated="the map's grid is rotated; reproject it north-up first",
    )


def _label_text(label: Any) -> str | None:
    if label is None:
        return None
    value = np.asarray(label)
    if np.issubdtype(value.dtype, np.datetime64):
        return str(value.astype("datetime64[D]"))
    return str(value.item() if value.ndim == 0 else value)


def _sources_text(sources: Any, labels: tuple[str, ...]) -> str:
    """The source item ids of the period written, as JSON: from a mapping period -> items,
    the entry of this period's label; else what the map says (a list of ids)."""
    if sources is None:
        return ""
    if isinstance(sources, str):
        try:
            sources = json.loads(sources)
        except ValueError:
            return sources
    if isinstance(sources, dict):
        mine = [sources[k] for k in labels if k in sources]
        sources = mine[0] if mine else sources
    return json.dumps(sources, default=str, sort_keys=True)


def _aligned(data: da.Array, blocksize: int) -> da.Array:
    """Rechunk so every dask block covers whole TIFF tiles: no tile is written twice."""
    sizes = []
    for chunks in data.chunks:
        step = max(blocksize, round(max(chunks) / blocksize) * blocksize)
        sizes.append(step)
    return data.rechunk(tuple(sizes))


def _write_scratch(
    data: da.Array, path: Path, gbox: GeoBox, blocksize: int, tags: dict, progress: bool
) -> None:
    import rasterio
    from rasterio.windows import Window

    profile = {
        "driver": "GTiff",
        "width": gbox.shape[1],
        "height": gbox.shape[0],
        "count": 1,
        "dtype": "uint8",
        "crs": cast("CRS", gbox.crs).to_wkt(),  # to_cog refused a map without a CRS
        "transform": gbox.affine,
        "nodata": NODATA,
        "tiled": True,
        "blockxsize": blocksize,
        "blockysize": blocksize,
        # fast and small: the scratch file is read once more, by the COG driver
        "compress": "deflate",
        "zlevel": 1,
        "bigtiff": "if_safer",
    }
    offsets = [np.cumsum((0, *c[:-1])) for c in data.chunks]
    blocks = [(iy, ix) for iy in range(data.numblocks[0]) for ix in range(data.numblocks[1])]
    biggest = max(data.chunks[0]) * max(data.chunks[1])
    # several blocks per compute keep all threads/workers busy; the budget bounds memory
    batch = max(1, MEMORY_BUDGET // max(biggest, 1))
    with rasterio.open(path, "w", **profile) as dst:
        dst.update_tags(**tags)
        dst.set_band_description(1, "impervious surface: 0 not ISA, 1 ISA, 255 nodata")
        dst.write_colormap(1, COLORMAP)
        bar = progress_bar(len(blocks), desc="COG", unit="block", enabled=progress)
        for start in range(0, len(blocks), batch):
            part = blocks[start : start + batch]
            values = dask.compute(*(data.blocks[iy, ix] for iy, ix in part))
            for (iy, ix), block in zip(part, values, strict=True):
                # the scratch file is dropped on error: the target is never half written
                check_isa_values(block, "the map")
                window = Window(
                    int(offsets[1][ix]), int(offsets[0][iy]), block.shape[1], block.shape[0]
                )
                dst.write(np.asarray(block, dtype=np.uint8), 1, window=window)
            bar.update(len(part))
        bar.close()


def to_cog(
    isa: xr.DataArray,
    path: str | os.PathLike,
    *,
    period: int | Any = None,
    overview_resampling: Literal["nearest", "mode"] = "nearest",
    blocksize: int = 512,
    compress: str = "deflate",
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write one period of an ISA mask as a Cloud-Optimized GeoTIFF with overviews.

    Parameters
    ----------
    isa : xarray.DataArray
        uint8 ISA mask (0 not ISA, 1 ISA, 255 nodata) with a CRS, as
        :func:`~xjointseg.segment` or :func:`~xjointseg.open_cube` return it: ``(y, x)``, or
        ``(period, y, x)`` with one period (or several and ``period=``). Lazy maps are
        computed block by block while writing.
    path : str or path
        Local file to write (``.tif``); parent folders are created.
    period : int or label, optional
        Which period of a multi-period map: a position (``-1`` is the last) or a label (a
        partial date such as ``"2017"`` picks the one period it matches).
    overview_resampling : {"nearest", "mode"}
        How overview pixels are chosen; both keep the values 0/1/255 (``"mode"``: the most
        frequent valid value of the pixels covered, nodata excluded).
    blocksize : int
        Side of the internal tiles (a multiple of 16; 512 is usual for COGs).
    compress : {"deflate", "zstd", "lzw", "lerc", "none"}
        Compression of the tiles.
    overwrite : bool
        Replace an existing file (atomically, once the new one is complete).
    progress : bool
        Show a progress bar over the blocks (on stderr).

    Returns
    -------
    pathlib.Path
        The file written: tiled, with overviews, nodata 255 declared, the CRS and the
        transform of the map, a colour table, and tags naming the model, its sha256, the
        period (``period``, ``period_label``) and its source items (``source_items``).

    Raises
    ------
    ExportError
        The map is not a uint8 mask with a CRS on a regular north-up grid, or has several
        periods and no ``period=``.
    ExportExistsError
        ``path`` exists and ``overwrite`` is False.
    OptionError
        An option is out of range (period, resampling, blocksize, compression).

    Examples
    --------
    >>> import tempfile, rasterio, xjointseg
    >>> from xjointseg.testing import synthetic_scene, toy_model
    >>> isa = synthetic_scene(64, 64).isa.segment(model=toy_model())
    >>> cog = isa.isa.to_cog(tempfile.mkdtemp() + "/isa.tif")
    >>> with rasterio.open(cog) as src:
    ...     src.shape, src.nodata, src.crs.to_epsg(), src.overviews(1)
    ((640, 640), 255.0, 32633, [2])
    """
    one, label = _one_map(isa, period)
    if one.dtype != np.uint8:
        raise ExportError(
            f"to_cog writes the uint8 ISA mask (0, 1, 255 nodata), not {one.dtype}: "
            "for probabilities or fractions use rioxarray (arr.rio.to_raster(path, "
            "driver='COG'))"
        )
    if one.chunks is None:  # in memory: a 0/255 mask (255 meaning ISA) is seen here
        check_255_declared(one, "isa")
    _check_options(overview_resampling, compress, blocksize, path)
    gbox = _check_grid(one)
    target = _free_target(path, overwrite)
    data = one.data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data), chunks=(2048, 2048))
    data = _aligned(data, blocksize)
    tags = _tags(one, label)
    target.parent.mkdir(parents=True, exist_ok=True)
    stem = f".{target.name}.{uuid.uuid4().hex[:12]}"
    scratch = target.parent / f"{stem}.scratch.tif"
    staged = target.parent / f"{stem}.cog.tif"
    try:
        _write_scratch(data, scratch, gbox, blocksize, tags, progress)
        _write_cog(scratch, staged, gbox, blocksize, compress, overview_resampling)
        os.replace(staged, target)
    finally:
        scratch.unlink(missing_ok=True)
        staged.unlink(missing_ok=True)
    return target


def _check_options(overview_resampling: Any, compress: Any, blocksize: Any, path: Any) -> None:
    """Refuse options a COG cannot be written with, before any block is computed."""
    if overview_resampling not in RESAMPLINGS:
        raise OptionError(
            f"overview_resampling must be one of {RESAMPLINGS} (the mask is categorical), "
            f"not {overview_resampling!r}"
        )
    if compress not in COMPRESSIONS:
        raise OptionError(f"compress must be one of {COMPRESSIONS}, not {compress!r}")
    if isinstance(blocksize, bool) or not isinstance(blocksize, int) or blocksize < 16:
        raise OptionError(f"blocksize must be an int >= 16, not {blocksize!r}")
    if blocksize % 16:
        raise OptionError(f"blocksize must be a multiple of 16 (TIFF tiles), not {blocksize}")
    if not isinstance(path, str | os.PathLike) or "://" in os.fspath(path):
        raise OptionError(
            f"path must be a local file path, not {path!r}: write locally, then copy the "
            "file to object storage"
        )


def _free_target(path: str | os.PathLike, overwrite: bool) -> Path:
    """The absolute path to write: writable, and free or an earlier COG of ours to replace."""
    if not isinstance(overwrite, bool | np.bool_):
        raise OptionError(f"overwrite must be True or False, not {overwrite!r}")
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise ExportError(f"path must be a file name such as 'isa.tif', not {path!r}")
    if os.fspath(path).endswith(("/", os.sep)):
        raise ExportExistsError(
            f"{os.fspath(path)} ends with a separator, so it names a folder: give a file "
            f"name, e.g. {os.fspath(path)}isa.tif"
        )
    target = Path(path).expanduser().absolute()
    if target.is_dir():
        raise ExportExistsError(f"{target} is a folder: give a file name, e.g. {target}/isa.tif")
    check_writable(target)
    if target.exists() and not overwrite:
        raise ExportExistsError(
            f"{target} exists: pass overwrite=True to replace it, or pick another path"
        )
    if target.exists() and not is_own_cog(target):
        raise ExportExistsError(
            f"{target} exists and was not written by xjointseg: it is never replaced, "
            "overwrite=True or not. Pick another path, or remove it yourself"
        )
    return target


def _tags(one: xr.DataArray, label: Any) -> dict[str, str]:
    """The GeoTIFF tags: what the values mean, the model, the period and its sources."""
    text = _label_text(label)
    # the label a user knows the period by (load_sentinel2's "period", e.g. "2017")
    label_text = str(one["period"].values) if "period" in one.coords else text or ""
    return {
        "long_name": "impervious surface (ISA)",
        "flag_values": "0 1",
        "flag_meanings": "not_impervious impervious",
        "nodata": str(NODATA),
        "model": str(one.attrs.get("model", "")),
        "model_sha256": str(one.attrs.get("model_sha256", "")),
        "period": text or "",
        "period_label": label_text,
        "source_items": _sources_text(
            one.attrs.get("source_items", one.attrs.get("stac_items")), (label_text, text or "")
        ),
        SOFTWARE_TAG: f"xjointseg {__version__}",
    }


def _write_cog(
    scratch: Path,
    staged: Path,
    gbox: GeoBox,
    blocksize: int,
    compress: str,
    overview_resampling: str,
) -> None:
    """Lay the scratch GeoTIFF out as a COG with overviews."""
    import rasterio
    import rasterio.shutil

    levels = max(0, math.ceil(math.log2(max(gbox.shape) / blocksize)))
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        rasterio.shutil.copy(
            scratch,
            staged,
            driver="COG",
            compress=compress.upper(),
            blocksize=blocksize,
            overview_resampling=overview_resampling.upper(),
            # at least one overview level even for a scene smaller than two tiles
            overview_count=max(1, levels),
            bigtiff="IF_SAFER",
        )

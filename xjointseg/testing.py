"""Helpers for tests and examples: tiny models and georeferenced synthetic scenes.

Nothing here is needed to map ISA; it lets users and the test-suite exercise the engine
quickly, with inputs whose correct answer is known.
"""

from __future__ import annotations

import tempfile
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import OptionError
from .models.model import Model
from .models.toy import ToyNet
from .models.weights import save_model

BANDS_RGB = ("B04", "B03", "B02")


def toy_model(depth: int = 2, seed: int = 0, bands: tuple[str, ...] = BANDS_RGB) -> Model:
    """An untrained :class:`~xjointseg.models.toy.ToyNet` model held in memory (CPU)."""
    net = ToyNet(in_bands=len(bands), depth=depth, seed=seed)
    return Model.from_network(net, name=f"toy{depth}", bands=bands, device="cpu")


def toy_weights(
    path: str | Path | None = None, depth: int = 2, seed: int = 0, bands=BANDS_RGB
) -> Path:
    """Write a ToyNet weights file (to a temporary folder unless ``path``) and return its path."""
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="xjointseg-")) / f"toy{depth}.safetensors"
    net = ToyNet(in_bands=len(bands), depth=depth, seed=seed)
    save_model(net, path, name=f"toy{depth}", bands=bands)
    return Path(path)


def untrained_weights(path: str | Path, arch: str = "jointseg", size: str = "lite") -> Path:
    """Write a freshly initialised ``arch``/``size`` network as a weights file (for speed
    benchmarks: speed does not need training) and return its path."""
    from .models.architectures import build_network, default_config

    try:
        net = build_network(arch, **default_config(arch, size))
    except KeyError as err:  # unknown arch or size: the message lists the known ones
        raise OptionError(f"untrained_weights: {err.args[0]}") from None
    save_model(net, path, name=f"untrained-{arch}-{size}", bands=BANDS_RGB)
    return Path(path)


def synthetic_scene(
    ny: int = 64,
    nx: int = 80,
    *,
    times: int | None = None,
    bands: tuple[str, ...] = ("B02", "B03", "B04", "B08"),
    crs: str = "EPSG:32633",
    origin: tuple[float, float] = (330000.0, 5822040.0),
    resolution: float = 10.0,
    seed: int = 0,
    dtype: str = "uint16",
    nodata: int | None = 0,
) -> xr.Dataset:
    """A Sentinel-2-like Dataset on a north-up grid, as odc-stac would return it.

    Values are smooth random DN fields (blobs of bright 'built-up' and dark 'vegetation'),
    one variable per band, ``(y, x)`` or ``(time, y, x)`` when ``times`` is given.
    """
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_coords

    for what, n in (("ny", ny), ("nx", nx), ("times", times)):
        if n is None and what == "times":
            continue
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise OptionError(f"synthetic_scene: {what} must be a positive integer, not {n!r}")
    if not (isinstance(resolution, int | float) and np.isfinite(resolution) and resolution > 0):
        raise OptionError(f"synthetic_scene: resolution must be positive, not {resolution!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise OptionError(f"synthetic_scene: seed must be an integer >= 0, not {seed!r}")
    if isinstance(bands, str) or not bands or not all(isinstance(b, str) for b in bands):
        raise OptionError(
            f"synthetic_scene: bands must be a list of band names, e.g. ['B04'], not {bands!r}"
        )
    try:
        np.dtype(dtype)
    except TypeError:
        raise OptionError(f"synthetic_scene: dtype {dtype!r} is not a numpy dtype") from None
    try:
        x0, y0 = (float(v) for v in origin)
    except (TypeError, ValueError):
        raise OptionError(
            f"synthetic_scene: origin must be (x, y), the top-left corner, not {origin!r}"
        ) from None
    rng = np.random.default_rng(seed)
    try:
        gbox = GeoBox.from_bbox(
            (x0, y0 - ny * resolution, x0 + nx * resolution, y0), crs=crs, resolution=resolution
        )
        coords: dict[Hashable, Any] = xr_coords(gbox, crs_coord_name="spatial_ref")
        crs_ok = gbox.crs is not None and not gbox.crs.geographic
    except Exception as exc:  # pyproj's parse errors, odc-geo's grid errors
        raise OptionError(f"synthetic_scene: crs {crs!r} is not a CRS: {exc}") from None
    if not crs_ok:
        raise OptionError(
            f"synthetic_scene: crs must be a projected CRS in metres (e.g. EPSG:32633), not {crs!r}"
        )
    if gbox.shape != (ny, nx):  # a resolution that does not tile the extent exactly
        raise OptionError(
            f"synthetic_scene: resolution {resolution!r} gives a {gbox.shape} grid, not "
            f"{(ny, nx)}: use a resolution the grid holds exactly (10 for Sentinel-2)"
        )
    shape = (times, ny, nx) if times else (ny, nx)
    dims = ("time", "y", "x") if times else ("y", "x")
    if times:
        coords = {"time": np.arange(times).astype("datetime64[Y]").astype("datetime64[ns]")} | dict(
            coords
        )
    base = rng.normal(size=shape)
    kernel = np.ones(5) / 5
    for ax in (-1, -2):  # smooth along y and x: blobs a few pixels wide, like fields and towns
        # the centred part of the full convolution: numpy's mode="same" for any size (its
        # "same" returns 5 values for a line shorter than the kernel)
        base = np.apply_along_axis(
            lambda v: np.convolve(v, kernel, mode="full")[2 : 2 + v.size], ax, base
        )
    data = {}
    for i, band in enumerate(bands):
        values = 800 + 300 * i + 1500 * base + rng.normal(scale=60, size=shape)
        values = np.clip(values, 1, 10000).astype(dtype)
        var = xr.DataArray(values, dims=dims, coords=coords)
        if nodata is not None:
            var.attrs["nodata"] = nodata
        data[band] = var
    return xr.Dataset(data).odc.assign_crs(crs)

"""10 m reference products read onto a cube's grids (ESA WorldCover built-up)."""

from __future__ import annotations

import os
from typing import cast

import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from ..errors import OptionError, ReferenceRasterError, RegionOutsideError
from ..schema import NODATA


def read_worldcover(
    path: str, like: xr.DataArray | xr.Dataset | GeoBox, *, builtup: int = 50
) -> xr.DataArray:
    """ESA WorldCover built-up on another grid (e.g. a cube's 10 m fraction grid).

    Opens the tile with rioxarray, reads only the window that covers ``like`` and reprojects
    it with odc-geo (nearest neighbour: classes are not averaged).

    Parameters
    ----------
    path : str
        A WorldCover map GeoTIFF/COG (any rasterio path or URL).
    like : xarray object or GeoBox
        The target grid.
    builtup : int
        The built-up class (50 in WorldCover).

    Returns
    -------
    xarray.DataArray
        uint8 on ``like``'s grid: 1 built-up, 0 another class, 255 no data.

    Raises
    ------
    RegionOutsideError
        The tile does not cover any part of the grid.

    Examples
    --------
    >>> from xjointseg.change import fraction, read_worldcover
    >>> tile = "ESA_WorldCover_10m_2021_v200_N00E006_Map.tif"
    >>> frac = fraction(cube, 10)  # doctest: +SKIP
    >>> wc = read_worldcover(tile, frac)  # doctest: +SKIP
    >>> xjointseg.metrics.scores(frac >= 0.5, wc, ignore=255)  # doctest: +SKIP
    """
    import rasterio
    import rioxarray
    from odc.geo.geobox import GeoBox as _GeoBox
    from odc.geo.xr import wrap_xr
    from rioxarray.exceptions import NoDataInBounds, OneDimensionalRaster

    if not isinstance(path, str | os.PathLike):
        raise OptionError(
            f"path must be the WorldCover GeoTIFF's path or URL (str), not {type(path).__name__}"
        )
    if not isinstance(like, _GeoBox | xr.DataArray | xr.Dataset):
        raise OptionError(
            f"like must be an xarray object with a CRS or an odc-geo GeoBox (the grid to read "
            f"onto), not {type(like).__name__}"
        )
    gbox = like if isinstance(like, _GeoBox) else like.odc.geobox
    if gbox is None:
        raise OptionError("like has no georeferenced grid: give a map with a CRS, or a GeoBox")
    try:
        # lazy: only the clipped window below is ever read
        # a single GeoTIFF opens as a DataArray (not a Dataset or a list of them)
        tile = cast(xr.DataArray, rioxarray.open_rasterio(path)).squeeze("band", drop=True)
    except (rasterio.errors.RasterioIOError, OSError) as exc:
        raise ReferenceRasterError(
            f"cannot read {path} as a raster ({exc}): give the path of a WorldCover GeoTIFF "
            "tile (ESA_WorldCover_10m_..._Map.tif)"
        ) from None
    crs = tile.rio.crs.to_wkt()
    bounds = gbox.extent.to_crs(crs).boundingbox
    pad = 2 * abs(tile.rio.resolution()[0])  # whole source pixels around the target's edge
    try:
        window = tile.rio.clip_box(
            bounds.left - pad, bounds.bottom - pad, bounds.right + pad, bounds.top + pad
        )
    except (NoDataInBounds, OneDimensionalRaster):
        window = None
    if window is None or 0 in window.shape:
        raise RegionOutsideError(
            f"{path} does not cover the grid (lon/lat "
            f"{[round(v, 4) for v in gbox.extent.to_crs('EPSG:4326').boundingbox]})"
        )
    nodata = 0 if tile.rio.nodata is None else int(tile.rio.nodata)
    classes = window.load().odc.assign_crs(crs)
    moved = classes.odc.reproject(gbox, resampling="nearest", dst_nodata=nodata).values
    out = np.where(moved == nodata, NODATA, (moved == builtup).astype(np.uint8))
    if (out == NODATA).all():
        raise RegionOutsideError(f"{path} has no data over the grid")
    res = wrap_xr(out.astype(np.uint8), gbox, nodata=NODATA)
    res.attrs.update(long_name="WorldCover built-up", source=str(path), builtup_class=builtup)
    return res.rename("worldcover_builtup")

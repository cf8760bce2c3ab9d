"""The options of load_sentinel2 checked before any search or read: the area, bands,
cloud-mask classes, chunks and output CRS."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from odc.geo.geom import Geometry, box

from ..errors import BandError, BBoxError, CRSError, OptionError
from ._items import SCL, canonical_band

DEFAULT_BANDS = ("B02", "B03", "B04", "B08")

# SCL classes that are not a clear view of the ground: 0 no data, 1 saturated/defective,
# 3 cloud shadow, 8/9 cloud medium/high probability, 10 thin cirrus.
DEFAULT_SCL_MASK = (0, 1, 3, 8, 9, 10)

_SCL_CLOUDS = frozenset({3, 8, 9, 10})  # the classes whose edges dilation widens

BRIGHTNESS_DN = 3000  # blue TOA reflectance above 0.3: thick cloud (L1C, opt-in)

DEFAULT_CHUNK = 512


def _area(bbox: Sequence[float] | None, geopolygon: Any) -> Geometry | None:
    """The area of interest as an odc-geo Geometry, checked; None for 'all the items'."""
    if bbox is not None and geopolygon is not None:
        raise OptionError("give bbox or geopolygon, not both")
    if bbox is not None:
        try:
            values = tuple(float(v) for v in bbox)
        except (TypeError, ValueError):
            raise BBoxError(
                f"bbox must be 4 numbers (min_lon, min_lat, max_lon, max_lat), got {bbox!r}"
            ) from None
        if len(values) != 4 or not all(np.isfinite(values)):
            raise BBoxError(
                f"bbox must be 4 finite numbers (min_lon, min_lat, max_lon, max_lat), got {bbox!r}"
            )
        _check_lonlat(values, "bbox")
        x0, y0, x1, y1 = values
        if x0 >= x1 or y0 >= y1:
            raise BBoxError(
                f"bbox {values} is empty or its corners are swapped: the order is "
                "(min_lon, min_lat, max_lon, max_lat)"
            )
        return box(x0, y0, x1, y1, crs="EPSG:4326")
    if geopolygon is None:
        return None
    if isinstance(geopolygon, Geometry):
        if geopolygon.crs is None:
            raise BBoxError(
                "geopolygon has no CRS: build it with odc.geo.geom.polygon(..., crs=...)"
            )
        geom = geopolygon
    else:
        if hasattr(geopolygon, "__geo_interface__"):
            geopolygon = geopolygon.__geo_interface__
        if isinstance(geopolygon, Mapping) and geopolygon.get("type") == "Feature":
            geopolygon = geopolygon["geometry"]
        try:
            geom = Geometry(geopolygon, crs="EPSG:4326")  # GeoJSON is lon/lat by definition
        except Exception as exc:
            raise BBoxError(f"cannot read geopolygon as GeoJSON: {exc}") from None
        _check_lonlat(geom.boundingbox, "geopolygon")
    if geom.is_empty or geom.area == 0:
        raise BBoxError("the area of interest is empty")
    return geom


def _check_lonlat(bounds: Sequence[float], what: str) -> None:
    x0, y0, x1, y1 = bounds
    if max(abs(x0), abs(x1)) > 180 or max(abs(y0), abs(y1)) > 90:
        projected = max(abs(v) for v in bounds) > 1000
        hint = (
            " These look like projected metres: pass longitude/latitude, or give the area in "
            "its CRS: geopolygon=odc.geo.geom.box(x0, y0, x1, y1, crs='EPSG:32633')"
            if projected
            else ""
        )
        raise BBoxError(
            f"{what} {tuple(bounds)} is out of range for longitude/latitude degrees "
            f"(lon -180..180, lat -90..90).{hint}"
        )


def _bands(bands: Sequence[str] | str | None) -> tuple[str, ...]:
    if bands is None:
        return DEFAULT_BANDS
    if isinstance(bands, str):
        bands = [bands]
    if not isinstance(bands, Sequence):
        raise BandError(f"bands must be band names, e.g. ['B02', 'B03', 'B04'], not {bands!r}")
    out: list[str] = []
    for b in bands:
        name = canonical_band(b)
        if name == SCL:
            raise BandError("SCL is used for the cloud mask, not composited: leave it out of bands")
        if name not in out:
            out.append(name)
    if not out:
        raise BandError("bands is empty: e.g. bands=['B02', 'B03', 'B04', 'B08']")
    return tuple(out)


def _mask_classes(cloud_mask: bool | Sequence[int]) -> frozenset[int]:
    if cloud_mask is True:
        return frozenset(DEFAULT_SCL_MASK)
    if cloud_mask is False or cloud_mask is None:
        return frozenset()
    try:
        classes = frozenset(int(c) for c in cloud_mask)
    except (TypeError, ValueError):
        raise OptionError(
            f"cloud_mask must be True, False or SCL classes (ints 0-11), not {cloud_mask!r}"
        ) from None
    if not all(0 <= c <= 11 for c in classes):
        raise OptionError(f"SCL classes are 0-11, got {sorted(classes)}")
    return classes


def _chunks(chunks: int | Mapping[str, int] | None) -> tuple[int, int]:
    if chunks is None:
        return DEFAULT_CHUNK, DEFAULT_CHUNK
    if isinstance(chunks, Mapping):
        cy, cx = chunks.get("y", DEFAULT_CHUNK), chunks.get("x", DEFAULT_CHUNK)
    else:
        cy = cx = chunks
    if not all(isinstance(c, int | np.integer) and c > 0 for c in (cy, cx)):
        raise OptionError(
            f"chunks must be a positive int or {{'y': int, 'x': int}}, not {chunks!r}"
        )
    return int(cy), int(cx)


def _check_crs(crs: Any) -> None:
    """Refuse an output CRS that odc-geo cannot read, before any catalog is searched."""
    if crs is None or (isinstance(crs, str) and crs.lower() == "utm"):
        return
    from odc.geo.crs import CRS

    try:
        CRS(crs)
    except Exception as exc:  # pyproj raises its own CRSError, odc-geo ValueError
        raise CRSError(
            f"crs={crs!r} is not a CRS ({exc}): pass e.g. 'EPSG:32633', or 'utm' for the "
            "UTM zone of the area's centre"
        ) from None

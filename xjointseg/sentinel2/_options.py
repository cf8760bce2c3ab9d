"""The options of load_sentinel2 and plan_load: each one defined once, as a field of
:class:`LoadOptions` (its name, type and default), and checked when the object is made,
before any catalog is searched or pixel read. The checks of the area, bands, cloud-mask
classes, chunks and output CRS are the functions below."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import os
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

import numpy as np
from odc.geo.geom import Geometry, box

from ..errors import BandError, BBoxError, CRSError, OptionError
from ._catalog import Signer
from ._items import SCL, HarmonizeOption, canonical_band
from ._periods import Period, parse_periods
from ._stage import _check_stage_target

DEFAULT_BANDS = ("B02", "B03", "B04", "B08")

# SCL classes that are not a clear view of the ground: 0 no data, 1 saturated/defective,
# 3 cloud shadow, 8/9 cloud medium/high probability, 10 thin cirrus.
DEFAULT_SCL_MASK = (0, 1, 3, 8, 9, 10)

_SCL_CLOUDS = frozenset({3, 8, 9, 10})  # the classes whose edges dilation widens

BRIGHTNESS_DN = 3000  # blue TOA reflectance above 0.3: thick cloud (L1C, opt-in)

DEFAULT_CHUNK = 512

#: Resampling names odc-stac passes to GDAL (rasterio.enums.Resampling), for the 20 m bands
#: and any reprojection.
RESAMPLING = (
    "nearest",
    "bilinear",
    "cubic",
    "cubic_spline",
    "lanczos",
    "average",
    "mode",
    "gauss",
    "min",
    "max",
    "med",
    "q1",
    "q3",
    "sum",
    "rms",
)


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    """The keyword options of :func:`load_sentinel2` (documented there), checked.

    Making one checks every option, so a wrong value fails before any catalog is searched.
    The fields after ``overwrite`` are not options: they hold the checked forms the loaders
    use (``Bxx`` band names, SCL classes, chunk sizes, periods, the area).
    """

    bbox: Sequence[float] | None = None
    geopolygon: Any = None
    crs: Any = None
    periods: Any
    bands: Sequence[str] | None = None
    cloud_mask: bool | Sequence[int] = True
    cloud_dilation: int = 0
    l1c_mask: Literal["none", "brightness"] = "none"
    harmonize: HarmonizeOption = True
    composite: Literal["median", "mean"] | None = "median"
    max_cloud_cover: float | None = None
    chunks: int | Mapping[str, int] | None = None
    resolution: float = 10.0
    resampling: str = "nearest"
    collection: str | None = None
    sign: Signer | None = None
    patch_url: Callable[[str], str] | None = None
    store: str | os.PathLike | MutableMapping | None = None
    overwrite: bool = False

    band_names: tuple[str, ...] = field(init=False)
    mask_classes: frozenset[int] = field(init=False)
    chunk_yx: tuple[int, int] = field(init=False)
    period_list: tuple[Period, ...] = field(init=False)
    aoi: Geometry | None = field(init=False)

    def __post_init__(self) -> None:
        if self.composite not in ("median", "mean", None):
            raise OptionError(f"composite must be 'median', 'mean' or None, not {self.composite!r}")
        if self.l1c_mask not in ("none", "brightness"):
            raise OptionError(f"l1c_mask must be 'none' or 'brightness', not {self.l1c_mask!r}")
        dilation = self.cloud_dilation
        if not (isinstance(dilation, int | np.integer) and dilation >= 0):
            raise OptionError(f"cloud_dilation must be an int >= 0, not {dilation!r}")
        cloud_cover = self.max_cloud_cover
        if cloud_cover is not None and not (
            isinstance(cloud_cover, int | float) and 0 <= cloud_cover <= 100
        ):
            raise OptionError(f"max_cloud_cover is a percentage (0-100), not {cloud_cover!r}")
        resolution = self.resolution
        if not (isinstance(resolution, int | float) and 0 < resolution < math.inf):
            raise OptionError(f"resolution must be a number > 0, not {resolution!r}")
        if self.resampling not in RESAMPLING:
            raise OptionError(
                f"resampling must be one of {', '.join(RESAMPLING)} (GDAL's names, as odc-stac "
                f"takes them), not {self.resampling!r}"
            )
        for name in ("sign", "patch_url"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise OptionError(
                    f"{name} must be a function that takes and returns a URL (or an item), "
                    f"not {value!r}"
                )
        check_output_crs(self.crs)
        if self.store is not None:  # a store that cannot be written fails before the search
            _check_stage_target(self.store, self.overwrite)
        self._fill(
            # plain Python values: the numbers end up in the composites' attributes
            cloud_dilation=int(dilation),
            resolution=float(resolution),
            overwrite=bool(self.overwrite),
            band_names=_bands(self.bands),
            mask_classes=_mask_classes(self.cloud_mask),
            chunk_yx=_chunks(self.chunks),
            period_list=tuple(parse_periods(self.periods)),
            aoi=_area(self.bbox, self.geopolygon),
        )

    def _fill(self, **values: Any) -> None:
        for name, value in values.items():
            object.__setattr__(self, name, value)  # how a frozen dataclass sets its fields

    @property
    def read_bands(self) -> tuple[str, ...]:
        """The bands to read: the output bands, and B02 for the L1C brightness test."""
        if self.l1c_mask == "brightness" and "B02" not in self.band_names:
            return (*self.band_names, "B02")
        return self.band_names


F = TypeVar("F", bound=Callable[..., Any])


def takes_load_options(func: F) -> F:
    """Show the fields of :class:`LoadOptions` as ``func``'s keyword parameters.

    ``func(first, **options)`` passes ``options`` on to LoadOptions; its signature, as
    ``help()``, ``inspect`` and notebooks show it, lists each option with its default, and
    a keyword that is not an option is refused in ``func``'s name, with the nearest option.
    """
    signature = inspect.signature(func)
    first = next(iter(signature.parameters.values()))
    fields = [f for f in dataclasses.fields(LoadOptions) if f.init]
    names = [f.name for f in fields]
    options = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default,
            annotation=f.type,
        )
        for f in fields
    ]
    required = [p.name for p in options if p.default is inspect.Parameter.empty]

    @functools.wraps(func)
    def checked(catalog_or_items: Any, /, **kwargs: Any) -> Any:
        for name in kwargs:
            if name not in names:
                near = difflib.get_close_matches(name, names, n=1)
                hint = f": did you mean {near[0]!r}?" if near else f"; options: {names}"
                raise TypeError(
                    f"{func.__name__}() got an unexpected keyword argument {name!r}{hint}"
                )
        missing = [n for n in required if n not in kwargs]
        if missing:
            raise TypeError(f"{func.__name__}() needs {missing[0]}=... (e.g. periods=2019)")
        return func(catalog_or_items, **kwargs)

    checked.__signature__ = signature.replace(parameters=[first, *options])  # type: ignore[attr-defined]
    return cast(F, checked)


def _each(values: Any, convert: Callable[[Any], Any]) -> list | None:
    """``convert`` applied to each of ``values``; None if it is not a collection of such."""
    try:
        return [convert(v) for v in values]
    except (TypeError, ValueError):
        return None


def _area(bbox: Sequence[float] | None, geopolygon: Any) -> Geometry | None:
    """The area of interest as an odc-geo Geometry, checked; None for 'all the items'."""
    if bbox is not None and geopolygon is not None:
        raise OptionError("give bbox or geopolygon, not both")
    if bbox is not None:
        numbers = _each(bbox, float)
        if numbers is None:
            raise BBoxError(
                f"bbox must be 4 numbers (min_lon, min_lat, max_lon, max_lat), got {bbox!r}"
            )
        values = tuple(numbers)
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
    numbers = _each(cloud_mask, int)
    if numbers is None:
        raise OptionError(
            f"cloud_mask must be True, False or SCL classes (ints 0-11), not {cloud_mask!r}"
        )
    classes = frozenset(numbers)
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


def check_output_crs(crs: Any) -> None:
    """Refuse an output CRS that odc-geo cannot read, before any catalog is searched."""
    if crs is None or (isinstance(crs, str) and crs.lower() == "utm"):
        return
    from odc.geo.crs import CRS

    try:
        parsed = CRS(crs)
    except Exception as exc:  # pyproj raises its own CRSError, odc-geo ValueError
        raise CRSError(
            f"crs={crs!r} is not a CRS ({exc}): pass e.g. 'EPSG:32633', or 'utm' for the "
            "UTM zone of the area's centre"
        ) from None
    if parsed.geographic or parsed.units[0] not in ("metre", "m"):
        # the resolution is in the CRS's unit: 10 degrees or 10 feet is no Sentinel-2 grid
        raise CRSError(
            f"crs={crs!r} is not in metres ({parsed.units[0]}): segment reads a 10 m grid; "
            "pass 'utm' (the UTM zone of the area's centre) or a projected CRS in metres such "
            "as 'EPSG:32633'"
        )

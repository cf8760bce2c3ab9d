"""Tables of an ISA cube: ISA area per period and region, and growth between periods.

Counting rules: a pixel is ISA when it is 1, valid when it is not 255; shares are taken over
valid pixels only, and a change between two periods only over pixels valid in both (the
share of such pixels is reported with it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import NotEnoughPeriodsError, OptionError
from ..schema import period_labels
from ._zonal import _isa, _pixel_km2, _region_stats, change_rule_of, share_option

#: Expansion classes of :func:`growth`: the first class whose threshold the annual growth rate
#: reaches (rate >= threshold). Rates are fractions per year (0.03 = 3 %/year).
DEFAULT_CLASSES: tuple[tuple[str, float], ...] = (
    ("rapid", 0.03),
    ("moderate", 0.01),
    ("saturated", -0.01),
    ("declining", -math.inf),
)

__all__ = ["DEFAULT_CLASSES", "area", "growth"]


def area(
    cube: xr.DataArray | xr.Dataset,
    regions: Any = None,
    *,
    name_column: str | None = None,
) -> pd.DataFrame:
    """ISA area per period and region, as a tidy table.

    Parameters
    ----------
    cube : xarray.DataArray or Dataset
        uint8 ``(period, y, x)`` ISA cube (:func:`~xjointseg.open_cube`, or segment's output).
    regions : GeoDataFrame, GeoSeries or xarray.DataArray, optional
        Polygons in any CRS (reprojected to the cube's), possibly overlapping (each is counted
        on its own), or an integer label raster on the cube's grid (0 and negative: no
        region). Default: the whole cube as one region ``"all"``.
    name_column : str, optional
        Column naming the polygons (default: ``"name"`` if present, complete and unique,
        else the index). Rows are counted separately even where names repeat.

    Returns
    -------
    pandas.DataFrame
        One row per period and region: ``period, region, isa_km2, valid_km2, region_km2,
        isa_share`` (ISA / valid), ``valid_share`` (valid / region pixels in the cube).

    Raises
    ------
    RegionCRSError
        Polygons without a CRS.
    RegionOutsideError
        No polygon overlaps the cube.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> from xjointseg.change import area
    >>> grid = GeoBox.from_bbox((0, 0, 1000, 1000), "EPSG:32633", resolution=1)  # 1 km2
    >>> cube = xr_zeros(grid, "uint8", time=["2017-07-01", "2019-07-01"])
    >>> cube[:, :250, :] = 1  # a quarter is ISA in both periods
    >>> area(cube)[["region", "isa_km2", "valid_km2", "isa_share"]].values.tolist()
    [['all', 0.25, 1.0, 0.25], ['all', 0.25, 1.0, 0.25]]
    """
    cube = _isa(cube)
    stats = _region_stats(cube, regions, name_column)
    km2 = _pixel_km2(cube.odc.geobox)
    nt = cube.shape[0]
    rows = []
    for t, label in enumerate(period_labels(cube)):
        for name, s in stats:
            isa, valid, pixels = s[1 + t], s[1 + nt + t], s[0]
            rows.append(
                {
                    "period": label,
                    "region": name,
                    "isa_km2": isa * km2,
                    "valid_km2": valid * km2,
                    "region_km2": pixels * km2,
                    "isa_share": isa / valid if valid else np.nan,
                    "valid_share": valid / pixels if pixels else np.nan,
                }
            )
    return pd.DataFrame(rows)


def _given_years(years: Any, cube: xr.DataArray, nt: int) -> list[float]:
    """``years=`` as decimal years, one per period (a sequence, or a mapping label -> year)."""
    example = f"e.g. years={[2017 + 2 * i for i in range(nt)]}"
    if isinstance(years, str) or not isinstance(years, Mapping | Sequence | np.ndarray):
        raise OptionError(f"years must be {nt} numbers, one per period, {example}; got {years!r}")
    try:
        if isinstance(years, Mapping):
            return [float(years[k]) for k in cube[cube.dims[0]].values]
        return [float(y) for y in years]
    except KeyError as exc:
        raise OptionError(f"years has no entry for period {exc.args[0]!r}; {example}") from None
    except (TypeError, ValueError):
        raise OptionError(f"years must be {nt} numbers, {example}; got {years!r}") from None


def _decimal_years(labels: Sequence) -> list[float]:
    def one(value) -> float:
        if isinstance(value, pd.Timestamp | np.datetime64):
            ts = pd.Timestamp(value)
            days = 366 if ts.is_leap_year else 365
            day = ts.day_of_year - 1 + (ts - ts.normalize()) / pd.Timedelta("1D")
            return ts.year + day / days
        if isinstance(value, int | float | np.number):
            return float(value)
        parts = [p for p in re.split(r"[/]", str(value)) if p.strip()]
        try:
            return float(np.mean([one(pd.Timestamp(p.strip())) for p in parts]))
        except (ValueError, TypeError) as err:
            raise OptionError(
                f"cannot tell the time of period {value!r}: pass years=[...] (one decimal "
                "year per period, e.g. 2017.5)"
            ) from err

    return [one(v) for v in labels]


def _classify(
    rate: float, before: float, after: float, share: float, classes, min_valid: float
) -> str:
    if not share >= min_valid:
        return "uncertain"
    if before == 0:
        return "new" if after > 0 else "none"
    for name, threshold in classes:
        if rate >= threshold:
            return name
    return classes[-1][0]


def _growth_classes(classes: Any) -> list[tuple[str, float]]:
    """``(name, threshold)`` pairs with thresholds in decreasing order, checked."""
    fix = 'e.g. classes=[("fast", 0.05), ("slow", -math.inf)]'
    if isinstance(classes, str | Mapping):
        raise OptionError(f"classes must be a sequence of (name, threshold) pairs, {fix}")
    try:
        pairs = [(str(name), float(threshold)) for name, threshold in classes]
    except (TypeError, ValueError):
        raise OptionError(f"classes must be (name, threshold) pairs, {fix}") from None
    if not pairs:
        raise OptionError(f"classes must name at least one class, {fix}")
    thresholds = [t for _, t in pairs]
    if any(math.isnan(t) for t in thresholds):
        raise OptionError(f"class thresholds must be numbers, not NaN, {fix}")
    if any(b > a for a, b in zip(thresholds[:-1], thresholds[1:], strict=False)):
        raise OptionError(f"class thresholds must decrease (the first match wins), {fix}")
    big = [t for t in thresholds if math.isfinite(t) and abs(t) > 1]
    if big:
        raise OptionError(
            f"class threshold {big[0]!r} is {100 * big[0]:g} % a year: thresholds are "
            f"fractions per year (0.03 = 3 %/year), did you mean {big[0] / 100!r}? {fix}"
        )
    if thresholds[-1] != -math.inf:
        raise OptionError(
            f"the last class must take every rate left (threshold -math.inf), not "
            f"{thresholds[-1]!r}: rates below it would fall into no class, {fix}"
        )
    return pairs


def growth(
    cube: xr.DataArray | xr.Dataset,
    regions: Any = None,
    *,
    name_column: str | None = None,
    years: Sequence[float] | Mapping[Any, float] | None = None,
    classes: Sequence[tuple[str, float]] = DEFAULT_CLASSES,
    min_valid: float = 0.5,
) -> pd.DataFrame:
    """ISA change per region between consecutive periods, with a growth rate and a class.

    Only pixels valid in both periods of a pair are compared, so clouds in one year do not
    look like loss or gain; ``valid_share`` says how much of the region that was.

    Parameters
    ----------
    cube : xarray.DataArray or Dataset
        uint8 ``(period, y, x)`` ISA cube with at least two periods.
    regions : GeoDataFrame, GeoSeries or xarray.DataArray, optional
        As in :func:`area`.
    name_column : str, optional
        As in :func:`area`.
    years : sequence or mapping of float, optional
        Decimal year of each period. Default: from the period labels (datetimes, integer
        years, or strings such as ``"2017"`` or ``"2016/2017"``, the mean of the two).
    classes : sequence of (name, threshold)
        Expansion classes by annual growth rate (a fraction: 0.03 = 3 %/year), checked in
        order, the first with ``rate >= threshold`` wins. Default :data:`DEFAULT_CLASSES`:
        ``rapid`` >= 3 %/yr, ``moderate`` >= 1 %/yr, ``saturated`` >= -1 %/yr, else
        ``declining``. Thresholds decrease, lie within -1..1 (a fraction, not a percent)
        and the last is ``-math.inf``, so that every rate has a class. Whatever the
        classes, ``new`` means no ISA before and some after, ``none`` no ISA in either,
        ``uncertain`` a valid share below ``min_valid``.
    min_valid : float
        Smallest share of the region valid in both periods for a class to be given.

    Returns
    -------
    pandas.DataFrame
        One row per region and consecutive pair: ``region, period_from, period_to, years,
        isa_from_km2, isa_to_km2, change_km2, gained_km2, lost_km2, annual_rate,
        valid_share, expansion``. ``annual_rate = (isa_to / isa_from) ** (1 / years) - 1``
        (NaN without ISA before). ``attrs["change_rule"]`` says whether the periods were
        made consistent (:func:`consistent`) or each mapped alone.

    Raises
    ------
    NotEnoughPeriodsError
        Fewer than two periods.
    OptionError
        ``years``, ``classes`` or ``min_valid`` out of shape or range.

    Examples
    --------
    >>> from odc.geo.geobox import GeoBox
    >>> from odc.geo.xr import xr_zeros
    >>> from xjointseg.change import growth
    >>> grid = GeoBox.from_bbox((0, 0, 10, 10), "EPSG:32633", resolution=1)
    >>> cube = xr_zeros(grid, "uint8", time=["2017-01-01", "2019-01-01"])
    >>> cube[:, 0, :] = 1  # 10 ISA pixels in 2017
    >>> cube[1, 1, 0] = 1  # 11 in 2019: +10 % in 2 years
    >>> g = growth(cube)
    >>> float(g.annual_rate[0].round(4)), g.expansion[0]
    (0.0488, 'rapid')
    """
    cube = _isa(cube)
    nt = cube.shape[0]
    if nt < 2:
        raise NotEnoughPeriodsError(
            f"growth needs at least two periods; the cube has {nt}: add periods with to_zarr"
        )
    labels = period_labels(cube)
    if years is None:
        yrs = _decimal_years(labels)
    else:
        yrs = _given_years(years, cube, nt)
    if (
        len(yrs) != nt
        or not all(math.isfinite(y) for y in yrs)
        or any(b <= a for a, b in zip(yrs[:-1], yrs[1:], strict=True))
    ):
        raise OptionError(f"years must be {nt} increasing values, one per period; got {yrs}")
    classes = _growth_classes(classes)
    min_valid = share_option("min_valid", min_valid)
    stats = _region_stats(cube, regions, name_column)
    km2 = _pixel_km2(cube.odc.geobox)
    rows = []
    for name, s in stats:
        pixels = s[0]
        for t in range(nt - 1):
            both, a, b, gained, lost = s[1 + 2 * nt + 5 * t : 1 + 2 * nt + 5 * (t + 1)]
            dt = yrs[t + 1] - yrs[t]
            rate = (b / a) ** (1.0 / dt) - 1.0 if a > 0 else np.nan
            share = both / pixels if pixels else 0.0
            rows.append(
                {
                    "region": name,
                    "period_from": labels[t],
                    "period_to": labels[t + 1],
                    "years": dt,
                    "isa_from_km2": a * km2,
                    "isa_to_km2": b * km2,
                    "change_km2": (b - a) * km2,
                    "gained_km2": gained * km2,
                    "lost_km2": lost * km2,
                    "annual_rate": rate,
                    "valid_share": share,
                    "expansion": _classify(rate, a, b, share, classes, min_valid),
                }
            )
    table = pd.DataFrame(rows)
    table.attrs["change_rule"] = change_rule_of(cube)
    return table

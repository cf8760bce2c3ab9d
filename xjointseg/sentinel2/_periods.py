"""Periods: the time windows one composite is made of (a year, several years, any dates)."""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InvalidPeriodError

# Sentinel-2A's first L1C products date from 23 June 2015: nothing can be found before.
S2_FIRST_DAY = np.datetime64("2015-06-23", "ns")
_BOUND_RE = re.compile(r"^\d{4}(-\d{2}(-\d{2}([T ][\d:.]+Z?)?)?)?$")


@dataclass(frozen=True, order=True)
class Period:
    """A half-open time window ``[start, end)`` with a human-readable label.

    Parameters
    ----------
    start, end : numpy.datetime64
        Inclusive start and exclusive end, in nanoseconds (UTC, naive).
    label : str
        How the period is named in the output's ``period`` coordinate (``"2017"``,
        ``"2016/2017"``, ``"2017-04-01/2017-09-30"``).

    Examples
    --------
    >>> p = parse_periods(2017)[0]
    >>> p.label, str(p.last_day), p.stac_datetime
    ('2017', '2017-12-31', '2017-01-01T00:00:00Z/2017-12-31T23:59:59.999999Z')
    """

    start: np.datetime64
    end: np.datetime64
    label: str

    @property
    def last_day(self) -> np.datetime64:
        """The last day the period covers (inclusive), as ``datetime64[D]``."""
        return (self.end - np.timedelta64(1, "ns")).astype("datetime64[D]")

    @property
    def stac_datetime(self) -> str:
        """The period as a STAC API ``datetime`` interval (inclusive, microseconds)."""
        last = (self.end - np.timedelta64(1, "us")).astype("datetime64[us]")
        return f"{self.start.astype('datetime64[s]')}Z/{last}Z"

    def contains(self, when: _dt.datetime | np.datetime64) -> bool:
        """Whether a (timezone-aware or naive UTC) instant lies inside the period."""
        return bool(self.start <= _to_ns(when) < self.end)


def _to_ns(when: Any) -> np.datetime64:
    if isinstance(when, _dt.datetime) and when.tzinfo is not None:
        when = when.astimezone(_dt.UTC).replace(tzinfo=None)
    return np.datetime64(when, "ns")


def _bound(value: Any) -> tuple[np.datetime64, np.datetime64, str]:
    """``(first instant, first instant after, text)`` for a year, month, day or instant."""
    if isinstance(value, bool):  # bool is an int: never a year
        raise InvalidPeriodError(f"{value!r} is not a year or a date")
    if isinstance(value, int | np.integer):
        value = f"{int(value):04d}"
    if isinstance(value, _dt.datetime):
        # numpy's stubs lack datetime64(datetime64, unit), which numpy accepts
        value = np.datetime64(_to_ns(value), "us")  # type: ignore[call-overload]
    elif isinstance(value, _dt.date):
        value = np.datetime64(value, "D")
    if (
        isinstance(value, np.datetime64)
        and np.datetime_data(value.dtype)[0] not in ("Y", "M", "W", "D", "generic")
        and value == value.astype("datetime64[D]")
    ):
        # a midnight (a datetime, a Timestamp, a time coordinate's value) means its day, as
        # '2017-02-16' does, not the one instant that opens it
        value = value.astype("datetime64[D]")
    if isinstance(value, str):
        text = value.strip()
        if not _BOUND_RE.match(text):
            raise InvalidPeriodError(
                f"cannot read {value!r} as a year or date: use 2017, '2017', '2017-06' or "
                "'2017-06-01' (a window: '2016/2017' or (2016, 2017))"
            )
        try:
            value = np.datetime64(text.rstrip("Z"))
        except ValueError as exc:
            raise InvalidPeriodError(f"{value!r} is not a valid date: {exc}") from None
    if not isinstance(value, np.datetime64):
        raise InvalidPeriodError(
            f"cannot read {value!r} ({type(value).__name__}) as a year or date: use an int "
            "year, an ISO date string, datetime.date or numpy.datetime64"
        )
    unit = np.datetime_data(value.dtype)[0]
    if unit == "generic":
        raise InvalidPeriodError(f"{value!r} has no date unit")
    text = str(value)
    # One unit more than the value itself: '2017' ends with 2017, '2017-06' with June.
    return (
        value.astype("datetime64[ns]"),
        # numpy's stubs: datetime_data gives the unit as a plain str, not a unit literal
        (value + np.timedelta64(1, unit)).astype("datetime64[ns]"),  # type: ignore[call-overload]
        text,
    )


def _one(spec: Any) -> Period:
    if isinstance(spec, Period):
        return spec
    if isinstance(spec, str) and "/" in spec:
        parts = spec.split("/")
        if len(parts) != 2:
            raise InvalidPeriodError(f"a window has one '/': {spec!r}")
        spec = tuple(parts)
    if isinstance(spec, tuple):
        if len(spec) != 2:
            raise InvalidPeriodError(
                f"a window is (start, end), got {len(spec)} values: {spec!r}. A list of "
                "single years is written as a list, e.g. [2017, 2019, 2021, 2023]"
            )
        start, _, start_text = _bound(spec[0])
        _, end, end_text = _bound(spec[1])
        label = f"{start_text}/{end_text}"
    else:
        start, end, label = _bound(spec)
    if end <= start:
        raise InvalidPeriodError(
            f"period {label!r} ends before it starts: write it as (start, end)"
        )
    if end <= S2_FIRST_DAY:
        raise InvalidPeriodError(
            f"period {label!r} ends before Sentinel-2's first images (23 June 2015): "
            "choose years from 2015 on"
        )
    return Period(start=start, end=end, label=label)


def parse_periods(periods: Any) -> list[Period]:
    """Read the periods to composite: years, multi-year windows or explicit date ranges.

    Parameters
    ----------
    periods : int, str, tuple, Period, or a list of them
        * ``2017`` or ``"2017"``: the calendar year 2017.
        * ``"2017-06"`` / ``"2017-06-01"``: one month / one day.
        * ``(2016, 2017)`` or ``"2016/2017"``: from the start of the first bound to the end
          of the second (here two whole years); bounds may be years, months or days, e.g.
          ``("2017-04-01", "2017-09-30")``.
        * A list of these: one composite each, e.g. ``[2017, 2019, 2021, 2023]``. A tuple at
          the top level is also a list (``(2017, 2019)`` means two years); wrap a single
          window in a list: ``[(2016, 2017)]``.

    Returns
    -------
    list of Period
        Sorted by start. Labels and starts are unique, so the period start labels each
        composite unambiguously on the ``time`` axis.

    Examples
    --------
    >>> [p.label for p in parse_periods([2019, (2016, 2017), "2021-04-01/2021-09-30"])]
    ['2016/2017', '2019', '2021-04-01/2021-09-30']
    """
    if isinstance(periods, list | tuple | range):
        specs: Iterable[Any] = periods
    else:
        specs = [periods]
    out = sorted(_one(s) for s in specs)
    if not out:
        raise InvalidPeriodError("no period given: pass e.g. periods=[2017, 2019, 2021, 2023]")
    starts: list[Any] = [p.start for p in out]
    labels: list[Any] = [p.label for p in out]
    for name, values in (("start", starts), ("label", labels)):
        if len(set(values)) != len(values):
            dup = sorted({str(v) for v in values if values.count(v) > 1})
            raise InvalidPeriodError(
                f"two periods share the same {name} ({', '.join(dup)}): each period labels one "
                "time step, so give each a distinct start"
            )
    return out

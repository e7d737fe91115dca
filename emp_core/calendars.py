"""Trading calendars: which bar timestamps a complete data set must contain.

Two calendars cover the shipped data:

- ``XNYS``: New York Stock Exchange sessions (holidays and special closures from
  ``exchange_calendars``); a daily bar is stamped with its session date at 00:00.
- ``FX24X5``: the spot FX week, Sunday 17:00 to Friday 17:00 New York time (the
  market convention); an hourly bar is stamped with its open time in UTC. Holidays
  are not modelled: thin holiday trading shows up as gaps within the tolerance.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache

import polars as pl

from emp_core.errors import ConfigError

CALENDARS = ("XNYS", "FX24X5", "24/7")
INTERVALS = {"1d": timedelta(days=1), "1h": timedelta(hours=1)}
_XNYS_RANGE = ("1990-01-01", "2035-12-31")


@lru_cache(maxsize=1)
def _xnys_sessions() -> pl.Series:
    import exchange_calendars as xc

    cal = xc.get_calendar("XNYS", start=_XNYS_RANGE[0], end=_XNYS_RANGE[1])
    return pl.Series("ts", cal.sessions.tz_localize(None).to_numpy()).cast(pl.Datetime("us"))


def interval_length(interval: str) -> timedelta:
    try:
        return INTERVALS[interval]
    except KeyError:
        choices = ", ".join(INTERVALS)
        raise ConfigError(f"interval {interval!r} is not supported; choose one of {choices}") from None


def expected_bars(calendar: str, interval: str, start: datetime, end: datetime) -> pl.Series:
    """Timestamps of every bar the calendar expects in ``[start, end)`` (naive UTC)."""
    step = interval_length(interval)
    if end <= start:
        return pl.Series("ts", [], dtype=pl.Datetime("us"))
    if calendar == "XNYS":
        sessions = _xnys_sessions()
        if interval != "1d":
            raise ConfigError("calendar XNYS is defined here for daily bars only")
        return sessions.filter((sessions >= start) & (sessions < end))
    grid = pl.datetime_range(_ceil(start, step), end, step, closed="left", time_unit="us", eager=True)
    if calendar == "24/7":
        return grid.alias("ts")
    if calendar == "FX24X5":
        ny = grid.dt.replace_time_zone("UTC").dt.convert_time_zone("America/New_York")
        weekday, hour = ny.dt.weekday(), ny.dt.hour()  # Monday=1 .. Sunday=7
        open_ = (weekday <= 4) | ((weekday == 5) & (hour < 17)) | ((weekday == 7) & (hour >= 17))
        return grid.filter(open_).alias("ts")
    raise ConfigError(f"calendar {calendar!r} is not known; choose one of {', '.join(CALENDARS)}")


def _ceil(ts: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1)
    n = -((epoch - ts) // step)
    return epoch + n * step

"""Trading calendars: which bar timestamps a complete data set must contain.

Two calendars cover the shipped data:

- ``XNYS``: New York Stock Exchange sessions (holidays and special closures from
  ``exchange_calendars``); a daily bar is stamped with its session date at 00:00.
- ``FX24X5``: the spot FX week, Sunday 17:00 to Friday 17:00 New York time (the
  market convention); an hourly bar is stamped with its open time in UTC. Holidays
  are not modelled: thin holiday trading shows up as gaps within the tolerance.

:func:`trading_dates` gives the days on which a calendar is *scheduled* to trade,
as known in advance: calendar effects such as the turn of the month are counted in
them. XNYS: the exchange's regular sessions from 1970 to 2035, with its ad hoc
closures (29-30 October 2012, 11-14 September 2001, national days of mourning)
counted as the trading days they were scheduled to be, since they were announced
a day to a few days ahead or not at all; before 1970 exchange_calendars does not
model the holidays (it has sessions on 1 January and 25 December, none on the
Saturdays the exchange traded until 1952), so dates outside 1970-2035 count Monday
to Friday. FX24X5 and data without a calendar: Monday to Friday. 24/7: every day.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from functools import lru_cache

import polars as pl

from emp_core.errors import ConfigError

CALENDARS = ("XNYS", "FX24X5", "24/7")
INTERVALS = {"1d": timedelta(days=1), "1h": timedelta(hours=1)}
_XNYS_SINCE = date(1990, 1, 1)  # the sessions a data set is checked against (expected_bars)
_SCHEDULED_XNYS = (date(1970, 1, 1), date(2035, 12, 31))  # the days calendar effects are counted in


@lru_cache(maxsize=1)
def _xnys() -> tuple[pl.Series, pl.Series]:
    """(sessions, ad hoc closures on weekdays) of the New York Stock Exchange, 1970 to 2035: one
    exchange_calendars build per process serves both the data checks and the calendar effects."""
    import exchange_calendars as xc

    lo, hi = _SCHEDULED_XNYS
    cal = xc.get_calendar("XNYS", start=lo.isoformat(), end=hi.isoformat())
    sessions = pl.Series("date", cal.sessions.tz_localize(None).to_numpy()).cast(pl.Date)
    adhoc = pl.Series("date", [d.date() for d in cal.adhoc_holidays], dtype=pl.Date)
    return sessions, adhoc.filter(adhoc.is_between(lo, hi) & (adhoc.dt.weekday() <= 5))


@lru_cache(maxsize=1)
def _xnys_sessions() -> pl.Series:
    sessions = _xnys()[0]
    return sessions.filter(sessions >= _XNYS_SINCE).cast(pl.Datetime("us")).alias("ts")


@lru_cache(maxsize=1)
def _xnys_scheduled() -> pl.Series:
    sessions, adhoc = _xnys()
    return pl.concat([sessions, adhoc]).unique().sort().alias("date")


def prepare(calendar: str | None) -> float:
    """Build ``calendar``'s session tables now (XNYS: exchange_calendars' import and one build per process;
    later calls are free); the seconds it took, so a caller can report library setup apart from its work."""
    t0 = time.perf_counter()
    if calendar == "XNYS":
        _xnys_sessions(), _xnys_scheduled()
    return time.perf_counter() - t0


def trading_dates(calendar: str | None, first: date, last: date) -> pl.Series:
    """The dates in ``[first, last]`` on which ``calendar`` is scheduled to trade, sorted (module
    docstring; ``None``: Monday to Friday)."""
    days = pl.date_range(first, last, interval="1d", eager=True).alias("date")
    if calendar == "24/7":
        return days
    weekdays = days.filter(days.dt.weekday() <= 5)
    if calendar in (None, "FX24X5"):
        return weekdays
    if calendar == "XNYS":
        lo, hi = _SCHEDULED_XNYS
        if last < lo or first > hi:
            return weekdays
        sessions = _xnys_scheduled()
        return pl.concat([weekdays.filter(~weekdays.is_between(lo, hi)),
                          sessions.filter(sessions.is_between(first, last))]).sort()
    raise ConfigError(f"calendar {calendar!r} is not known; choose one of {', '.join(CALENDARS)}")


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

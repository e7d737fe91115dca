from datetime import date, datetime

import polars as pl
import pytest

from emp_core.calendars import expected_bars, trading_dates
from emp_core.errors import ConfigError
from tests.support import SHIPPED


def test_xnys_knows_holidays_and_closures():
    days = expected_bars("XNYS", "1d", datetime(2001, 9, 1), datetime(2001, 9, 30)).to_list()
    assert datetime(2001, 9, 10) in days and datetime(2001, 9, 17) in days
    assert not any(datetime(2001, 9, d) in days for d in (11, 12, 13, 14))
    dec = expected_bars("XNYS", "1d", datetime(2018, 12, 1), datetime(2019, 1, 1)).to_list()
    assert datetime(2018, 12, 5) not in dec  # national day of mourning
    assert datetime(2018, 12, 25) not in dec
    assert len(dec) == 19


def test_fx_week_follows_new_york_five_pm_across_daylight_saving():
    winter = expected_bars("FX24X5", "1h", datetime(2017, 1, 6), datetime(2017, 1, 9)).to_list()
    assert winter[0] == datetime(2017, 1, 6) and datetime(2017, 1, 6, 21) in winter
    assert datetime(2017, 1, 6, 22) not in winter  # Friday 17:00 New York (EST)
    assert datetime(2017, 1, 8, 21) not in winter and datetime(2017, 1, 8, 22) in winter
    summer = expected_bars("FX24X5", "1h", datetime(2017, 7, 7), datetime(2017, 7, 10)).to_list()
    assert datetime(2017, 7, 7, 20) in summer and datetime(2017, 7, 7, 21) not in summer  # EDT
    assert datetime(2017, 7, 9, 21) in summer and datetime(2017, 7, 9, 20) not in summer


def test_shipped_eurusd_sits_inside_the_fx_week():
    bars = pl.read_parquet(SHIPPED / "bars_hourly.parquet")
    grid = expected_bars("FX24X5", "1h", datetime(2017, 1, 1), datetime(2018, 1, 1)).to_frame("ts")
    assert bars.join(grid, on="ts", how="anti").height == 0
    missing = grid.filter(pl.col("ts").is_between(bars["ts"].min(), bars["ts"].max())).join(
        bars, on="ts", how="anti")
    assert missing.height / bars.height < 0.02  # Christmas and New Year thin out; nothing else


def test_trading_dates_are_the_scheduled_ones():
    """2018: 261 weekdays, 9 holidays; the exchange also closed on 5 December (National Day of Mourning for
    G. H. W. Bush, announced on the 1st), which was scheduled as a session and counts as one here."""
    xnys = trading_dates("XNYS", date(2018, 1, 1), date(2018, 12, 31))
    assert xnys.len() == 252
    assert date(2018, 12, 5) in xnys.to_list() and date(2018, 3, 30) not in xnys.to_list()  # Good Friday
    assert date(2012, 10, 29) in trading_dates("XNYS", date(2012, 10, 1), date(2012, 10, 31)).to_list()
    assert len(expected_bars("XNYS", "1d", datetime(2018, 1, 1), datetime(2019, 1, 1))) == 251  # real sessions
    assert trading_dates(None, date(2018, 1, 1), date(2018, 12, 31)).len() == 261
    assert trading_dates("FX24X5", date(2018, 1, 1), date(2018, 12, 31)).len() == 261
    assert trading_dates("24/7", date(2018, 1, 1), date(2018, 12, 31)).len() == 365
    # before 1970 exchange_calendars does not model the holidays (it has a session on 1 January 1965):
    # Monday to Friday there, and the exchange's sessions from 1970 on
    span = trading_dates("XNYS", date(1969, 12, 24), date(1970, 1, 6)).to_list()
    assert date(1969, 12, 25) in span and date(1970, 1, 1) not in span and date(1970, 1, 2) in span
    with pytest.raises(ConfigError, match="LSE"):
        trading_dates("LSE", date(2018, 1, 1), date(2018, 2, 1))

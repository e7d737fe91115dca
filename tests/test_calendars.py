from datetime import date, datetime

import polars as pl
import pytest

from emp_core.calendars import expected_bars, trading_dates
from emp_core.errors import ConfigError
from tests.conftest import SHIPPED


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


def test_trading_dates_per_calendar():
    xnys = trading_dates("XNYS", date(2018, 1, 1), date(2018, 12, 31))
    assert xnys.len() == 251  # 2018: 261 weekdays, 9 holidays, and the National Day of Mourning for G. H. W. Bush
    assert date(2018, 12, 5) not in xnys.to_list() and date(2018, 12, 4) in xnys.to_list()
    assert trading_dates(None, date(2018, 1, 1), date(2018, 12, 31)).len() == 261
    assert trading_dates("FX24X5", date(2018, 1, 1), date(2018, 12, 31)).len() == 261
    assert trading_dates("24/7", date(2018, 1, 1), date(2018, 12, 31)).len() == 365
    early = trading_dates("XNYS", date(1980, 1, 1), date(1980, 1, 4)).to_list()
    assert early == [date(1980, 1, 2), date(1980, 1, 3), date(1980, 1, 4)]
    with pytest.raises(ConfigError, match="XNYS"):
        trading_dates("XNYS", date(2030, 1, 1), date(2040, 1, 1))
    with pytest.raises(ConfigError, match="LSE"):
        trading_dates("LSE", date(2018, 1, 1), date(2018, 2, 1))

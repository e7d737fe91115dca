import json
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from emp_core.calendars import expected_bars
from emp_core.market_data.sources import ShippedSource, generate_bars, parse_chart_response
from emp_core.market_data.sources.yahoo import YahooError
from emp_core.market_data.validate import validate_bars
from tests.support import SHIPPED

FIXTURES = Path(__file__).parent / "fixtures"


def test_yahoo_parser_reads_the_recorded_chart_response():
    payload = (FIXTURES / "yahoo_chart_gspc_2018-12.json").read_text()
    bars = parse_chart_response(payload, "SPX")
    raw = json.loads(payload)["chart"]["result"][0]
    assert bars.height == len(raw["timestamp"])
    # 14:30 UTC session opens become New York session dates
    assert bars.get_column("ts").dt.hour().max() == 0
    shipped = pl.read_parquet(SHIPPED / "bars_daily.parquet").filter(
        (pl.col("symbol") == "SPX") & (pl.col("ts") >= datetime(2018, 12, 1)))
    assert bars.get_column("ts").to_list() == shipped.get_column("ts").to_list()
    joined = bars.drop_nulls().join(shipped, on="ts", suffix="_shipped")
    assert np.allclose(joined["close"], joined["close_shipped"], rtol=1e-6)
    assert bars.filter(pl.col("close").is_null()).height == 1
    # the null session is quarantined by the ingest path, the rest is valid
    checked = validate_bars(bars, interval="1d", now=datetime(2026, 1, 1))
    assert checked.valid.height == bars.height - 1
    assert checked.quarantine.get_column("reason").to_list() == [
        "missing open; missing high; missing low; missing close; missing volume"]


def test_yahoo_parser_applies_the_adjustment_factor():
    payload = json.loads((FIXTURES / "yahoo_chart_gspc_2018-12.json").read_text())
    result = payload["chart"]["result"][0]
    result["indicators"]["adjclose"][0]["adjclose"] = [
        None if c is None else c / 2 for c in result["indicators"]["quote"][0]["close"]]
    bars = parse_chart_response(payload, "SPX").drop_nulls()
    unadjusted = parse_chart_response(payload, "SPX", adjust=False).drop_nulls()
    for col in ("open", "high", "low", "close"):
        assert np.allclose(bars[col], unadjusted[col] / 2)
    assert bars["volume"].to_list() == unadjusted["volume"].to_list()


def test_yahoo_errors_are_clear():
    with pytest.raises(YahooError, match="yahoo NOPE: Not Found: No data found"):
        parse_chart_response((FIXTURES / "yahoo_chart_not_found.json").read_text(), "NOPE")
    with pytest.raises(YahooError, match="not JSON"):
        parse_chart_response("<html>rate limited</html>", "SPX")


def test_synthetic_universe_is_seeded_consistent_and_on_calendar():
    start, end = datetime(2015, 1, 1), datetime(2016, 1, 1)
    a = generate_bars(7, start, end, seed=3)
    b = generate_bars(7, start, end, seed=3)
    c = generate_bars(7, start, end, seed=4)
    assert a.equals(b) and not a.equals(c)
    sessions = expected_bars("XNYS", "1d", start, end)
    assert a.height == 7 * len(sessions)
    assert a.filter(pl.col("symbol") == "SYN0000").get_column("ts").to_list() == sessions.to_list()
    checked = validate_bars(a, interval="1d", now=datetime(2026, 1, 1))
    assert checked.quarantine.height == 0
    assert (a["volume"] > 0).all()
    # returns are not degenerate: annualised volatility within the generator's range
    vol = a.group_by("symbol").agg((pl.col("close").log().diff().std() * 252**0.5).alias("v"))["v"]
    assert vol.min() > 0.1 and vol.max() < 1.0


def test_shipped_source_reads_a_window_and_reports_coverage():
    src = ShippedSource(SHIPPED)
    window = src.read("bars_1d", datetime(2008, 9, 1), datetime(2008, 10, 1), ["SPX", "AAPL"])
    assert set(window["symbol"]) == {"SPX", "AAPL"}
    assert window["ts"].min() >= datetime(2008, 9, 1) and window["ts"].max() < datetime(2008, 10, 1)
    cov = dict((s, (a, b)) for s, a, b in src.coverage("bars_1d", None).iter_rows())
    assert cov["GOOG"] == (datetime(2004, 8, 19), datetime(2013, 3, 1))
    assert set(cov) == {"AAPL", "GOOG", "IBM", "IXIC", "MSFT", "SPX"}

from datetime import datetime

import polars as pl
import pytest

from emp_core.errors import EmpError
from emp_core.market_data.ingest import Partition, ingest_bars, new_run_id
from emp_core.market_data.macro import load_macro_series, macro_series, macro_series_checks
from emp_core.market_data.pipeline import ingest_window
from emp_core.market_data.sources import ShippedSource
from tests.support import SHIPPED

NOW = datetime(2026, 1, 1)


def months(y0, m0, count):
    out, y, m = [], y0, m0
    for _ in range(count):
        y2, m2 = (y + 1, 1) if m == 12 else (y, m + 1)
        out.append(Partition(f"{y}-{m:02d}-01", datetime(y, m, 1), datetime(y2, m2, 1)))
        y, m = y2, m2
    return out


def test_rerunning_a_window_is_idempotent(store):
    src = ShippedSource(SHIPPED)
    parts = months(2008, 1, 6)
    first = ingest_bars(store, src, "bars_1d", run_id=new_run_id("a"), partitions=parts, now=NOW)
    before = store.read_bars("bars_1d")
    second = ingest_bars(store, src, "bars_1d", run_id=new_run_id("b"), partitions=parts, now=NOW)
    after = store.read_bars("bars_1d")
    assert first.rows_stored == second.rows_stored == before.height == after.height > 0
    assert before.equals(after)
    dups = store.query("SELECT count(*) - count(DISTINCT (symbol, ts)) FROM market.bars_1d").item()
    assert dups == 0
    # every run journals one row per month, and its counts add up
    journal = store.query("SELECT run_id, count(*) n, sum(rows_in) i, sum(rows_stored) s "
                          "FROM market.ingest_journal GROUP BY run_id ORDER BY min(started_at)")
    assert journal["n"].to_list() == [6, 6]
    assert journal["i"].to_list() == journal["s"].to_list() == [first.rows_in, second.rows_in]


def test_a_window_only_touches_its_own_months(store):
    src = ShippedSource(SHIPPED)
    ingest_bars(store, src, "bars_1d", run_id=new_run_id("a"), partitions=months(2008, 1, 12), now=NOW)
    march = store.read_bars("bars_1d", start=datetime(2008, 3, 1), end=datetime(2008, 4, 1))
    ingest_bars(store, src, "bars_1d", run_id=new_run_id("b"), partitions=months(2008, 6, 1), symbols=["SPX"],
                now=NOW)
    assert store.read_bars("bars_1d", start=datetime(2008, 3, 1), end=datetime(2008, 4, 1)).equals(march)
    runs = store.query("SELECT DISTINCT run_id FROM market.bars_1d WHERE ts >= '2008-06-01' AND ts < '2008-07-01' "
                       "AND symbol = 'SPX'")
    assert runs.height == 1 and runs.item().startswith("b-")


def test_a_symbol_selection_only_replaces_those_symbols(store):
    """Re-ingesting a window for some symbols keeps every other symbol's bars in that window."""
    src = ShippedSource(SHIPPED)
    ingest_bars(store, src, "bars_1d", run_id=new_run_id("a"), partitions=months(2008, 1, 12), now=NOW)
    before = store.read_bars("bars_1d")
    assert before["symbol"].n_unique() == 6
    ingest_bars(store, src, "bars_1d", run_id=new_run_id("b"), partitions=months(2008, 1, 12), symbols=["SPX"],
                now=NOW)
    assert store.read_bars("bars_1d").equals(before)
    runs = store.query("SELECT symbol, list(DISTINCT left(run_id, 2)) AS runs FROM market.bars_1d GROUP BY symbol")
    assert dict(zip(runs["symbol"], runs["runs"].to_list(), strict=True)) == {
        s: (["b-"] if s == "SPX" else ["a-"]) for s in runs["symbol"]}


def test_rows_the_source_no_longer_delivers_are_removed_on_rerun(store, data_dir):
    parts = months(2010, 1, 1)
    ingest_bars(store, ShippedSource(data_dir), "bars_1d", run_id=new_run_id("a"), partitions=parts, now=NOW)
    path = data_dir / "bars_daily.parquet"
    pl.read_parquet(path).filter(~((pl.col("symbol") == "IBM") & (pl.col("ts") == datetime(2010, 1, 5)))) \
        .write_parquet(path)
    ingest_bars(store, ShippedSource(data_dir), "bars_1d", run_id=new_run_id("b"), partitions=parts, now=NOW)
    ibm = store.read_bars("bars_1d", symbols=["IBM"])
    assert datetime(2010, 1, 5) not in ibm["ts"].to_list() and ibm.height == 19 - 1


def test_point_in_time_later_data_never_changes_earlier_bars(store, data_dir):
    """Truncate the future, ingest; then ingest the future too: the past is unchanged."""
    path = data_dir / "bars_daily.parquet"
    full = pl.read_parquet(path)
    full.filter(pl.col("ts") < datetime(2009, 1, 1)).write_parquet(path)
    ingest_bars(store, ShippedSource(data_dir), "bars_1d", run_id=new_run_id("a"), partitions=months(2008, 1, 24),
                now=NOW)
    past = store.read_bars("bars_1d", end=datetime(2009, 1, 1))
    full.write_parquet(path)
    ingest_bars(store, ShippedSource(data_dir), "bars_1d", run_id=new_run_id("b"), partitions=months(2009, 1, 12),
                now=NOW)
    assert store.read_bars("bars_1d", end=datetime(2009, 1, 1)).equals(past)
    assert store.read_bars("bars_1d", start=datetime(2009, 1, 1)).height > 0


def test_macro_availability_is_point_in_time(data_dir):
    """Publication dates depend only on a row's own period: truncating history changes none of them."""
    full, _ = macro_series(data_dir)
    path = data_dir / "macro_series.parquet"
    pl.read_parquet(path).filter(pl.col("period_start") < datetime(2000, 1, 1).date()).write_parquet(path)
    truncated, _ = macro_series(data_dir)
    key = ["series_id", "period_start"]
    assert truncated.join(full, on=key, suffix="_full").select(
        (pl.col("available_at") == pl.col("available_at_full")).all()).item()
    gdp = full.filter((pl.col("series_id") == "realgdp") & (pl.col("period_start") == datetime(2008, 7, 1).date()))
    assert gdp["period_end"].item() == datetime(2008, 9, 30).date()
    assert gdp["available_at"].item() >= datetime(2008, 10, 30).date()  # BEA's advance estimate came that day
    assert full.select((pl.col("available_at") >= pl.col("period_end")).all()).item()



@pytest.mark.parametrize(("month", "released"), [
    # BLS release dates, from its schedule and notices (not from this code): January 2014's CPI on 20 February
    # 2014; September 2013's, delayed by the federal shutdown, on 30 October 2013
    (datetime(2014, 1, 1), datetime(2014, 2, 20)),
    (datetime(2013, 9, 1), datetime(2013, 10, 30)),
])
def test_core_cpi_is_never_public_before_its_release(month, released):
    full, _ = macro_series(SHIPPED)
    row = full.filter((pl.col("series_id") == "core_cpi") & (pl.col("period_start") == month.date()))
    assert row.height == 1 and row["available_at"].item() >= released.date()


@pytest.mark.parametrize(("series", "quarter", "released"), [
    # release dates as we know them (this machine cannot check an archive): BEA advance estimates on 31 July 2008
    # and 31 July 2009 (Q2), 31 days after the quarter; Q4 1995's delayed by
    # the shutdown to late February 1996 (the 23rd is bounded here by the 20th); December 1995's jobs report on
    # 19 January 1996, which the quarterly unemployment rate of Q4 1995 needs
    ("realgdp", datetime(2008, 4, 1), datetime(2008, 7, 31)),
    ("realgdp", datetime(2009, 4, 1), datetime(2009, 7, 31)),
    ("realgdp", datetime(1995, 10, 1), datetime(1996, 2, 20)),
    ("unemp", datetime(1995, 10, 1), datetime(1996, 1, 19)),
])
def test_quarterly_series_are_never_public_before_their_release(series, quarter, released):
    full, _ = macro_series(SHIPPED)
    row = full.filter((pl.col("series_id") == series) & (pl.col("period_start") == quarter.date()))
    assert row.height == 1 and row["available_at"].item() >= released.date()


def test_the_point_in_time_check_fails_on_a_row_stamped_before_its_series_lag(store):
    load = load_macro_series(store, SHIPPED, run_id="r-macro", now=NOW)
    assert {c.name: c.passed for c in load.checks}["point_in_time"]
    with store.connect() as con:  # another writer stamps one core CPI month as public 15 days after its end
        con.execute("UPDATE macro.series SET available_at = period_end + INTERVAL 15 DAY "
                    "WHERE series_id = 'core_cpi' AND period_start = DATE '2014-01-01'")
    failed = {c.name: c for c in macro_series_checks(store)}["point_in_time"]
    assert not failed.passed and failed.metadata["violations"] == 1
    with store.connect() as con:  # a series the lag table does not list is held to the default lag
        con.execute("UPDATE macro.series SET series_id = 'unlisted', available_at = period_end + INTERVAL 29 DAY "
                    "WHERE series_id = 'aaa_yield' AND period_start = DATE '2000-01-01'")
    assert {c.name: c for c in macro_series_checks(store)}["point_in_time"].metadata["violations"] == 2



def test_a_calendar_that_cannot_be_built_is_journaled_like_a_failing_source(store, monkeypatch):
    from emp_core import calendars

    def broken():
        raise ImportError("exchange_calendars broken")

    monkeypatch.setattr(calendars, "_xnys_sessions", broken)
    with pytest.raises(ImportError, match="exchange_calendars broken"):
        ingest_window(store, ShippedSource(SHIPPED), "bars_1d", months(2008, 1, 1), run_id="r-calendar")
    journal = store.query("SELECT status, message FROM market.ingest_journal")
    assert journal.rows() == [("failed", "ImportError: exchange_calendars broken")]

def test_a_failing_source_is_journaled_and_writes_no_bars(store):
    class Broken(ShippedSource):
        def read(self, *args, **kwargs):
            raise EmpError("feed unavailable")

    with pytest.raises(EmpError, match="feed unavailable"):
        ingest_window(store, Broken(SHIPPED), "bars_1d", months(2008, 1, 2), run_id="r-broken")
    journal = store.query("SELECT partition_key, status, message FROM market.ingest_journal ORDER BY 1")
    assert journal["status"].to_list() == ["failed", "failed"]
    assert journal["message"].to_list() == ["EmpError: feed unavailable"] * 2
    assert store.read_bars("bars_1d").height == 0

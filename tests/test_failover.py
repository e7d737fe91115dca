"""Failover against a real PostgreSQL server that a test stops and restarts (a private one, see PrivatePostgres):
ingest goes on into the embedded fallback with the decision recorded, nothing is lost or doubled, and the
catch-up after the restart restores parity."""

import threading
import time
from datetime import datetime

import polars as pl
import pytest

from emp_core.market_data.ingest import Partition
from emp_core.market_data.pipeline import ingest_window
from emp_core.market_data.sources import FileSource, ShippedSource, generate_bars
from emp_core.store import DuckDBStore
from emp_core.store.failover import LOG_TABLE, FailoverStore, bar_parity, catch_up, pending
from emp_core.store.postgres_store import PostgresStore, StoreUnavailableError
from tests.support import SHIPPED

BAR_COLUMNS = ["symbol", "ts", "open", "high", "low", "close", "volume"]
NOW = datetime(2026, 1, 1)


def year(y: int) -> list[Partition]:
    return [Partition(f"{y}", datetime(y, 1, 1), datetime(y + 1, 1, 1))]


def bars(store) -> pl.DataFrame:
    return store.read_bars("bars_1d").select(BAR_COLUMNS)


@pytest.fixture
def stores(private_pg, tmp_path):
    primary = PostgresStore(private_pg.url)
    fallback = DuckDBStore(tmp_path / "failover.duckdb")
    yield FailoverStore(primary, fallback), primary, fallback
    primary.dispose()


def test_postgres_stopped_between_partitions_of_a_run(private_pg, stores, tmp_path):
    store, primary, fallback = stores
    reference = DuckDBStore(tmp_path / "reference.duckdb")
    source = ShippedSource(SHIPPED)
    for y in (2010, 2011, 2012, 2013):
        ingest_window(reference, source, "bars_1d", year(y), run_id=f"ref-{y}", now=NOW)
    for y in (2010, 2011):
        ingest_window(store, source, "bars_1d", year(y), run_id=f"run-{y}", now=NOW)
    assert store.reason is None
    private_pg.stop()
    for y in (2012, 2013):  # the same run goes on: writes, then reads its window back for the checks
        result = ingest_window(store, source, "bars_1d", year(y), run_id=f"run-{y}", now=NOW)
        assert all(c.passed for c in result.checks), result.failed_checks
    assert store.reason and "127.0.0.1" in store.reason and "failed over" in store.location
    log = pending(fallback)
    assert log.filter(pl.col("operation") == "replace_bars")["run_id"].to_list() == ["run-2012", "run-2013"]
    assert log["reason"].unique().to_list() == [store.reason]
    # nothing lost: the two stores together hold every bar of the reference, once
    with pytest.raises(StoreUnavailableError):
        catch_up(primary, fallback)  # still down: nothing replayed, nothing marked
    assert pending(fallback).height == log.height

    private_pg.start()
    report = catch_up(primary, fallback)
    assert report.parity and len(report.replayed) == log.height
    assert bars(primary).equals(bars(reference))
    journal = primary.query("SELECT run_id, count(*) AS n FROM market.ingest_journal GROUP BY run_id ORDER BY 1")
    assert journal.rows() == [(f"run-{y}", 1) for y in (2010, 2011, 2012, 2013)]
    assert pending(fallback).height == 0
    assert catch_up(primary, fallback).replayed == []  # a second catch-up has nothing to do
    # the parity check can fail: a bar changed on one side is seen
    primary.query("UPDATE market.bars_1d SET close = close + 1 WHERE run_id = 'run-2013' AND symbol = "
                  "(SELECT min(symbol) FROM market.bars_1d WHERE run_id = 'run-2013') AND ts = "
                  "(SELECT min(ts) FROM market.bars_1d WHERE run_id = 'run-2013')")
    assert not bar_parity(primary, fallback, "bars_1d", "run-2013")["parity"]
    assert bar_parity(primary, fallback, "bars_1d", "run-2012")["parity"]


def test_postgres_stopped_in_the_middle_of_a_copy(private_pg, stores, tmp_path):
    """The server dies while the bulk COPY of one window is streaming: that transaction never commits on the
    primary, the window is written whole to the fallback, and the catch-up brings it over once."""
    store, primary, fallback = stores
    frame = generate_bars(300, datetime(2010, 1, 1), datetime(2020, 1, 1), seed=3)
    path = tmp_path / "big.parquet"
    frame.write_parquet(path)
    primary.tables()  # the schema is there before the run
    killer = threading.Timer(1.5, private_pg.stop)
    killer.start()
    t0 = time.monotonic()
    partitions = [Partition(f"{y}", datetime(y, 1, 1), datetime(y + 1, 1, 1)) for y in range(2010, 2020)]
    ingest_window(store, FileSource(path, name="bulk"), "bars_1d", partitions, run_id="bulk-1", now=NOW,
                  max_gap_ratio=1.0)
    killer.join()
    assert store.reason is not None, f"the server was stopped after the write committed ({time.monotonic() - t0:.1f}s)"
    assert bars(fallback).height == frame.height
    private_pg.start()
    assert primary.query("SELECT count(*) FROM market.bars_1d").item() == 0  # rolled back with the connection
    report = catch_up(primary, fallback)
    assert report.parity
    assert bars(primary).equals(bars(fallback))
    assert primary.query("SELECT count(*) FROM market.ingest_journal WHERE run_id = 'bulk-1'").item() == \
        fallback.query("SELECT count(*) FROM market.ingest_journal WHERE run_id = 'bulk-1'").item()


def test_the_decision_is_recorded_once_per_outage_with_every_write(private_pg, stores):
    store, _, fallback = stores
    private_pg.stop()
    store.replace_table("macro.series", pl.DataFrame(schema={"series_id": pl.String}))
    store.replace_table("macro.series", pl.DataFrame(schema={"series_id": pl.String}))
    rows = fallback.query(f"SELECT operation, target, decided_at FROM {LOG_TABLE}")
    assert rows["operation"].to_list() == ["replace_table"] * 2 and rows["decided_at"].n_unique() == 1

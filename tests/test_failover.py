"""Failover against a real PostgreSQL server that a test stops and restarts (a private one, see PrivatePostgres):
ingest goes on into the embedded fallback with the decision recorded, nothing is lost or doubled, and the
catch-up after the restart restores parity."""

import threading
import time
from datetime import datetime, timedelta

import polars as pl
import pytest

from emp_core.clock import utcnow
from emp_core.market_data.ingest import Partition
from emp_core.market_data.pipeline import ingest_window
from emp_core.market_data.sources import FileSource, ShippedSource, SyntheticSource, generate_bars
from emp_core.store import DuckDBStore
from emp_core.store.failover import LOG_TABLE, FailoverStore, catch_up, pending
from emp_core.store.postgres_store import PostgresStore, StoreUnavailableError
from tests.support import SHIPPED

BAR_COLUMNS = ["symbol", "ts", "open", "high", "low", "close", "volume"]
NOW = datetime(2026, 1, 1)


def year(y: int) -> list[Partition]:
    return [Partition(f"{y}", datetime(y, 1, 1), datetime(y + 1, 1, 1))]


def bars(store) -> pl.DataFrame:
    return store.read_bars("bars_1d").select(BAR_COLUMNS)


def run_bars(store, run_id: str) -> pl.DataFrame:
    """A run's bars with their source and run, in key order (a comparison of two stores' rows)."""
    return store.query("SELECT * FROM market.bars_1d WHERE run_id = $r ORDER BY symbol, ts", {"r": run_id})


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
    assert not run_bars(primary, "run-2013").equals(run_bars(fallback, "run-2013"))
    assert run_bars(primary, "run-2012").equals(run_bars(fallback, "run-2012"))


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


# -- catch-up semantics, outages simulated by an unreachable address (the review's cases) ---------------------


def synthetic(symbols: int, seed: int, price: float | None = None):
    source = SyntheticSource(symbols, datetime(2020, 1, 1), datetime(2021, 1, 1), seed=seed)
    if price is not None:
        frame = source._frame.with_columns(pl.lit(price).alias("open"), pl.lit(price).alias("close"),
                                           pl.lit(price + 1).alias("high"), pl.lit(price - 1).alias("low"))
        source = FileSourceOf(frame)
    return source


class FileSourceOf:
    """A source over a frame (the bench's kind), named like the synthetic one."""

    name = "synthetic"

    def __init__(self, frame):
        self.frame = frame

    def read(self, dataset, start, end, symbols):
        return self.frame if symbols is None else self.frame.filter(pl.col("symbol").is_in(list(symbols)))

    def coverage(self, dataset, symbols):
        return pl.DataFrame(schema={"symbol": pl.String, "first_ts": pl.Datetime("us"), "last_ts": pl.Datetime("us")})

    def describe(self):
        return "frame"


YEAR = [Partition("2020", datetime(2020, 1, 1), datetime(2021, 1, 1))]


def settle(monkeypatch) -> None:
    """Let time pass between a write on the primary and a later outage write: the catch-up takes a write on the
    primary within its clock margin (60 s) of an outage write as later (a conflict unless the rows agree);
    tests shrink the margin and wait past it."""
    from emp_core.store import failover

    monkeypatch.setattr(failover, "MARGIN", timedelta(milliseconds=200))
    time.sleep(0.3)


def test_a_run_limited_to_some_symbols_replays_only_those(outage, monkeypatch):
    """The review's C1: the log must keep the run's symbol selection, or the replay deletes the window's other
    symbols of the same source on the primary."""
    primary, down, fallback = outage
    ingest_window(primary, synthetic(3, 1), "bars_1d", YEAR, run_id="before", now=NOW, max_gap_ratio=1.0)
    others = primary.read_bars("bars_1d", symbols=["SYN0001", "SYN0002"])
    settle(monkeypatch)
    ingest_window(down(), synthetic(3, 1, price=50.0), "bars_1d", YEAR, run_id="outage", symbols=["SYN0000"],
                  now=NOW, max_gap_ratio=1.0)
    report = catch_up(primary, fallback)
    assert report.parity, report.replayed
    assert primary.read_bars("bars_1d", symbols=["SYN0001", "SYN0002"]).equals(others)
    assert (primary.read_bars("bars_1d", symbols=["SYN0000"])["close"] == 50.0).all()


def test_writes_replay_in_the_order_they_were_made(outage):
    """The review's C2: two processes failed over at different times; the later write must win, whatever
    order the failovers were decided in."""
    primary, down, fallback = outage
    first_to_fail, second_to_fail = down(), down()
    first_to_fail.append("market.ingest_journal", pl.DataFrame(  # P1 fails over first, on another write
        [{"run_id": "P1", "dataset": "bars_1h", "source": "t", "input": "-", "rows_in": 0, "rows_stored": 0,
          "rows_quarantined": 0, "status": "failed", "started_at": NOW, "finished_at": NOW}]))
    ingest_window(second_to_fail, synthetic(2, 1, price=10.0), "bars_1d", YEAR, run_id="A", now=NOW,
                  max_gap_ratio=1.0)
    ingest_window(first_to_fail, synthetic(2, 1, price=20.0), "bars_1d", YEAR, run_id="B", now=NOW,
                  max_gap_ratio=1.0)
    assert first_to_fail.decided_at < second_to_fail.decided_at
    report = catch_up(primary, fallback)
    assert [r["run_id"] for r in report.replayed] == ["P1", "A", "B"] and report.parity
    assert primary.read_bars("bars_1d").equals(fallback.read_bars("bars_1d"))
    assert (primary.read_bars("bars_1d")["close"] == 20.0).all()


def test_newer_rows_on_the_primary_are_a_conflict_not_overwritten(outage):
    """The review's C4: a window written on the recovered primary after the outage's write is not replaced by
    the stale outage rows; the catch-up reports the conflict and leaves the write pending."""
    primary, down, fallback = outage
    ingest_window(down(), synthetic(2, 1, price=10.0), "bars_1d", YEAR, run_id="stale", now=NOW, max_gap_ratio=1.0)
    ingest_window(primary, synthetic(2, 1, price=30.0), "bars_1d", YEAR, run_id="newer", now=NOW, max_gap_ratio=1.0)
    report = catch_up(primary, fallback)
    assert not report.parity and "CONFLICT" in report.replayed[0]["note"] and "newer" in report.replayed[0]["note"]
    assert (primary.read_bars("bars_1d")["close"] == 30.0).all()
    assert pending(fallback).height == 1  # waits for a decision


def test_only_replayed_writes_are_marked_and_a_read_never_fails_over(outage):
    primary, down, fallback = outage
    store = down()
    with pytest.raises(StoreUnavailableError):
        store.read_bars("bars_1d")  # a derived asset's read: it waits for the primary, not the fallback
    assert store.reason is None
    ingest_window(store, synthetic(2, 1), "bars_1d", YEAR, run_id="r1", now=NOW, max_gap_ratio=1.0)
    store.replace_table("market.universe", pl.DataFrame({"dataset": ["bars_1d"], "symbol": ["X"]}))
    rows = pending(fallback)
    assert rows["operation"].to_list() == ["replace_bars", "replace_table"]
    fallback.append_table(LOG_TABLE, rows.head(1).with_columns(  # a write that arrives with nothing to identify
        pl.lit("append").alias("operation"), pl.lit(None, pl.String).alias("run_id"), pl.lit(99, pl.Int64).alias("seq"),
        pl.lit(datetime(2099, 1, 1)).alias("written_at")))
    report = catch_up(primary, fallback)
    assert [r["parity"] for r in report.replayed] == [True, True, False]
    assert pending(fallback)["operation"].to_list() == ["append"]  # only what was replayed with parity is marked
    assert primary.query("SELECT symbol FROM market.universe").rows() == [("X",)]


def test_a_server_that_is_up_but_refuses_is_an_error_not_an_outage(outage, pg_url):
    """The re-review: a lock timeout (or a refused login) made a healthy primary fail over, so other writers
    went on there while this run wrote to the fallback."""
    import psycopg

    from emp_core.store.postgres_store import is_outage

    primary, _, fallback = outage
    primary.tables()
    holder = psycopg.connect(pg_url)
    holder.execute("LOCK TABLE market.bars_1d IN ACCESS EXCLUSIVE MODE")
    try:
        store = FailoverStore(PostgresStore(f"{pg_url}?options=-c%20lock_timeout%3D200"), fallback)
        with pytest.raises(Exception, match="lock timeout"):
            ingest_window(store, synthetic(1, 1), "bars_1d", YEAR, run_id="locked", now=NOW, max_gap_ratio=1.0)
        assert store.reason is None and pending(fallback).height == 0
    finally:
        holder.close()
    refused = FailoverStore(PostgresStore(pg_url.replace("127.0.0.1", "nosuchrole@127.0.0.1")), fallback)
    with pytest.raises(Exception, match="nosuchrole"):
        refused.upsert_bars("bars_1d", synthetic(1, 1)._frame, source="t", run_id="r")
    assert refused.reason is None
    assert is_outage(psycopg.OperationalError("connection refused"))


def test_a_narrow_then_a_whole_run_in_one_outage_catch_up_cleanly_and_again_after_a_crash(outage, monkeypatch):
    """The re-review: the outside-unchanged check ran after every replay, and the outage's own replayed runs
    counted as newer primary runs, so this ordinary sequence stuck as a conflict for good. A catch-up that died
    before marking leaves the replays of its later writes on the primary: the next one applies them again in
    order, not as conflicts."""
    from emp_core.store import failover

    primary, down, fallback = outage
    store = down()
    ingest_window(store, synthetic(3, 1, price=5.0), "bars_1d", YEAR, run_id="narrow", symbols=["SYN0000"],
                  now=NOW, max_gap_ratio=1.0)
    ingest_window(store, synthetic(3, 1, price=6.0), "bars_1d", YEAR, run_id="whole", now=NOW, max_gap_ratio=1.0)
    with monkeypatch.context() as m:
        m.setattr(failover, "_mark_done", lambda *a, **k: None)  # as if it died before marking
        report = catch_up(primary, fallback)
    assert report.parity, report.replayed
    assert pending(fallback).height == 2
    again = catch_up(primary, fallback)
    assert again.parity and pending(fallback).height == 0, again.replayed
    assert primary.read_bars("bars_1d").equals(fallback.read_bars("bars_1d"))


def test_a_write_that_holds_the_table_while_the_catch_up_waits_is_a_conflict(outage, pg_url):
    """The re-review's race: the conflict test must run under the table's write lock, in the replay's own
    transaction. A writer holds the lock (its stamp not yet committed) when the catch-up reaches the table; the
    replay waits, then sees the writer's stamp and refuses. A test run before taking the lock would miss it."""
    import threading
    import time

    import psycopg

    primary, down, fallback = outage
    ingest_window(down(), synthetic(2, 1, price=10.0), "bars_1d", YEAR, run_id="stale", now=NOW, max_gap_ratio=1.0)
    primary.tables()
    holder = psycopg.connect(pg_url)
    holder.execute("SELECT pg_advisory_xact_lock(hashtext('emp-write:market.bars_1d'))")
    holder.execute("INSERT INTO ops.write_log (operation, target, run_id) VALUES ('replace_bars', 'market.bars_1d', "
                   "'newer')")
    reports = []
    worker = threading.Thread(target=lambda: reports.append(catch_up(primary, fallback)))
    worker.start()
    time.sleep(1.5)
    waited = worker.is_alive()
    holder.commit()
    holder.close()
    worker.join(60)
    assert waited, "the replay did not wait for the table's write lock"
    report = reports[0]
    assert not report.parity and "CONFLICT" in report.replayed[0]["note"] and "newer" in report.replayed[0]["note"]
    assert primary.read_bars("bars_1d").height == 0 and pending(fallback).height == 1


def test_a_failed_over_store_caches_nothing(outage, redis_server):
    """Reads through the cache while failed over come from the fallback: they must not fill the primary's
    namespace (the review found another process then served the fallback's partial rows)."""
    from emp_core.store.cache import CachedStore, HotCache

    _, down, _ = outage
    cached = CachedStore(down(), HotCache(redis_server, namespace="fo"))
    ingest_window(cached, synthetic(2, 1), "bars_1d", YEAR, run_id="r", now=NOW, max_gap_ratio=1.0)
    got = cached.read_bars("bars_1d", symbols=["SYN0000"], start=datetime(2020, 1, 1), end=datetime(2021, 1, 1))
    assert got.height > 0
    import redis

    assert [k for k in redis.Redis.from_url(redis_server).scan_iter("fo:bars:*")] == []


def test_upserts_and_feature_windows_written_during_an_outage_are_replayed(outage):
    primary, down, fallback = outage
    store = down()
    bars = synthetic(2, 1)._frame
    store.upsert_bars("bars_1h", bars, source="stream", run_id="s1")  # a stream consumer's batch
    window = pl.DataFrame({"dataset": "bars_1d", "symbol": "SYN0000", "ts": [datetime(2020, 1, 2)], "x": [1.5],
                           "run_id": "f1"})
    store.replace_windows({"sensory.extra": window}, dataset="bars_1d", start=datetime(2020, 1, 1),
                          end=datetime(2021, 1, 1))
    report = catch_up(primary, fallback)
    assert report.parity and [r["operation"] for r in report.replayed] == ["upsert_bars", "replace_windows"]
    assert primary.read_bars("bars_1h").equals(fallback.read_bars("bars_1h"))
    assert primary.query("SELECT symbol, x FROM sensory.extra").rows() == [("SYN0000", 1.5)]


# -- the log and the write commit together; each write replays only itself; conflicts on the server's clock -----


_CRASH = """
import os, sys
from datetime import datetime, timedelta
import polars as pl
from emp_core.store import DuckDBStore
from emp_core.store.failover import FailoverStore
from emp_core.store.postgres_store import PostgresStore

store = FailoverStore(PostgresStore(sys.argv[2], connect_timeout=2), DuckDBStore(sys.argv[1]))
real = FailoverStore._recorder

def dying(self, *args):
    record = real(self, *args)
    def then_die(con):
        record(con)
        os._exit(9)  # the process dies after the write and its record, before the transaction commits
    return then_die

FailoverStore._recorder = dying
bars = pl.DataFrame({"symbol": ["X"] * 3, "ts": [datetime(2020, 1, d) for d in (2, 3, 6)], "open": 1.0,
                     "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0})
store.upsert_bars("bars_1h", bars, source="stream", run_id="c1")
"""


def test_a_crash_between_a_fallback_write_and_its_record_leaves_neither(tmp_path):
    """The review: the fallback's write committed, then its log row was appended in a second transaction, so a
    crash between them left rows no catch-up would ever replay. Both now commit in one transaction."""
    import subprocess
    import sys

    from emp_core.config import REPO_ROOT as REPO
    from tests.support import free_port

    script = tmp_path / "crash.py"
    script.write_text(_CRASH)
    path = tmp_path / "failover.duckdb"
    done = subprocess.run([sys.executable, str(script), str(path), f"postgresql://127.0.0.1:{free_port()}/emp"],
                          check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 9, done.stderr
    fallback = DuckDBStore(path)
    assert fallback.query("SELECT count(*) AS n FROM market.bars_1h").item() == 0
    assert pending(fallback).height == 0


def hourly(symbol: str, hours, price: float) -> pl.DataFrame:
    return pl.DataFrame({"symbol": symbol, "ts": [datetime(2020, 3, 2, h) for h in hours], "open": price,
                         "high": price + 1, "low": price - 1, "close": price, "volume": 100.0})


def test_each_upsert_batch_replays_only_its_own_bars_and_parity_is_on_its_keys(outage, monkeypatch):
    """The review: a stream consumer keeps one run id, so replaying "the run's rows" for each logged batch sent
    every batch's rows again (quadratic), and parity over each symbol's [first, last] span counted the
    primary's own bars between sparse keys as a mismatch."""
    primary, down, fallback = outage
    primary.upsert_bars("bars_1h", hourly("X", range(9, 15), 1.0), source="stream", run_id="c1")  # before it
    settle(monkeypatch)
    store = down()
    batches = [hourly("X", [10, 12], 2.0), hourly("X", [12], 3.0), hourly("Y", [9, 10, 11], 4.0)]
    for batch in batches:
        store.upsert_bars("bars_1h", batch, source="stream", run_id="c1")
    sent = []
    real = PostgresStore.upsert_bars
    monkeypatch.setattr(PostgresStore, "upsert_bars",
                        lambda self, table, bars, **kw: sent.append(bars.height) or real(self, table, bars, **kw))
    report = catch_up(primary, fallback)
    assert sent == [2, 1, 3]
    assert report.parity, report.replayed
    x = dict(primary.read_bars("bars_1h", symbols=["X"]).select("ts", "close").iter_rows())
    assert [x[datetime(2020, 3, 2, h)] for h in range(9, 15)] == [1.0, 2.0, 1.0, 3.0, 1.0, 1.0]
    assert pending(fallback).height == 0
    assert fallback.query("SELECT count(*) AS n FROM ops.failover_rows").item() == 0  # dropped once caught up


def test_a_stream_write_on_the_primary_after_the_outage_is_a_conflict(outage):
    """The review: only the ingest journal was consulted, so a newer bar from the stream consumer (which writes
    no journal) was overwritten by the outage's stale window. Every write is stamped now; a write elsewhere in
    time is not a conflict."""
    primary, down, fallback = outage
    ingest_window(down(), synthetic(2, 1, price=10.0), "bars_1d", YEAR, run_id="stale", now=NOW, max_gap_ratio=1.0)
    fresh = hourly("SYN0000", [0], 99.0).with_columns(pl.lit(datetime(2020, 6, 1)).alias("ts"))
    later_year = fresh.with_columns(pl.lit(datetime(2021, 6, 1)).alias("ts"))
    primary.upsert_bars("bars_1d", later_year, source="stream", run_id="c1")  # outside the window: no conflict
    primary.upsert_bars("bars_1d", fresh, source="stream", run_id="c2")
    report = catch_up(primary, fallback)
    assert not report.parity and "CONFLICT" in report.replayed[0]["note"] and "c2" in report.replayed[0]["note"]
    assert primary.read_bars("bars_1d")["close"].to_list() == [99.0, 99.0]


def test_a_newer_universe_on_the_primary_is_a_conflict_and_the_operator_decides(outage, monkeypatch, tmp_path):
    """A whole-table replace (the universe) written on the primary after the outage's is a conflict too; the
    operator keeps the primary's (``emp db catch-up --keep-primary N``) or replays the outage's (``--replay``)."""
    from emp_core.cli import main

    primary, down, fallback = outage
    store = down()
    store.replace_table("market.universe", pl.DataFrame({"dataset": ["bars_1d"], "symbol": ["OLD"]}))
    store.replace_table("market.universe", pl.DataFrame({"dataset": ["bars_1d"], "symbol": ["OUTAGE"]}))
    primary.replace_table("market.universe", pl.DataFrame({"dataset": ["bars_1d"], "symbol": ["NEWER"]}))
    report = catch_up(primary, fallback)
    assert [r.get("note", "")[:10] for r in report.replayed] == ["superseded", "CONFLICT, "]
    assert primary.query("SELECT symbol FROM market.universe").rows() == [("NEWER",)]
    seq = report.replayed[1]["seq"]
    with pytest.raises(Exception, match="no pending failover write with seq 99"):
        catch_up(primary, fallback, keep_primary=[99])
    forced = catch_up(primary, fallback, force=[seq])
    assert forced.parity and forced.replayed[0]["forced"]
    assert primary.query("SELECT symbol FROM market.universe").rows() == [("OUTAGE",)]
    # the other decision, through the command line
    store.replace_table("market.universe", pl.DataFrame({"dataset": ["bars_1d"], "symbol": ["OUTAGE2"]}))
    primary.replace_table("market.universe", pl.DataFrame({"dataset": ["bars_1d"], "symbol": ["NEWER2"]}))
    monkeypatch.setenv("EMP_HOME", str(fallback.path.parent))
    monkeypatch.setenv("EMP_PG_URL", primary.url)
    assert main(["db", "catch-up"]) == 1  # the conflict: left pending
    left = pending(fallback)["seq"].to_list()
    assert len(left) == 1
    assert main(["db", "catch-up", "--keep-primary", str(left[0])]) == 0
    assert pending(fallback).height == 0
    assert primary.query("SELECT symbol FROM market.universe").rows() == [("NEWER2",)]


@pytest.mark.parametrize(("skew_hours", "rebooted"), [(1, False), (-1, False), (1, True), (-1, True)])
def test_conflicts_are_decided_on_the_servers_clock_whatever_the_hosts_clock_says(outage, monkeypatch, skew_hours,
                                                                                   rebooted):
    """The fallback's writes are stamped by this host, the primary's by the server. A host an hour ahead made a
    stale outage write look newer than a later write on the primary (it overwrote it); a host an hour behind made
    a write before the outage look newer (a false conflict). Within a boot the catch-up places a write by the
    monotonic clock (the wall clock's error does not matter); across a reboot by the wall clock, with the
    offset it measures."""
    from emp_core.store import failover

    primary, down, fallback = outage
    monkeypatch.setattr(failover, "utcnow", lambda: utcnow() + timedelta(hours=skew_hours))
    if rebooted:
        monkeypatch.setattr(failover, "_boot_id", lambda: "the boot of the outage")
    if skew_hours < 0:  # a run on the primary just before the outage: the outage's write is newer
        ingest_window(primary, synthetic(2, 1, price=30.0), "bars_1d", YEAR, run_id="before", now=NOW,
                      max_gap_ratio=1.0)
        settle(monkeypatch)
    ingest_window(down(), synthetic(2, 1, price=10.0), "bars_1d", YEAR, run_id="outage", now=NOW, max_gap_ratio=1.0)
    if skew_hours > 0:  # a run on the primary just after the outage's write: it is newer
        ingest_window(primary, synthetic(2, 1, price=30.0), "bars_1d", YEAR, run_id="after", now=NOW,
                      max_gap_ratio=1.0)
    if rebooted:
        monkeypatch.setattr(failover, "_boot_id", lambda: "a later boot")
    report = catch_up(primary, fallback)
    assert abs(report.clock["wall_offset_seconds"] + 3600 * skew_hours) < 5
    closes = primary.read_bars("bars_1d")["close"].unique().to_list()
    if skew_hours > 0:
        assert not report.parity and "CONFLICT" in report.replayed[0]["note"] and closes == [30.0]
    else:
        assert report.parity and closes == [10.0], report.replayed


def test_a_command_that_fails_during_an_outage_journals_its_failure_on_the_fallback(tmp_path, monkeypatch):
    """The review: the command line journals a failed ingest only when the store exists, and a failover store
    whose primary was down said it did not, so the failure left no record anywhere."""
    from emp_core.cli import main
    from tests.support import free_port

    bad = tmp_path / "bad.csv"
    bad.write_text("when,price\n2020-01-02,1.0\n")
    monkeypatch.setenv("EMP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EMP_TIER", "institutional")
    monkeypatch.setenv("EMP_PG_URL", f"postgresql://127.0.0.1:{free_port()}/emp")
    monkeypatch.setenv("EMP_REDIS_URL", "off")
    assert main(["ingest", "--source", "file", "--data", str(bad), "--symbol", "ACME"]) != 0
    fallback = DuckDBStore(tmp_path / "home" / "failover.duckdb")
    journal = fallback.query("SELECT status, message FROM market.ingest_journal")
    assert journal["status"].to_list() == ["failed"] and "bad.csv" in journal["message"][0]
    assert pending(fallback)["operation"].to_list() == ["append"]


@pytest.mark.parametrize("write", ["ingest", "upsert"])
def test_a_replay_whose_result_differs_from_the_write_is_rolled_back_and_left_pending(outage, write):
    """Each replay checks, before it commits, that the rows it governs on the primary are exactly the rows the
    write wrote. A trigger on the primary that alters inserted bars (someone's rounding rule) makes them differ:
    the replay is rolled back, reported and left pending, not marked caught up."""
    import psycopg

    primary, down, fallback = outage
    if write == "ingest":
        ingest_window(down(), synthetic(2, 1, price=10.0), "bars_1d", YEAR, run_id="outage", now=NOW,
                      max_gap_ratio=1.0)
    else:
        down().upsert_bars("bars_1d", synthetic(2, 1)._frame, source="stream", run_id="c1")
    primary.tables()
    with psycopg.connect(primary.url, autocommit=True) as con:
        con.execute("CREATE TABLE market.bars_1d_y2020 PARTITION OF market.bars_1d "
                    "FOR VALUES FROM ('2020-01-01') TO ('2021-01-01')")
        con.execute("CREATE FUNCTION market.bump() RETURNS trigger AS $$ BEGIN NEW.close := NEW.close + 1; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql")
        con.execute("CREATE TRIGGER bump BEFORE INSERT ON market.bars_1d_y2020 FOR EACH ROW "
                    "EXECUTE FUNCTION market.bump()")
    report = catch_up(primary, fallback)
    assert not report.parity and report.replayed[0]["note"].startswith("NOT VERIFIED"), report.replayed
    assert primary.read_bars("bars_1d").height == 0  # rolled back
    assert primary.query("SELECT count(*) AS n FROM market.ingest_journal").item() == 0
    assert pending(fallback).height == 1


def test_appends_replayed_by_a_catch_up_that_died_before_marking_are_not_doubled(outage, monkeypatch):
    """An append has no key to make it idempotent: the replay's own stamp on the primary (committed with it) is
    what tells the next catch-up it was applied."""
    from emp_core.market_data.ingest import journal_failure
    from emp_core.store import failover

    primary, down, fallback = outage
    store = down()
    journal_failure(store, run_id="R", dataset_name="bars_1d", source="synthetic", partitions=YEAR, error="boom")
    store.append_table("evolution.decisions", pl.DataFrame({"run_id": ["E"], "decision": ["keep"]}))
    with monkeypatch.context() as m:
        m.setattr(failover, "_mark_done", lambda *a, **k: None)  # dies before marking
        first = catch_up(primary, fallback)
    again = catch_up(primary, fallback)
    assert first.parity and again.parity and pending(fallback).height == 0
    assert all(e["note"].startswith("already applied") for e in again.replayed) and len(again.replayed) == 2
    assert primary.query("SELECT count(*) AS n FROM market.ingest_journal WHERE run_id = 'R'").item() == 1
    assert primary.query("SELECT count(*) AS n FROM evolution.decisions").item() == 1


def test_a_write_is_placed_on_the_servers_clock_by_its_boots_monotonic_clock_with_drift_allowed():
    """Placement, computed by hand: server time = monotonic time + the measured offset in the same boot, with
    100 ppm of the time since added to the bound (10 h: 3.6 s); from another boot, wall time + its offset,
    the drift counted on the wall clock."""
    from emp_core.store.failover import ServerClock

    hour = 3_600_000_000_000
    clock = ServerClock(wall_offset=timedelta(seconds=-2), mono_offset_ns=1_700_000_000_000_000_000,
                        mono_now_ns=20 * hour, boot_id="b1", error=timedelta(milliseconds=1.5),
                        wall_now=datetime(2026, 1, 1, 22))
    at, error = clock.place({"boot_id": "b1", "mono_ns": 10 * hour, "written_at": datetime(2000, 1, 1)})
    assert at.replace(tzinfo=None) == datetime(2023, 11, 15, 8, 13, 20) and at.utcoffset() == timedelta(0)
    assert error == timedelta(seconds=3.6015)
    at, error = clock.place({"boot_id": "b0", "mono_ns": 10 * hour, "written_at": datetime(2026, 1, 1, 12)})
    assert at.replace(tzinfo=None) == datetime(2026, 1, 1, 11, 59, 58)
    assert error == timedelta(seconds=3.6015)  # 10 h on this host's wall clock since the write: 3.6 s of drift


def test_a_replace_that_leaves_a_row_of_its_scope_behind_is_rolled_back(outage, monkeypatch):
    """The other half of the check: a replace must leave nothing in its scope but its own rows. A trigger that
    keeps one old bar from being deleted (a Saturday bar the outage's window no longer holds) is caught."""
    import psycopg

    primary, down, fallback = outage
    saturday = hourly("SYN0000", [0], 5.0).with_columns(pl.lit(datetime(2020, 7, 4)).alias("ts"))
    primary.upsert_bars("bars_1d", saturday, source="synthetic", run_id="old")
    with psycopg.connect(primary.url, autocommit=True) as con:
        con.execute("CREATE FUNCTION market.keep() RETURNS trigger AS $$ BEGIN RETURN NULL; END $$ LANGUAGE plpgsql")
        con.execute("CREATE TRIGGER keep BEFORE DELETE ON market.bars_1d_y2020 FOR EACH ROW "
                    "WHEN (OLD.ts = '2020-07-04') EXECUTE FUNCTION market.keep()")
    settle(monkeypatch)
    ingest_window(down(), synthetic(2, 1, price=10.0), "bars_1d", YEAR, run_id="outage", now=NOW, max_gap_ratio=1.0)
    report = catch_up(primary, fallback)
    assert report.replayed[0]["note"].startswith("NOT VERIFIED") and "1 row(s)" in report.replayed[0]["note"]
    assert primary.read_bars("bars_1d")["close"].to_list() == [5.0]  # rolled back: the old bar alone

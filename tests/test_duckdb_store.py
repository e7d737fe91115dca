"""The embedded store on its own: idempotent replaces, all-or-nothing transactions, half-open windows,
schema growth, a file held by another process, and names that cannot inject SQL."""

import subprocess
import sys
import time
from datetime import datetime, timedelta

import polars as pl
import pytest

from emp_core.errors import EmpError
from emp_core.store import DuckDBStore
from emp_core.store.duckdb_store import StoreLockedError

T0 = datetime(2020, 1, 1)
NO_QUARANTINE = pl.DataFrame(schema={"run_id": pl.String})  # no rows quarantined


def bars(symbol: str, days: int, start: datetime = T0, price: float = 100.0) -> pl.DataFrame:
    ts = [start + timedelta(days=i) for i in range(days)]
    return pl.DataFrame({"symbol": symbol, "ts": ts, "open": price, "high": price + 1, "low": price - 1,
                         "close": price, "volume": 1000.0})


def journal(run_id: str, rows: int) -> pl.DataFrame:
    now = datetime(2026, 1, 1)
    return pl.DataFrame([{"run_id": run_id, "dataset": "bars_1d", "source": "test", "input": "memory",
                          "rows_in": rows, "rows_stored": rows, "rows_quarantined": 0, "status": "ok",
                          "started_at": now, "finished_at": now}])


def store_bars(store: DuckDBStore, frame: pl.DataFrame, run_id: str, window=None, source: str = "test") -> None:
    store.replace_bars("bars_1d", frame, source=source, run_id=run_id, window=window,
                       quarantine=NO_QUARANTINE, journal=journal(run_id, frame.height))


@pytest.fixture
def store(tmp_path):
    return DuckDBStore(tmp_path / "emp.duckdb", lock_timeout=1.0)


def test_replacing_the_same_bars_twice_keeps_one_copy(store):
    store_bars(store, bars("A", 10), "r1")
    store_bars(store, bars("A", 10, price=101.0), "r2")
    stored = store.read_bars("bars_1d")
    assert stored.height == 10 and (stored["close"] == 101.0).all()
    # without a window only the covered range of each symbol is replaced: B and A's later days stay
    store_bars(store, bars("B", 5), "r3")
    store_bars(store, bars("A", 3, price=102.0), "r4")
    a = store.read_bars("bars_1d", symbols=["A"])
    assert a["close"].to_list() == [102.0] * 3 + [101.0] * 7
    assert store.read_bars("bars_1d", symbols=["B"]).height == 5
    assert store.query("SELECT count(*) FROM market.ingest_journal").item() == 4


def test_a_window_replaces_what_the_source_or_the_symbols_stored_there(store):
    store_bars(store, bars("A", 10), "r1", source="feed")
    store_bars(store, bars("Z", 10), "r2", source="feed")
    window = (T0 + timedelta(days=2), T0 + timedelta(days=5))
    # the feed now has only A inside the window: Z's rows from the same source are deleted there, not outside
    store_bars(store, bars("A", 3, start=window[0], price=99.0), "r3", window=window, source="feed")
    z = store.read_bars("bars_1d", symbols=["Z"])
    assert z["ts"].to_list() == [T0 + timedelta(days=d) for d in (0, 1, 5, 6, 7, 8, 9)]
    assert store.read_bars("bars_1d", symbols=["A"])["close"].to_list() == [100.0] * 2 + [99.0] * 3 + [100.0] * 5


def test_a_failed_replace_changes_nothing(store):
    store_bars(store, bars("A", 10), "r1")
    bad_journal = journal("r2", 10).drop("status")  # a NOT NULL column missing: the insert fails last
    with pytest.raises(Exception, match="status"):
        store.replace_bars("bars_1d", bars("A", 10, price=50.0), source="test", run_id="r2", window=None,
                           quarantine=NO_QUARANTINE, journal=bad_journal)
    stored = store.read_bars("bars_1d")
    assert stored.height == 10 and (stored["close"] == 100.0).all()  # the delete and insert were rolled back
    assert store.query("SELECT count(*) FROM market.ingest_journal").item() == 1


def test_read_bars_is_half_open_and_sorted(store):
    store_bars(store, pl.concat([bars("B", 5), bars("A", 5)]), "r1")
    got = store.read_bars("bars_1d", start=T0 + timedelta(days=1), end=T0 + timedelta(days=3))
    assert got.select("symbol", "ts").rows() == [
        ("A", T0 + timedelta(days=1)), ("A", T0 + timedelta(days=2)),
        ("B", T0 + timedelta(days=1)), ("B", T0 + timedelta(days=2))]
    with pytest.raises(EmpError, match="unknown bar table"):
        store.replace_bars("bars_5m", bars("A", 1), source="t", run_id="r", window=None,
                           quarantine=NO_QUARANTINE, journal=journal("r", 1))


def test_replace_windows_is_idempotent_per_dataset(store):
    def frame(dataset: str, value: float) -> pl.DataFrame:
        return pl.DataFrame({"dataset": dataset, "ts": [T0 + timedelta(days=i) for i in range(4)], "x": value})

    store.replace_windows({"sensory.test": frame("d1", 1.0)}, dataset="d1", start=T0, end=T0 + timedelta(days=4))
    store.replace_windows({"sensory.test": frame("d2", 2.0)}, dataset="d2", start=T0, end=T0 + timedelta(days=4))
    again = frame("d1", 3.0).filter(pl.col("ts") >= T0 + timedelta(days=2))
    store.replace_windows({"sensory.test": again}, dataset="d1", start=T0 + timedelta(days=2),
                          end=T0 + timedelta(days=4))
    rows = store.query("SELECT dataset, x, count(*) AS n FROM sensory.test GROUP BY ALL ORDER BY ALL").rows()
    assert rows == [("d1", 1.0, 2), ("d1", 3.0, 2), ("d2", 2.0, 4)]


def test_append_table_grows_the_schema_and_refuses_a_type_clash(store):
    store.append_table("evolution.log", pl.DataFrame({"a": [1], "b": [None]}, schema={"a": pl.Int64, "b": pl.Int32}))
    store.append_table("evolution.log", pl.DataFrame({"a": [2], "b": [0.5], "c": ["new"]}))
    got = store.query("SELECT a, b, c FROM evolution.log ORDER BY a").rows()
    assert got == [(1, None, None), (2, 0.5, "new")]  # b widened to DOUBLE, not rounded to 0; c added
    with pytest.raises(EmpError, match=r"evolution\.log\.c is VARCHAR"):
        store.append_table("evolution.log", pl.DataFrame({"a": [3], "c": [datetime(2020, 1, 1)]}))
    assert store.query("SELECT count(*) FROM evolution.log").item() == 2


def test_overwrite_and_replace_table_and_counts(store):
    store.overwrite_table("sensory.calibration", pl.DataFrame({"k": [1, 2, 3]}))
    store.overwrite_table("sensory.calibration", pl.DataFrame({"k": [9], "v": ["x"]}))
    assert store.query("SELECT * FROM sensory.calibration").rows() == [(9, "x")]
    store.replace_table("market.universe", pl.DataFrame({"dataset": ["d"], "symbol": ["A"]}))
    store.replace_table("market.universe", pl.DataFrame({"dataset": ["d", "d"], "symbol": ["B", "C"]}))
    counts = store.table_counts()
    assert counts["market.universe"] == 2 and counts["sensory.calibration"] == 1
    assert set(store.tables()) == set(counts)


def test_names_that_are_not_tables_are_refused(store):
    for name in ("market.universe; DROP TABLE market.bars_1d", "universe", "Market.Universe", "a.b.c"):
        with pytest.raises(EmpError, match="not a table name"):
            store.replace_table(name, pl.DataFrame({"x": [1]}))


def test_reading_a_store_that_does_not_exist_says_what_to_do(tmp_path):
    with pytest.raises(EmpError, match="no store yet"), DuckDBStore(tmp_path / "none.duckdb").connect(read_only=True):
        pass


def test_a_file_held_by_another_process_gives_a_clear_error_after_the_timeout(store, tmp_path):
    store.tables()  # create the file
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time\n"
         f"con = duckdb.connect({str(store.path)!r})\nprint('held', flush=True)\ntime.sleep(30)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(StoreLockedError, match="held by another process"):
            store.tables()
        assert time.monotonic() - t0 >= store.lock_timeout  # it waited, with back-off, before giving up
    finally:
        holder.kill()
        holder.wait()
    assert store.tables()  # free again: the next call opens it

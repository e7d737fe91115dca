"""The stores on their own, one contract for both tiers: every test taking ``store`` runs on the embedded
DuckDB store and on the institutional PostgreSQL store (a private database on the loopback server):
idempotent replaces, all-or-nothing transactions, half-open windows, schema growth, names that cannot inject
SQL. Then what only one of them has: a DuckDB file held by another process; PostgreSQL's yearly partitions,
exact COPY round trips, an unreachable server."""

import subprocess
import sys
import time
from datetime import datetime, timedelta

import polars as pl
import pytest

from emp_core.errors import EmpError
from emp_core.store import DuckDBStore
from emp_core.store.duckdb_store import StoreLockedError
from emp_core.store.postgres_store import PostgresStore

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


@pytest.fixture(params=["duckdb", "postgres"])
def store(request, tmp_path):
    if request.param == "duckdb":
        yield DuckDBStore(tmp_path / "emp.duckdb", lock_timeout=1.0)
        return
    pg = PostgresStore(request.getfixturevalue("pg_url"))
    yield pg
    pg.dispose()


@pytest.fixture
def duck(tmp_path):
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
    rows = store.query("SELECT dataset, x, count(*) AS n FROM sensory.test GROUP BY dataset, x "
                       "ORDER BY dataset, x").rows()
    assert rows == [("d1", 1.0, 2), ("d1", 3.0, 2), ("d2", 2.0, 4)]


def test_append_table_grows_the_schema_and_refuses_a_type_clash(store):
    store.append_table("evolution.log", pl.DataFrame({"a": [1], "b": [None]}, schema={"a": pl.Int64, "b": pl.Int32}))
    store.append_table("evolution.log", pl.DataFrame({"a": [2], "b": [0.5], "c": ["new"]}))
    got = store.query("SELECT a, b, c FROM evolution.log ORDER BY a").rows()
    assert got == [(1, None, None), (2, 0.5, "new")]  # b widened to DOUBLE, not rounded to 0; c added
    with pytest.raises(EmpError, match=r"evolution\.log\.c is (VARCHAR|TEXT)"):
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


def test_a_file_held_by_another_process_gives_a_clear_error_after_the_timeout(duck, tmp_path):
    store = duck
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


def test_upsert_replaces_by_key_and_leaves_every_other_bar(store):
    store_bars(store, pl.concat([bars("A", 5), bars("B", 5)]), "r1")
    later = bars("A", 3, start=T0 + timedelta(days=3), price=7.0)  # two of A's days again, one new
    assert store.upsert_bars("bars_1d", pl.concat([later, later]), source="stream", run_id="s1") == 3
    assert store.upsert_bars("bars_1d", later, source="stream", run_id="s2") == 3  # redelivered: same effect
    a = store.read_bars("bars_1d", symbols=["A"])
    assert a["close"].to_list() == [100.0] * 3 + [7.0] * 3
    assert store.read_bars("bars_1d", symbols=["B"]).height == 5
    runs = store.query("SELECT run_id, count(*) AS n FROM market.bars_1d GROUP BY run_id ORDER BY run_id").rows()
    assert runs == [("r1", 8), ("s2", 3)]  # A days 0-2 and B 0-4 from r1


def test_insert_new_adds_only_unseen_keys(store):
    schema = {"k": pl.String, "v": pl.Float64, "at": pl.Datetime("us")}
    store.ensure_table("evolution.reg", schema, ["k"])
    store.ensure_table("evolution.reg", schema, ["k"])  # idempotent
    first = pl.DataFrame({"k": ["a", "b"], "v": [1.0, 2.0], "at": [T0, T0]})
    assert store.insert_new("evolution.reg", first, ["k"]) == 2
    again = pl.DataFrame({"k": ["b", "c"], "v": [9.0, 3.0], "at": [T0, T0]})
    assert store.insert_new("evolution.reg", again, ["k"]) == 1
    assert store.query("SELECT k, v FROM evolution.reg ORDER BY k").rows() == [("a", 1.0), ("b", 2.0), ("c", 3.0)]
    store.ensure_table("evolution.reg", {**schema, "extra": pl.Int64}, ["k"])  # a column added, empty
    assert store.query("SELECT count(*) FROM evolution.reg WHERE extra IS NULL").item() == 3


def test_doubles_strings_and_nulls_round_trip_exactly(store):
    """COPY goes through text on PostgreSQL: every double must come back bit for bit, and an empty string must
    not come back as null (nor a null as an empty string)."""
    import numpy as np

    rng = np.random.default_rng(7)
    n = 2_000
    values = np.concatenate([rng.standard_normal(n - 8) * 10.0 ** rng.integers(-300, 300, n - 8),
                             [0.1, 1 / 3, 5e-324, 1.7976931348623157e308, -0.0, 123456789.123456789, 2.0**53 + 1,
                              np.nextafter(1.0, 2.0)]])
    frame = bars("A", n).with_columns(pl.Series("close", values), pl.Series("volume", values[::-1].copy()))
    store_bars(store, frame, "r1")
    got = store.read_bars("bars_1d")
    assert got["close"].to_numpy().view(np.int64).tolist() == values.view(np.int64).tolist()
    assert got.equals(frame.sort("symbol", "ts"))
    texts = pl.DataFrame({"dataset": "d", "ts": [T0, T0 + timedelta(days=1), T0 + timedelta(days=2)],
                          "s": ["", None, 'a,"b"\nc'], "x": [float("nan"), float("inf"), None],
                          "ids": [[1, 2], [None, 3], None], "names": [['a"b', "c\\d", "NULL"], [], None]})
    store.replace_windows({"sensory.texts": texts}, dataset="d", start=T0, end=T0 + timedelta(days=3))
    back = store.query("SELECT dataset, ts, s, x, ids, names FROM sensory.texts ORDER BY ts")
    assert back["s"].to_list() == ["", None, 'a,"b"\nc']
    assert back["ids"].to_list() == [[1, 2], [None, 3], None] and back.schema["ids"] == pl.List(pl.Int64)
    assert back["names"].to_list() == [['a"b', "c\\d", "NULL"], [], None]
    assert np.isnan(back["x"][0]) and back["x"][1] == float("inf") and back["x"][2] is None


# -- PostgreSQL only --------------------------------------------------------------------------


@pytest.fixture
def pg(pg_url):
    store = PostgresStore(pg_url)
    yield store
    store.dispose()


def test_bars_are_stored_in_yearly_partitions_that_are_not_tables_of_their_own(pg):
    store_bars(pg, pl.concat([bars("A", 3, start=datetime(2019, 12, 30)), bars("B", 2, start=datetime(2031, 6, 1))]),
               "r1")
    parts = pg.query("""SELECT c.relname AS part, count(*) AS n FROM market.bars_1d b
        JOIN pg_class c ON c.oid = b.tableoid GROUP BY c.relname ORDER BY 1""").rows()
    assert parts == [("bars_1d_y2019", 2), ("bars_1d_y2020", 1), ("bars_1d_y2031", 2)]
    assert pg.query("SELECT relkind FROM pg_class WHERE relname = 'bars_1d'").item() == "p"
    assert "market.bars_1d_y2019" not in pg.tables() and pg.table_counts()["market.bars_1d"] == 5
    # a second store (another process) finds the partitions there and does not fail creating them again
    other = PostgresStore(pg.url)
    store_bars(other, bars("C", 2, start=datetime(2019, 12, 30)), "r2")
    other.dispose()
    assert pg.read_bars("bars_1d", symbols=["C"]).height == 2


def test_the_declared_sensory_and_trial_tables_match_the_code(pg):
    """sql/postgres declares the sensory tables and the trial registry: a column the code adds without a
    migration (or a type it changes) must fail here, not at the first institutional run."""
    from emp_core.evolution.registry import KEY, SCHEMA
    from emp_core.sensory.pipeline import _TYPES, OUTPUTS, table_columns

    pg_types = {pl.Float64: "double precision", pl.Int8: "smallint", pl.Int64: "bigint", pl.Boolean: "boolean",
                pl.String: "text", pl.Datetime("us"): "timestamp without time zone"}

    def declared(schema: str, table: str) -> list[tuple[str, str]]:
        return pg.query("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $s "
                        "AND table_name = $t ORDER BY ordinal_position", {"s": schema, "t": table}).rows()

    for name in OUTPUTS:
        expected = [("dataset", "text"), ("symbol", "text"), ("ts", "timestamp without time zone"),
                    *[(c, pg_types[_TYPES.get(c, pl.Float64)]) for c in table_columns(name)], ("run_id", "text")]
        assert declared("sensory", name) == expected, name
    assert declared("evolution", "trials") == [(c, pg_types[t]) for c, t in SCHEMA.items()]
    key = pg.query("""SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid
        AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'evolution.trials'::regclass AND i.indisprimary""")
    assert set(key["attname"]) == set(KEY)


def test_an_unreachable_server_is_named_without_its_password():
    from emp_core.store.postgres_store import StoreUnavailableError
    from tests.support import free_port

    store = PostgresStore(f"postgresql://emp:s3cret@127.0.0.1:{free_port()}/emp")
    with pytest.raises(StoreUnavailableError) as err:
        store.read_bars("bars_1d")
    assert "127.0.0.1" in str(err.value) and "s3cret" not in str(err.value)
    assert not store.exists()


def test_two_threads_upserting_the_same_bar_leave_one_row(duck):
    """DuckDB's optimistic transactions let two threads' delete-then-insert of one key both commit; the store's
    per-file lock makes them take turns (found by the stream consumers' tests)."""
    import threading

    duck.tables()
    start = threading.Barrier(8)

    def write(i: int) -> None:
        start.wait()
        duck.upsert_bars("bars_1d", bars("A", 20, price=100.0 + i), source="t", run_id=f"w{i}")

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert duck.query("SELECT count(*) FROM market.bars_1d").item() == 20
    assert duck.query("SELECT count(DISTINCT run_id) FROM market.bars_1d").item() == 1  # one writer's rows, whole


def test_zoned_timestamps_keep_their_instant(store):
    """A zoned column is an instant: written to PostgreSQL it must not be read as a local wall-clock time
    (the review found 12:00-05:00 stored as 12:00 UTC)."""
    at = datetime(2020, 1, 2, 12, 0)
    frame = pl.DataFrame({"dataset": ["d"], "ts": [at], "seen": [at]}).with_columns(
        pl.col("seen").dt.replace_time_zone("America/New_York"))
    store.replace_windows({"sensory.zoned": frame}, dataset="d", start=at, end=at + timedelta(days=1))
    back = store.query("SELECT seen FROM sensory.zoned")["seen"]
    assert back.dt.convert_time_zone("UTC").dt.replace_time_zone(None).to_list() == [datetime(2020, 1, 2, 17, 0)]

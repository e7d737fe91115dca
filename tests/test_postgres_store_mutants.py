"""PostgreSQL store behaviour the mutation run of emp_core/store/postgres_store.py found untested
(scripts/mutation/run.py): the column types of query results, what a write's stamp covers (so which later
writes a failover catch-up sees as conflicts), refused frames and clear errors, the connection pool, the
schema check on first use, and what is an outage and what is not. Each test uses a private database on the
loopback server (the ``pg_url`` fixture) or a private server (``private_pg``)."""

from datetime import date, datetime, timedelta

import polars as pl
import psycopg
import pytest

from emp_core.errors import EmpError
from emp_core.store.failover import catch_up, pending
from emp_core.store.postgres_store import PostgresStore, StoreUnavailableError, is_outage, sqlalchemy_url

T = datetime(2020, 3, 2)
WINDOW = (T, T + timedelta(days=10))
NO_QUARANTINE = pl.DataFrame(schema={"run_id": pl.String})


@pytest.fixture
def pg(pg_url):
    store = PostgresStore(pg_url)
    yield store
    store.dispose()


def bars(symbol: str, days: int, price: float, start: datetime = T) -> pl.DataFrame:
    return pl.DataFrame({"symbol": symbol, "ts": [start + timedelta(days=i) for i in range(days)], "open": price,
                         "high": price + 1, "low": price - 1, "close": price, "volume": 100.0})


def journal(run_id: str) -> pl.DataFrame:
    now = datetime(2026, 1, 1)
    return pl.DataFrame([{"run_id": run_id, "dataset": "bars_1d", "source": "feed", "input": "memory", "rows_in": 0,
                          "rows_stored": 0, "rows_quarantined": 0, "status": "ok", "started_at": now,
                          "finished_at": now}])


def put(store, frame: pl.DataFrame, run_id: str, *, source: str = "feed", window=WINDOW, selection=None) -> None:
    store.replace_bars("bars_1d", frame, source=source, run_id=run_id, window=window, quarantine=NO_QUARANTINE,
                       journal=journal(run_id), selection=selection)


def closes(store, symbol: str) -> list[float]:
    return store.read_bars("bars_1d", symbols=[symbol])["close"].to_list()


# -- query results keep their columns' types -------------------------------------------------------------------

COLUMNS = {  # PostgreSQL type, a value, what the frame holds, its type
    "b": ("boolean", "true", True, pl.Boolean),
    "c": ('"char"', "'x'", "x", pl.String),
    "nm": ("name", "'n'", "n", pl.String),
    "i8": ("int8", "8", 8, pl.Int64),
    "i2": ("int2", "2", 2, pl.Int16),
    "i4": ("int4", "4", 4, pl.Int32),
    "t": ("text", "'t'", "t", pl.String),
    "j": ("json", """'{"a": [1, 2]}'""", '{"a": [1, 2]}', pl.String),
    "f4": ("float4", "1.5", 1.5, pl.Float32),
    "f8": ("float8", "2.5", 2.5, pl.Float64),
    "bp": ("bpchar", "'ab'", "ab", pl.String),
    "vc": ("varchar", "'v'", "v", pl.String),
    "d": ("date", "'2020-01-02'", date(2020, 1, 2), pl.Date),
    "ts": ("timestamp", "'2020-01-02 03:04:05.000006'", datetime(2020, 1, 2, 3, 4, 5, 6), pl.Datetime("us")),
    "tz": ("timestamptz", "'2020-01-02 03:04:05+00'", None, pl.Datetime("us", "UTC")),
    "iv": ("interval", "'1 hour'", timedelta(hours=1), pl.Duration("us")),
    "nu": ("numeric", "1.25", 1.25, pl.Float64),
    "jb": ("jsonb", """'{"a": {"b": null}}'""", '{"a": {"b": null}}', pl.String),
    "js": ("jsonb", "'1.5'", "1.5", pl.String),  # a scalar: its text too
    "jt": ("json", "'true'", "true", pl.String),
    "ab": ("boolean[]", "ARRAY[true, false]", [True, False], pl.List(pl.Boolean)),
    "ai2": ("int2[]", "ARRAY[1, 2]", [1, 2], pl.List(pl.Int16)),
    "ai4": ("int4[]", "ARRAY[1, 2]", [1, 2], pl.List(pl.Int32)),
    "ai8": ("int8[]", "ARRAY[1, 2]", [1, 2], pl.List(pl.Int64)),
    "at": ("text[]", "ARRAY['s', 'u']", ["s", "u"], pl.List(pl.String)),
    "af4": ("float4[]", "ARRAY[1.5]", [1.5], pl.List(pl.Float32)),
    "af8": ("float8[]", "ARRAY[2.5]", [2.5], pl.List(pl.Float64)),
}


def test_query_results_keep_their_columns_types_with_values_nulls_or_no_rows(pg):
    """A frame's column types come from the result's PostgreSQL types, not from its values: the same with a
    value, with only nulls and with no rows at all (a downstream concat or join needs them stable). json and
    jsonb come back as their text, numeric as a double."""
    values = ", ".join(f"{v}::{t} AS {c}" for c, (t, v, _, _) in COLUMNS.items())
    nulls = ", ".join(f"NULL::{t} AS {c}" for c, (t, _, _, _) in COLUMNS.items())
    schema = {c: dtype for c, (_, _, _, dtype) in COLUMNS.items()}
    got = pg.query(f"SELECT {values}")
    assert dict(got.schema) == schema
    row = got.row(0, named=True)
    for c, (_, _, want, _) in COLUMNS.items():
        if want is not None:
            assert row[c] == want, c
    assert row["tz"].replace(tzinfo=None) == datetime(2020, 1, 2, 3, 4, 5)
    only_nulls, no_rows = pg.query(f"SELECT {nulls}"), pg.query(f"SELECT {values} WHERE false")
    assert dict(only_nulls.schema) == dict(no_rows.schema) == schema
    assert only_nulls.rows() == [(None,) * len(COLUMNS)] and no_rows.height == 0


# -- frames the store refuses, with a clear error ----------------------------------------------------------------


def test_frames_without_a_faithful_column_type_are_refused_clearly(pg):
    from datetime import time

    for column in (pl.Series("x", [time(1, 2)]), pl.Series("x", [{"a": 1}]), pl.Series("x", [[[1]]])):
        with pytest.raises(EmpError, match=r"evolution\.odd\.x: no PostgreSQL column type") as err:
            pg.append_table("evolution.odd", pl.DataFrame([column]))
        assert not isinstance(err.value, StoreUnavailableError)
    pg.replace_table("market.universe", pl.DataFrame({"dataset": ["d"], "symbol": ["A"]}))
    nested = pl.DataFrame({"dataset": ["d"], "symbol": [{"a": 1}]})
    with pytest.raises(EmpError, match="flat columns and lists") as err:
        pg.append("market.universe", nested)  # the table exists: the frame reaches the bulk writer
    assert not isinstance(err.value, StoreUnavailableError)  # an error of the run, not an outage
    assert pg.query("SELECT symbol FROM market.universe").rows() == [("A",)]


def test_new_rows_of_another_type_than_a_column_are_refused(pg):
    """A whole-number column widens to a float frame; any other change of type is refused by name."""
    pg.append_table("evolution.kinds", pl.DataFrame({"n": [1], "s": ["a"], "i": pl.Series([1], dtype=pl.Int32)}))
    pg.append_table("evolution.kinds", pl.DataFrame({"n": [0.5]}))
    for frame, column in ((pl.DataFrame({"s": [1.5]}), "s"), (pl.DataFrame({"s": [2]}), "s"),
                          (pl.DataFrame({"i": [2]}), "i")):
        with pytest.raises(EmpError, match=rf"evolution\.kinds\.{column} is .* but new rows bring"):
            pg.append_table("evolution.kinds", frame)
    got = pg.query("SELECT n, s, i FROM evolution.kinds ORDER BY n")
    assert got.rows() == [(0.5, None, None), (1.0, "a", 1)] and got.schema["i"] == pl.Int32


# -- what a write's stamp covers: the conflicts a catch-up sees ------------------------------------------------


def test_a_later_whole_window_ingest_conflicts_with_an_outage_write_of_another_symbol(outage):
    """A whole read of a window (no selection) replaces every bar of its source there, whatever the symbols it
    brought: its stamp covers every symbol, so an outage write of another symbol in that window is a conflict
    (the replay would bring back bars the later ingest deleted)."""
    primary, down, fallback = outage
    put(down(), bars("Z", 10, 1.0), "outage", selection=["Z"])
    put(primary, bars("A", 10, 2.0), "later")
    report = catch_up(primary, fallback)
    assert "CONFLICT" in report.replayed[0]["note"], report.replayed
    assert closes(primary, "Z") == []


def test_a_later_run_limited_to_other_symbols_is_no_conflict(outage):
    primary, down, fallback = outage
    put(down(), bars("Z", 10, 1.0), "outage", selection=["Z"])
    put(primary, bars("A", 10, 2.0), "later", selection=["A"])
    report = catch_up(primary, fallback)
    assert report.parity, report.replayed
    assert closes(primary, "Z") == [1.0] * 10 and closes(primary, "A") == [2.0] * 10


def test_a_later_replace_without_a_window_covers_its_last_bar(outage):
    """Without a window a replace covers each symbol's [first, last] bars, the last one included: a stream bar
    of the outage at that last time is in its scope, a conflict."""
    primary, down, fallback = outage
    last = T + timedelta(days=9)
    down().upsert_bars("bars_1d", bars("A", 1, 1.0, start=last), source="stream", run_id="s1")
    put(primary, bars("A", 10, 2.0), "later", window=None)
    report = catch_up(primary, fallback)
    assert "CONFLICT" in report.replayed[0]["note"], report.replayed
    assert closes(primary, "A") == [2.0] * 10


def test_a_later_replace_ending_the_microsecond_before_an_outage_bar_is_no_conflict(outage):
    """Spans are half-open: a replace without a window covers [first, last + 1 us), so a stream bar of the
    outage one microsecond after its last bar is outside it, and is replayed."""
    primary, down, fallback = outage
    after_last = T + timedelta(days=9, microseconds=1)
    down().upsert_bars("bars_1d", bars("A", 1, 1.0, start=after_last), source="stream", run_id="s1")
    put(primary, bars("A", 10, 2.0), "later", window=None)
    report = catch_up(primary, fallback)
    assert report.parity, report.replayed
    assert closes(primary, "A") == [2.0] * 10 + [1.0]


def test_a_later_upsert_of_the_same_bar_with_other_values_is_a_conflict(outage):
    primary, down, fallback = outage
    down().upsert_bars("bars_1d", bars("A", 1, 1.0), source="stream", run_id="s1")
    primary.upsert_bars("bars_1d", bars("A", 1, 9.0), source="stream", run_id="s2")
    report = catch_up(primary, fallback)
    assert "CONFLICT" in report.replayed[0]["note"], report.replayed
    assert closes(primary, "A") == [9.0] and pending(fallback).height == 1


# -- bars ------------------------------------------------------------------------------------------------------


def test_a_whole_window_takes_over_its_symbols_bars_from_another_source_and_a_selection_clears_its_symbols(pg):
    pg.upsert_bars("bars_1d", bars("X", 10, 1.0), source="other", run_id="x")
    put(pg, bars("B", 10, 1.0), "b")
    put(pg, bars("X", 10, 2.0), "feed-x")  # X's bars from the feed now: the other source's are replaced there
    assert closes(pg, "X") == [2.0] * 10
    assert pg.query("SELECT DISTINCT source FROM market.bars_1d WHERE symbol = 'X'").rows() == [("feed",)]
    put(pg, bars("A", 10, 3.0), "sel", selection=["A", "B"])  # the feed has nothing for B any more
    assert closes(pg, "B") == [] and closes(pg, "X") == [2.0] * 10


def test_an_upsert_replaces_every_column_of_a_bar_and_an_empty_one_writes_nothing(pg):
    pg.upsert_bars("bars_1d", bars("A", 2, 1.0), source="s1", run_id="r1")
    new = bars("A", 1, 5.0).with_columns(pl.lit(4.0).alias("open"), pl.lit(7.0).alias("high"),
                                        pl.lit(3.0).alias("low"), pl.lit(9.0).alias("volume"))
    assert pg.upsert_bars("bars_1d", new, source="s2", run_id="r2") == 1
    assert pg.upsert_bars("bars_1d", new.head(0), source="s3", run_id="r3") == 0
    got = pg.query("SELECT open, high, low, close, volume, source, run_id FROM market.bars_1d WHERE ts = $t",
                   {"t": T}).rows()
    assert got == [(4.0, 7.0, 3.0, 5.0, 9.0, "s2", "r2")]


PART_LOCK = 0x454D505F504152  # "EMP_PAR": the advisory lock every store process takes to create partitions


def _waiting_on_an_advisory_lock(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as con:
        return bool(con.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
                                "wait_event_type = 'Lock' AND wait_event = 'advisory'").fetchone()[0])


def test_partitions_are_created_for_the_years_written_under_the_shared_lock_and_remembered(pg_url):
    """A write creates its years' partitions, no other, under the partition lock every store process shares
    (another process creating partitions makes it wait); once a store has created one, its later writes there
    do not take that lock again."""
    import threading

    lockable = PostgresStore(f"{pg_url}?options=-c%20lock_timeout%3D5000")
    try:
        put(lockable, bars("A", 2, 1.0, start=datetime(2019, 6, 3)), "r19", window=None)
        put(lockable, bars("A", 2, 1.0, start=datetime(2021, 6, 3)), "r21", window=None)
        parts = lockable.query("""SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'market.bars_1d'::regclass ORDER BY 1""")["relname"].to_list()
        assert parts == ["bars_1d_y2019", "bars_1d_y2021"]
        with psycopg.connect(pg_url, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", (PART_LOCK,))  # another process creating partitions
            put(lockable, bars("A", 2, 2.0, start=datetime(2019, 6, 3)), "again", window=None)  # known: no wait
            worker = threading.Thread(target=put, args=(lockable, bars("B", 1, 3.0, start=datetime(2023, 6, 1)),
                                                        "r23"), kwargs={"window": None})
            worker.start()
            waited = False
            while worker.is_alive() and not waited:
                waited = _waiting_on_an_advisory_lock(pg_url)
                worker.join(0.02)
            holder.execute("SELECT pg_advisory_unlock(%s)", (PART_LOCK,))
            worker.join(60)
        assert waited, "a new partition was created without the partition lock"
        assert closes(lockable, "A") == [2.0, 2.0, 1.0, 1.0] and closes(lockable, "B") == [3.0]
    finally:
        lockable.dispose()


# -- the store object ----------------------------------------------------------------------------------------------


def test_a_store_names_its_server_without_the_password_and_says_it_exists(pg_url):
    server, name = pg_url.rsplit("/", 1)
    url = f"{server.replace('://', '://root:s3cret@')}/{name}"
    store = PostgresStore(url)
    try:
        assert store.location == str(store) == url.replace("s3cret", "***") and "s3cret" not in repr(store)
        assert store.dialect == "postgresql"
    finally:
        store.dispose()
    assert PostgresStore(pg_url).exists()


def _connections(pg_url: str, settle_to: int | None = None) -> int:
    """The server's connections to this database (not counting this one). With ``settle_to``: once that many
    remain (a closed connection's server process leaves a moment after the client hangs up), or after 20 s."""
    import time

    deadline = time.monotonic() + 20
    with psycopg.connect(pg_url, autocommit=True) as con:
        while True:
            n = con.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid()").fetchone()[0]
            if settle_to is None or n == settle_to or time.monotonic() > deadline:
                return n
            time.sleep(0.05)


def test_the_pool_keeps_two_connections_and_dispose_closes_them(pg_url):
    from contextlib import ExitStack

    store = PostgresStore(pg_url)
    with ExitStack() as stack:
        for _ in range(6):  # 2 pooled + 4 overflow, all at once
            stack.enter_context(store.cursor()).execute("SELECT 1")
        assert _connections(pg_url) == 6
    assert _connections(pg_url, settle_to=2) == 2  # the overflow closed, the pool's two kept
    store.dispose()
    assert _connections(pg_url, settle_to=0) == 0
    assert store.query("SELECT 1 AS one").item() == 1  # usable again: a new pool
    store.dispose()


def test_a_seventh_concurrent_connection_waits_for_one_of_the_six(pg_url):
    """The pool's bound: 2 pooled + 4 overflow. A 7th concurrent request waits in the pool for a connection to
    come back, opening none of its own."""
    import sys
    import threading
    from contextlib import ExitStack

    store = PostgresStore(pg_url)
    got = threading.Event()

    def seventh():
        with store.cursor() as cur:
            cur.execute("SELECT 1")
            got.set()

    def waiting_in_the_pool(thread) -> bool:  # blocked on the pool's queue (a condition's wait inside it)
        frames = _stack(sys._current_frames().get(thread.ident))
        names = [(f.f_code.co_name, f.f_code.co_filename.replace("\\", "/")) for f in frames]
        return any(n == "wait" and f.endswith("threading.py") for n, f in names) and any(
            f.endswith("sqlalchemy/util/queue.py") for _, f in names)

    try:
        with ExitStack() as stack:
            for _ in range(6):
                stack.enter_context(store.cursor()).execute("SELECT 1")
            worker = threading.Thread(target=seventh)
            worker.start()
            while worker.is_alive() and not got.is_set() and not waiting_in_the_pool(worker):
                worker.join(0.01)
            assert not got.is_set(), "a 7th connection was opened"
            assert _connections(pg_url) == 6
        worker.join(60)
        assert got.is_set()
    finally:
        store.dispose()


def _stack(frame) -> list:
    out = []
    while frame is not None:
        out.append(frame)
        frame = frame.f_back
    return out


def test_a_store_gets_past_a_server_restart_between_calls(private_pg):
    """Pooled connections die with the server: the next call after a restart checks them first and opens new
    ones, instead of failing on a dead one."""
    store = PostgresStore(private_pg.url)
    try:
        assert store.query("SELECT 1 AS one").item() == 1
        private_pg.stop("fast")
        private_pg.start()
        assert store.query("SELECT 2 AS two").item() == 2
    finally:
        store.dispose()


# -- the schema check on first use, and what is an outage ------------------------------------------------------


def _fresh(pg_url: str, tag: str) -> str:
    """The same database under a URL this process has not checked the schema of yet."""
    return f"{pg_url}?application_name={tag}"


def test_a_process_on_an_up_to_date_database_needs_no_maintenance_database(private_pg):
    """A role that may connect to its own database only (not to ``postgres``) works once the schema is there:
    the first use of a store reads the migration record and applies nothing."""
    admin = PostgresStore(private_pg.url)
    admin.tables()  # creates the database and applies the migrations
    admin.query("CREATE ROLE app LOGIN; GRANT USAGE ON SCHEMA market, ops TO app; "
                "GRANT SELECT ON ALL TABLES IN SCHEMA market, ops TO app; "
                "REVOKE CONNECT ON DATABASE postgres FROM PUBLIC")
    admin.dispose()
    app = PostgresStore(private_pg.url.replace("root@", "app@"))
    try:
        assert app.query("SELECT count(*) AS n FROM market.bars_1d").item() == 0
    finally:
        app.dispose()


def test_an_unreachable_server_is_an_outage_whatever_its_connection_string_says():
    """The outage test reads the driver's error, not the store's message around it, which repeats the
    connection string: a value in it that looks like a refusal ("role ...") does not hide a refused
    connection."""
    from tests.support import free_port

    store = PostgresStore(f"host=127.0.0.1 port={free_port()} dbname=emp application_name='nightly role sync'")
    with pytest.raises(StoreUnavailableError, match="nightly role sync"):
        store.tables()


def test_a_migration_changed_after_it_was_applied_is_an_error_not_an_outage(pg):
    pg.tables()
    pg.query("UPDATE ops.schema_migrations SET sha256 = 'changed' WHERE version = (SELECT min(version) FROM "
             "ops.schema_migrations); DELETE FROM ops.schema_migrations WHERE version = (SELECT max(version) FROM "
             "ops.schema_migrations)")
    store = PostgresStore(_fresh(pg.url, "tampered"))
    with pytest.raises(EmpError, match="changed after it was applied") as err:
        store.tables()
    assert not isinstance(err.value, StoreUnavailableError)


def test_an_error_of_a_server_that_is_up_at_commit_is_not_an_outage(pg):
    """A deferred check that fails when the transaction commits (here one raising lock_not_available) comes from
    a server that answers: the run's error, not a lost connection to fail over on."""
    pg.query("""CREATE TABLE evolution.deferred (k bigint);
        CREATE FUNCTION evolution.refuse() RETURNS trigger AS $$ BEGIN
            RAISE EXCEPTION 'refused at commit' USING ERRCODE = '55P03'; END $$ LANGUAGE plpgsql;
        CREATE CONSTRAINT TRIGGER refuse AFTER INSERT ON evolution.deferred DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION evolution.refuse()""")
    with pytest.raises(Exception, match="refused at commit") as err:
        pg.append("evolution.deferred", pl.DataFrame({"k": [1]}))
    assert not isinstance(err.value, StoreUnavailableError)
    assert pg.query("SELECT count(*) AS n FROM evolution.deferred").item() == 0


def test_outages_are_the_connection_classes_and_server_shutdowns():
    """SQLSTATE class 08 and 57P01-57P03 are outages; any other state is an error of a server that is up."""
    from psycopg import errors

    for state in ("08000", "08006", "08001", "57P01", "57P02", "57P03"):
        assert is_outage(errors.lookup(state)("x")), state
    for state in ("55P03", "57014", "40P01", "53100", "28P01", "42501", "23505"):
        assert not is_outage(errors.lookup(state)("x")), state
    assert is_outage(psycopg.OperationalError("connection refused"))
    assert not is_outage(psycopg.OperationalError('FATAL: role "x" does not exist'))


def test_sqlalchemy_urls_for_tcp_socket_directories_and_several_hosts():
    tcp = sqlalchemy_url("postgresql://u:p@db.example:6543/emp?sslmode=require")
    assert (tcp.drivername, tcp.host, tcp.port, tcp.database, tcp.username, tcp.password) == (
        "postgresql+psycopg", "db.example", 6543, "emp", "u", "p")
    assert dict(tcp.query) == {"sslmode": "require"}
    socket = sqlalchemy_url("host=/var/run/postgresql port=5433 dbname=emp user=u")
    assert socket.host is None and socket.port is None
    assert dict(socket.query) == {"host": "/var/run/postgresql", "port": "5433"}
    several = sqlalchemy_url("host=a,b port=1,2 dbname=emp", driver="psycopg2")
    assert several.drivername == "postgresql+psycopg2" and several.host is None
    assert dict(several.query) == {"host": "a,b", "port": "1,2"}
    plain = sqlalchemy_url("host=h dbname=emp")
    assert plain.host == "h" and plain.port is None and dict(plain.query) == {}

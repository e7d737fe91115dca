"""The institutional store: PostgreSQL, with the embedded store's repository interface.

:class:`PostgresStore` has every method of :class:`~emp_core.store.duckdb_store.DuckDBStore`, with the same
semantics, so the assets, the CLI and the notebooks run on either tier; ``EMP_TIER`` picks one
(:func:`emp_core.store.open_store`), no code forks on it.

- **Schema**: versioned DDL in ``sql/postgres/`` (:mod:`emp_core.store.migrations`), applied on the first
  connection of a store (idempotent, locked), so a fresh server needs nothing but its URL. Tables the
  migrations do not declare (derived results such as ``evolution.population``) are created from their
  frames' schemas with SQLAlchemy Core, as the embedded store creates them from Arrow.
- **Bars** live in ``market.bars_1d`` / ``market.bars_1h``, range-partitioned by ``ts`` into yearly
  partitions (``market.bars_1d_y2015``) created on demand, under an advisory lock, as rows arrive.
- **Bulk writes** go through ``COPY ... FROM STDIN`` on the underlying psycopg 3 connection (a frame written
  as CSV by Polars' writer), never row inserts; bulk reads of bars through ``COPY (SELECT ...) TO STDOUT``
  read back by Polars' CSV reader with the table's schema. Both are exact for doubles: Polars writes the
  shortest representation that reads back to the same double, and PostgreSQL >= 12 does the same
  (``extra_float_digits`` 1).
- **Queries** are written once for both stores: DuckDB-style ``$name`` parameters, SQL in the dialect the
  two share (the domain code keeps to it; the tests run it on both). A query's frame takes its column types
  from the result's PostgreSQL types.
- **Writes are stamped**: each write to a table a failover catch-up may replay into takes that table's write
  lock (an advisory lock) and records itself in ``ops.write_log`` (target, run, symbols, time span) with the
  server's clock, in its own transaction. The stamp's time is the server's clock when it processes the
  COMMIT (a deferred trigger, ``sql/postgres/008``): the write happened when it committed, not when it took
  the lock (a long COPY, a COMMIT held up on the network). The catch-up orders its outage writes against
  these stamps (:mod:`emp_core.store.failover`), and a replay's conflict test (:data:`REPLAY`) runs under
  the same lock.
- **Connections** come from a SQLAlchemy pool (``pool_pre_ping``). A server that cannot be reached raises
  :class:`StoreUnavailableError` naming it (password masked): the failover path catches exactly that.
"""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from datetime import datetime, timedelta
from decimal import Decimal

import polars as pl

from emp_core.errors import EmpError
from emp_core.store.duckdb_store import BAR_TABLES, check_ident, time_window
from emp_core.store.migrations import _safe, applied_versions, discover, migrate

BAR_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume")
BAR_SCHEMA = {"symbol": pl.String, "ts": pl.Datetime("us"), **dict.fromkeys(BAR_COLUMNS[2:], pl.Float64)}
SCHEMAS = ("market", "macro", "sensory", "evolution", "trading", "audit", "compliance")
_PARAM = re.compile(r"(?<![\w$:])\$([A-Za-z_]\w*)")
_PART_LOCK = 0x454D505F504152  # "EMP_PAR": serialises partition creation
_MIGRATED: set[str] = set()
_MIGRATE_LOCK = threading.Lock()

# result column types: PostgreSQL type OID -> Polars
_OID_TYPES: dict[int, pl.DataType] = {
    16: pl.Boolean(), 18: pl.String(), 19: pl.String(), 20: pl.Int64(), 21: pl.Int16(), 23: pl.Int32(),
    25: pl.String(), 114: pl.String(), 700: pl.Float32(), 701: pl.Float64(), 1042: pl.String(),
    1043: pl.String(), 1082: pl.Date(), 1114: pl.Datetime("us"), 1184: pl.Datetime("us", "UTC"),
    1186: pl.Duration("us"), 1700: pl.Float64(), 3802: pl.String(),
    1000: pl.List(pl.Boolean()), 1005: pl.List(pl.Int16()), 1007: pl.List(pl.Int32()), 1016: pl.List(pl.Int64()),
    1009: pl.List(pl.String()), 1021: pl.List(pl.Float32()), 1022: pl.List(pl.Float64()),
}


# Set by the failover store around a write: {"write_id": its id}; and by the catch-up around a replay: {"write_id",
# "replay_of": "<fallback id>:<seq>", "original_at": aware datetime, "guard": callable(cursor, scope), "verify":
# callable(cursor)}. The write is stamped with them; ``guard``
# (already applied? a conflict?) runs under the target's write lock before anything is written, ``verify`` after
# the write, before the commit; either refuses the write by raising (the transaction rolls back).
REPLAY: ContextVar[dict | None] = ContextVar("emp_replay", default=None)
_MICRO = timedelta(microseconds=1)
WRITE_LOG_DAYS = 90  # how long write stamps are kept (the nightly backup prunes older ones)

_CONVERTED = {114, 1700, 3802}  # json, numeric, jsonb: values psycopg gives as dict/list or Decimal


class StoreUnavailableError(EmpError):
    """The institutional store's server cannot be reached (the failover path acts on this)."""


def to_pyformat(sql: str) -> str:
    """``sql`` with DuckDB-style ``$name`` parameters as psycopg's ``%(name)s`` (and ``%`` escaped)."""
    return _PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))


def sa_type(table: str, name: str, dtype: pl.DataType):
    """The SQLAlchemy column type of a Polars dtype (a dtype with no faithful column type is an error)."""
    import sqlalchemy as sa
    from sqlalchemy.dialects import postgresql

    base = dtype.base_type()
    simple = {pl.String: sa.Text(), pl.Null: sa.Text(), pl.Int64: sa.BigInteger(), pl.UInt32: sa.BigInteger(),
              pl.Int32: sa.Integer(), pl.Int16: sa.SmallInteger(), pl.Int8: sa.SmallInteger(),
              pl.UInt8: sa.SmallInteger(), pl.UInt16: sa.Integer(), pl.Float64: postgresql.DOUBLE_PRECISION(),
              pl.Float32: postgresql.REAL(), pl.Boolean: sa.Boolean(), pl.Date: sa.Date()}
    if base in simple:
        return simple[base]
    if base == pl.Datetime:
        return postgresql.TIMESTAMP(timezone=dtype.time_zone is not None)
    if base == pl.List and not dtype.inner.is_nested():
        return postgresql.ARRAY(sa_type(table, name, dtype.inner))
    raise EmpError(f"{table}.{name}: no PostgreSQL column type for {dtype}; store it as text or numbers")


def _quoted(names: Sequence[str]) -> str:
    return ", ".join('"' + n.replace('"', '""') + '"' for n in names)


def _csv(frame: pl.DataFrame) -> bytes:
    """The frame as headerless CSV for ``COPY ... (FORMAT csv)``: nulls unquoted and empty, so an empty string
    (always quoted) stays an empty string."""
    arrays = []
    for name, dtype in frame.schema.items():
        if dtype.base_type() == pl.List and not dtype.inner.is_nested():
            arrays.append(_array_text(name, dtype.inner))
        elif dtype.is_nested() or dtype == pl.Object:
            raise EmpError(f"column {name!r} is {dtype}: the institutional store keeps flat columns and lists")
    zoned = [pl.col(n).dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%d %H:%M:%S%.6f+00:00").alias(n)
             for n, t in frame.schema.items() if isinstance(t, pl.Datetime) and t.time_zone is not None]
    if arrays or zoned:  # a zoned instant is written with its offset (UTC), never as a local wall-clock time
        frame = frame.with_columns(arrays + zoned)
    buf = io.BytesIO()
    frame.write_csv(buf, include_header=False, null_value="", quote_style="non_numeric",
                    datetime_format="%Y-%m-%d %H:%M:%S%.6f", date_format="%Y-%m-%d")
    return buf.getvalue()


def _array_text(name: str, inner: pl.DataType) -> pl.Expr:
    """A list column as PostgreSQL's array literal (``{1,2,NULL}``; strings quoted and escaped)."""
    element = pl.element().cast(pl.String)
    if inner in (pl.String, pl.Categorical):
        element = '"' + element.str.replace_all("\\", "\\\\", literal=True).str.replace_all(
            '"', '\\"', literal=True) + '"'
    joined = pl.col(name).list.eval(element.fill_null("NULL")).list.join(",")
    return pl.when(pl.col(name).is_null()).then(None).otherwise("{" + joined + "}").alias(name)


def _value(v):
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, dict | list):
        return json.dumps(v)
    return v


class PostgresStore:
    """Tables as in :class:`~emp_core.store.duckdb_store.DuckDBStore`, in the PostgreSQL database of ``url``."""

    dialect = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 2, connect_timeout: int = 5) -> None:
        self.url = url
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._engine = None
        self._partitions: set[str] = set()  # partitions known to exist (created in a committed transaction)
        self._created: set[str] = set()  # created in the open transaction: known only once it commits

    def __repr__(self) -> str:
        return f"PostgresStore({_safe(self.url)!r})"

    def __str__(self) -> str:
        return _safe(self.url)

    @property
    def location(self) -> str:
        return _safe(self.url)

    def exists(self) -> bool:
        """Whether the server answers (the schema is applied on the first connection)."""
        try:
            with self.cursor() as cur:
                cur.execute("SELECT 1")
        except StoreUnavailableError:
            return False
        return True

    # -- connections ----------------------------------------------------------

    def _make_engine(self):
        import sqlalchemy as sa

        return sa.create_engine(sqlalchemy_url(self.url), pool_pre_ping=True, pool_size=self._pool_size, max_overflow=4,
                                connect_args={"connect_timeout": self._connect_timeout})

    def _ensure_schema(self) -> None:
        """Apply the migrations once per process, and only when the database lacks some: a process on an
        up-to-date database reads the record and never touches the server's maintenance database."""
        with _MIGRATE_LOCK:
            if self.url in _MIGRATED:
                return
            try:
                try:
                    current = applied_versions(self.url)
                except EmpError as exc:
                    if not re.search(r'database "[^"]*" does not exist', str(exc)):  # only that is created, by migrate
                        raise
                    current = None
                if current != [m.version for m in discover()]:
                    migrate(self.url)
            except EmpError as exc:
                if "cannot connect" in str(exc) and is_outage(exc.__cause__ or exc):
                    raise StoreUnavailableError(str(exc)) from exc
                raise
            _MIGRATED.add(self.url)

    @contextmanager
    def begin(self) -> Iterator:
        """A SQLAlchemy connection in a transaction (committed on success, rolled back on error)."""
        import sqlalchemy as sa

        self._ensure_schema()
        if self._engine is None:
            self._engine = self._make_engine()
        try:
            ctx = self._engine.begin()
            con = ctx.__enter__()
        except sa.exc.OperationalError as exc:
            if not is_outage(exc):
                raise EmpError(f"{self}: PostgreSQL refused the connection: {str(exc.orig).strip()}") from None
            raise StoreUnavailableError(f"{self}: cannot connect to PostgreSQL: {str(exc.orig).strip()}") from None
        try:
            yield con
        except BaseException as exc:
            with suppress(sa.exc.OperationalError):  # the server went away mid-transaction: nothing was committed
                ctx.__exit__(type(exc), exc, exc.__traceback__)
            if isinstance(exc, sa.exc.OperationalError | _psycopg_operational()) and is_outage(exc):
                raise StoreUnavailableError(f"{self}: lost the connection to PostgreSQL: {exc}") from exc
            raise
        else:
            try:
                ctx.__exit__(None, None, None)
            except sa.exc.OperationalError as exc:  # lost at COMMIT: the outcome is unknown, replays are idempotent
                if not is_outage(exc):
                    raise
                raise StoreUnavailableError(f"{self}: lost the connection to PostgreSQL at commit: {exc}") from exc
            self._partitions |= self._created
        finally:
            self._created = set()

    @contextmanager
    def cursor(self) -> Iterator:
        """A psycopg 3 cursor on a pooled connection, in a transaction."""
        with self.begin() as con:
            raw = con.connection.driver_connection
            with raw.cursor() as cur:
                yield cur

    def dispose(self) -> None:
        """Close the pool's connections (a test that stops the server, a forked worker)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # -- bars -------------------------------------------------------------------

    def _ensure_partitions(self, cur, table: str, lo: datetime, hi: datetime) -> None:
        """The yearly partitions of ``market.<table>`` that cover [lo, hi]."""
        years = [y for y in range(lo.year, hi.year + 1) if f"{table}_y{y}" not in self._partitions]
        if not years:
            return
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PART_LOCK,))
        for y in years:
            cur.execute(f"CREATE TABLE IF NOT EXISTS market.{table}_y{y} PARTITION OF market.{table} "
                        f"FOR VALUES FROM ('{y}-01-01') TO ('{y + 1}-01-01')")
            self._created.add(f"{table}_y{y}")  # a rolled-back transaction takes its partitions with it

    def _copy_in(self, cur, table: str, frame: pl.DataFrame) -> None:
        if not frame.height:
            return
        with cur.copy(f"COPY {table} ({_quoted(frame.columns)}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(_csv(frame))

    def _bar_frame(self, bars: pl.DataFrame, source: str, run_id: str) -> pl.DataFrame:
        return bars.select(*BAR_COLUMNS).with_columns(pl.lit(source).alias("source"), pl.lit(run_id).alias("run_id"))

    def _stamp(self, cur, operation: str, target: str, run_id: str | None = None, symbols=None, lo=None,
               end=None, dataset: str | None = None) -> None:
        """Take ``target``'s write lock, let a replay's guard refuse, and record the write in ``ops.write_log``
        (module docstring): ``symbols`` None is every symbol, ``lo``/``end`` None an unbounded span, ``dataset``
        None every dataset; the write's id when the failover store gave it one (:data:`REPLAY`)."""
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"emp-write:{target}",))
        replay = REPLAY.get() or {}
        scope = {"target": target, "operation": operation, "symbols": None if symbols is None else sorted(symbols),
                 "lo": lo, "end": end, "dataset": dataset}
        if replay.get("guard") is not None:
            replay["guard"](cur, scope)
        cur.execute("INSERT INTO ops.write_log (operation, target, run_id, symbols, ts_lo, ts_end, replay_of, "
                    "original_at, write_id, dataset) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (operation, target, run_id, scope["symbols"], lo, end, replay.get("replay_of"),
                     replay.get("original_at"), replay.get("write_id"), dataset))

    def prune_write_log(self, keep_days: int) -> int:
        """Delete the write stamps older than ``keep_days`` (a catch-up compares an outage write only with stamps
        after it: keep them longer than any outage's writes can wait for their catch-up). Returns how many."""
        if keep_days < WRITE_LOG_DAYS:  # the catch-up trusts stamps younger than that to be there
            raise EmpError(f"write stamps are kept at least {WRITE_LOG_DAYS} days (asked: {keep_days}); the "
                           "failover catch-up compares outage writes with them")
        with self.cursor() as cur:
            cur.execute("DELETE FROM ops.write_log WHERE committed_at < clock_timestamp() - make_interval(days => %s)",
                        (keep_days,))
            return cur.rowcount

    @staticmethod
    def _verify(cur) -> None:
        """A replay's check of what it wrote, before the commit (:data:`REPLAY`)."""
        replay = REPLAY.get() or {}
        if replay.get("verify") is not None:
            replay["verify"](cur)

    def replace_bars(
        self,
        table: str,
        bars: pl.DataFrame,
        *,
        source: str,
        run_id: str,
        window: tuple[datetime, datetime] | None,
        quarantine: pl.DataFrame,
        journal: pl.DataFrame,
        selection: Sequence[str] | None = None,
    ) -> None:
        """As :meth:`DuckDBStore.replace_bars`: the window's (or the bars' per-symbol range's) rows replaced,
        quarantine and journal rows appended, in one transaction, stamped (module docstring)."""
        _check_bar_table(table)
        symbols = sorted(set(bars.get_column("symbol").unique().to_list()) | set(selection or ()))
        with self.cursor() as cur:
            if window is not None:
                self._stamp(cur, "replace_bars", f"market.{table}", run_id, None if selection is None else symbols,
                            window[0], window[1])
            else:
                self._stamp(cur, "replace_bars", f"market.{table}", run_id, symbols,
                            bars["ts"].min() if bars.height else None,
                            bars["ts"].max() + _MICRO if bars.height else None)
            if window is not None:
                cur.execute(
                    f"""DELETE FROM market.{table} WHERE ts >= %(start)s AND ts < %(end)s
                    AND ((%(whole)s AND source = %(source)s) OR symbol = ANY(%(symbols)s))""",
                    {"start": window[0], "end": window[1], "source": source, "symbols": symbols,
                     "whole": selection is None})
            elif bars.height:
                ranges = bars.group_by("symbol").agg(pl.col("ts").min().alias("lo"), pl.col("ts").max().alias("hi"))
                cur.execute(
                    f"""DELETE FROM market.{table} AS t
                    USING unnest(%(s)s::text[], %(lo)s::timestamp[], %(hi)s::timestamp[]) AS r(symbol, lo, hi)
                    WHERE t.symbol = r.symbol AND t.ts BETWEEN r.lo AND r.hi""",
                    {"s": ranges["symbol"].to_list(), "lo": ranges["lo"].to_list(), "hi": ranges["hi"].to_list()})
            if bars.height:
                self._ensure_partitions(cur, table, bars["ts"].min(), bars["ts"].max())
                self._copy_in(cur, f"market.{table}", self._bar_frame(bars, source, run_id))
            self._copy_in(cur, "market.quarantine", quarantine)
            self._copy_in(cur, "market.ingest_journal", journal)
            self._verify(cur)

    def upsert_bars(self, table: str, bars: pl.DataFrame, *, source: str, run_id: str) -> int:
        """As :meth:`DuckDBStore.upsert_bars`: keyed by (symbol, ts), later rows replace earlier ones."""
        _check_bar_table(table)
        if not bars.height:
            return 0
        new = bars.unique(subset=["symbol", "ts"], keep="last", maintain_order=True)
        with self.cursor() as cur:
            self._stamp(cur, "upsert_bars", f"market.{table}", run_id, new["symbol"].unique().to_list(),
                        new["ts"].min(), new["ts"].max() + _MICRO)
            self._ensure_partitions(cur, table, new["ts"].min(), new["ts"].max())
            cur.execute(f"CREATE TEMP TABLE new_bars (LIKE market.{table}) ON COMMIT DROP")
            self._copy_in(cur, "new_bars", self._bar_frame(new, source, run_id))
            sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in (*BAR_COLUMNS[2:], "source", "run_id"))
            cur.execute(f"INSERT INTO market.{table} SELECT * FROM new_bars ON CONFLICT (symbol, ts) DO UPDATE "
                        f"SET {sets}")
            self._verify(cur)
        return new.height

    def read_bars(
        self,
        table: str,
        *,
        symbols: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pl.DataFrame:
        """Bars of ``table`` in [start, end), sorted by (symbol, ts), streamed out with COPY."""
        _check_bar_table(table)
        clauses, params = time_window(start, end, mark=lambda name: f"%({name})s")
        if symbols is not None:
            clauses.append("symbol = ANY(%(symbols)s)")
            params["symbols"] = list(symbols)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {', '.join(BAR_COLUMNS)} FROM market.{table} {where} ORDER BY symbol, ts"
        return self.copy_out(sql, params, BAR_SCHEMA)

    def copy_out(self, sql: str, params: dict, schema: dict[str, pl.DataType]) -> pl.DataFrame:
        """The rows of ``sql`` (psycopg placeholders) with a known ``schema``, through ``COPY ... TO STDOUT``."""
        from psycopg import ClientCursor

        buf = io.BytesIO()
        with self.begin() as con:
            raw = con.connection.driver_connection
            with ClientCursor(raw) as cur:
                statement = cur.mogrify(sql, params) if params else sql
                with cur.copy(f"COPY ({statement}) TO STDOUT (FORMAT csv)") as copy:
                    for block in copy:
                        buf.write(block)
        if not buf.tell():
            return pl.DataFrame(schema=schema)
        buf.seek(0)
        return pl.read_csv(buf, has_header=False, new_columns=list(schema), schema=schema,
                           try_parse_dates=False)

    # -- generic ------------------------------------------------------------------

    def query(self, sql: str, params: dict | None = None) -> pl.DataFrame:
        """The rows of ``sql`` (DuckDB-style ``$name`` parameters) as a frame typed by the result's columns."""
        with self.cursor() as cur:
            cur.execute(to_pyformat(sql), params or {})
            if cur.description is None:
                return pl.DataFrame()
            rows = cur.fetchall()
            names = [d.name for d in cur.description]
            oids = [d.type_code for d in cur.description]
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        series = []
        for name, oid, values in zip(names, oids, columns, strict=True):
            dtype = _OID_TYPES.get(oid)
            converted = [_value(v) for v in values] if dtype is None or oid in _CONVERTED else values
            series.append(pl.Series(name, converted, dtype=dtype, strict=False))
        return pl.DataFrame(series)

    def append(self, table: str, frame: pl.DataFrame) -> int:
        check_ident(table)
        with self.cursor() as cur:
            self._stamp(cur, "append", table, _single_run(frame))
            self._copy_in(cur, table, frame)
            self._verify(cur)
        return frame.height

    def replace_table(self, table: str, frame: pl.DataFrame) -> int:
        """Replace every row of ``table`` (a small, unpartitioned table) in one transaction."""
        check_ident(table)
        with self.cursor() as cur:
            self._stamp(cur, "replace_table", table)
            cur.execute(f"DELETE FROM {table}")
            self._copy_in(cur, table, frame)
            self._verify(cur)
        return frame.height

    def replace_windows(self, tables: dict[str, pl.DataFrame], *, dataset: str, start: datetime,
                        end: datetime) -> None:
        """As :meth:`DuckDBStore.replace_windows`: each table's [start, end) rows of ``dataset`` replaced, all
        tables in one transaction; a table not declared by the migrations is created from its frame."""
        for table in tables:
            check_ident(table)
        with self.begin() as con:
            raw = con.connection.driver_connection
            with raw.cursor() as cur:
                for table in sorted(tables):  # locks in one order: two writers never wait on each other
                    self._stamp(cur, "replace_windows", table, None, None, start, end, dataset)
                for table, frame in tables.items():
                    self._create_from(con, table, frame)
                    cur.execute(f"DELETE FROM {table} WHERE dataset = %(d)s AND ts >= %(s)s AND ts < %(e)s",
                                {"d": dataset, "s": start, "e": end})
                    self._copy_in(cur, table, frame)
                self._verify(cur)

    def append_table(self, table: str, frame: pl.DataFrame) -> int:
        """As :meth:`DuckDBStore.append_table`: created from the frame the first time, a column the table lacks
        added (empty for older rows), a whole-number column widened to the frame's real type."""
        check_ident(table)
        with self.begin() as con:
            with con.connection.driver_connection.cursor() as cur:
                self._stamp(cur, "append_table", table, _single_run(frame))
            if not self._create_from(con, table, frame):
                self._add_missing_columns(con, table, frame)
            with con.connection.driver_connection.cursor() as cur:
                self._copy_in(cur, table, frame)
                self._verify(cur)
        return frame.height

    def overwrite_table(self, table: str, frame: pl.DataFrame) -> int:
        """Create or replace ``table`` with exactly ``frame``, in one transaction (readers see old or new)."""
        check_ident(table)
        with self.begin() as con:
            with con.connection.driver_connection.cursor() as cur:
                self._stamp(cur, "overwrite_table", table)
            con.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
            self._create_from(con, table, frame)
            with con.connection.driver_connection.cursor() as cur:
                self._copy_in(cur, table, frame)
                self._verify(cur)
        return frame.height

    def ensure_table(self, table: str, schema: dict[str, pl.DataType], key: Sequence[str]) -> None:
        """``table`` with every column of ``schema`` and primary key ``key`` (a column it lacks is added)."""
        check_ident(table)
        frame = pl.DataFrame(schema=schema)
        with self.begin() as con:
            if not self._create_from(con, table, frame, key=key):
                self._add_missing_columns(con, table, frame)

    def insert_new(self, table: str, frame: pl.DataFrame, key: Sequence[str]) -> int:
        """Insert the rows of ``frame`` whose ``key`` is not in ``table`` yet; return how many were inserted."""
        check_ident(table)
        if not frame.height:
            return 0
        with self.cursor() as cur:
            self._stamp(cur, "insert_new", table, _single_run(frame))
            cur.execute(f"CREATE TEMP TABLE new_rows (LIKE {table}) ON COMMIT DROP")
            self._copy_in(cur, "new_rows", frame)
            cols = _quoted(frame.columns)
            cur.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM new_rows "
                        f"ON CONFLICT ({_quoted(key)}) DO NOTHING")
            inserted = cur.rowcount
            self._verify(cur)
            return inserted

    def tables(self) -> list[str]:
        """The platform's tables (schema.name) that exist; yearly partitions are parts of their table."""
        with self.cursor() as cur:
            cur.execute("""SELECT n.nspname || '.' || c.relname FROM pg_class c
                JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1""",
                        (list(SCHEMAS),))
            return [n for (n,) in cur.fetchall()]

    def table_counts(self) -> dict[str, int]:
        names = self.tables()
        with self.cursor() as cur:
            out = {}
            for n in names:
                cur.execute(f"SELECT count(*) FROM {n}")
                out[n] = cur.fetchone()[0]
            return out

    # -- schema from frames (SQLAlchemy Core) --------------------------------------

    def _create_from(self, con, table: str, frame: pl.DataFrame, key: Sequence[str] = ()) -> bool:
        """Create ``table`` from the frame's schema if it does not exist; True when it was created."""
        import sqlalchemy as sa

        schema, name = table.split(".", maxsplit=1)
        if sa.inspect(con).has_table(name, schema=schema):
            return False
        con.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        columns = [sa.Column(c, sa_type(table, c, t), primary_key=c in key) for c, t in frame.schema.items()]
        sa.Table(name, sa.MetaData(schema=schema), *columns).create(con)
        return True

    def _add_missing_columns(self, con, table: str, frame: pl.DataFrame) -> None:
        import sqlalchemy as sa

        schema, name = table.split(".", maxsplit=1)
        have = {c["name"]: c["type"] for c in sa.inspect(con).get_columns(name, schema=schema)}
        for col, dtype in frame.schema.items():
            old = have.get(col)
            new = sa_type(table, col, dtype).compile(con.dialect)
            if old is None:
                con.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {_quoted([col])} {new}")
            elif isinstance(old, sa.Integer) and dtype.is_float():
                con.exec_driver_sql(f"ALTER TABLE {table} ALTER COLUMN {_quoted([col])} TYPE {new}")
            elif dtype != pl.Null and old.compile(con.dialect) != new and not (isinstance(old, sa.Float)
                                                                               and dtype.is_integer()):
                raise EmpError(f"{table}.{col} is {old} but new rows bring {dtype}; migrate the table first")


def sqlalchemy_url(conninfo: str, driver: str = "psycopg"):
    """A SQLAlchemy URL (``postgresql+<driver>``, psycopg 3 by default) for a libpq connection string, in URL or
    ``key=value`` form."""
    import sqlalchemy as sa
    from psycopg.conninfo import conninfo_to_dict

    parts = {k: str(v) for k, v in conninfo_to_dict(conninfo).items()}
    host, port = parts.pop("host", None), parts.pop("port", None)
    if host and ("/" in host or "," in host):  # a socket directory or several hosts: libpq reads them from the query
        parts["host"], host = host, None
        if port:
            parts["port"], port = port, None
    return sa.engine.URL.create(f"postgresql+{driver}", username=parts.pop("user", None),
                                password=parts.pop("password", None), host=host, port=int(port) if port else None,
                                database=parts.pop("dbname", None), query=parts)


def _single_run(frame: pl.DataFrame) -> str | None:
    """The run id of a frame whose rows all carry the same one (what a write's stamp names), else None."""
    if "run_id" not in frame.columns or not frame.height:
        return None
    runs = frame.get_column("run_id").unique()
    return runs[0] if runs.len() == 1 else None


def _check_bar_table(table: str) -> None:
    if table not in BAR_TABLES:
        raise EmpError(f"unknown bar table {table!r}; choose one of {', '.join(BAR_TABLES)}")


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` means the server cannot be reached (connection refused or lost, the server shutting
    down): what failover is for. A lock timeout, a cancelled statement, a deadlock, a full disk or a refused login
    come from a server that is up; they are errors of the run, not outages (SQLSTATE classes 08 and 57P0x are
    outages; a failure without a SQLSTATE is the client's connection failing)."""
    orig = getattr(exc, "orig", None) or exc
    state = getattr(orig, "sqlstate", None)
    if state is None:
        text = str(orig).lower()
        return not any(w in text for w in ("password authentication failed", "role ", "does not exist",
                                             "permission denied", "no pg_hba.conf entry"))
    return state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _psycopg_operational() -> type:
    import psycopg

    return psycopg.OperationalError


__all__ = ["PostgresStore", "StoreUnavailableError", "to_pyformat"]

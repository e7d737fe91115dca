"""The embedded analytic store: one DuckDB file under ``$EMP_HOME``.

DuckDB admits one writer process at a time. Connections here are short-lived
(opened per operation, closed at once) and a locked file is retried with
back-off for ``lock_timeout`` seconds before a clear error, so the CLI, the
Dagster UI's runs and notebooks can take turns on the same file. Within one
process, operations on the same file take turns too (a lock per file): DuckDB's
optimistic transactions let two threads' delete-then-insert of the same bar both
commit (two rows, where the stores promise one), and two threads creating the
schema of a new file conflict.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from emp_core.errors import EmpError

BAR_TABLES = ("bars_1d", "bars_1h")

DDL = [
    "CREATE SCHEMA IF NOT EXISTS market",
    "CREATE SCHEMA IF NOT EXISTS macro",
    *[
        f"""CREATE TABLE IF NOT EXISTS market.{t} (
            symbol VARCHAR NOT NULL, ts TIMESTAMP NOT NULL,
            open DOUBLE NOT NULL, high DOUBLE NOT NULL, low DOUBLE NOT NULL, close DOUBLE NOT NULL,
            volume DOUBLE NOT NULL,
            source VARCHAR NOT NULL, run_id VARCHAR NOT NULL)"""
        for t in BAR_TABLES
    ],
    """CREATE TABLE IF NOT EXISTS market.quarantine (
        run_id VARCHAR NOT NULL, dataset VARCHAR NOT NULL, source VARCHAR NOT NULL, input VARCHAR NOT NULL,
        row_number BIGINT NOT NULL, symbol VARCHAR, ts VARCHAR, ts_utc TIMESTAMP, reason VARCHAR NOT NULL,
        raw VARCHAR NOT NULL,
        quarantined_at TIMESTAMP NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS market.ingest_journal (
        run_id VARCHAR NOT NULL, dataset VARCHAR NOT NULL, partition_key VARCHAR,
        window_start TIMESTAMP, window_end TIMESTAMP, source VARCHAR NOT NULL, input VARCHAR NOT NULL,
        symbols VARCHAR, rows_in BIGINT NOT NULL, rows_stored BIGINT NOT NULL, rows_quarantined BIGINT NOT NULL,
        latest_ts TIMESTAMP, freshness_lag_bars BIGINT, status VARCHAR NOT NULL, message VARCHAR,
        started_at TIMESTAMP NOT NULL, finished_at TIMESTAMP NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS market.universe (
        dataset VARCHAR NOT NULL, symbol VARCHAR NOT NULL, first_ts TIMESTAMP, last_ts TIMESTAMP, bars BIGINT,
        quarantined BIGINT, last_run_id VARCHAR, last_ingested_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS macro.series (
        series_id VARCHAR NOT NULL, period_start DATE NOT NULL, period_end DATE NOT NULL,
        available_at DATE NOT NULL, value DOUBLE NOT NULL, frequency VARCHAR NOT NULL, source VARCHAR NOT NULL,
        run_id VARCHAR NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS macro.treasury_curve (
        date DATE NOT NULL, available_at DATE NOT NULL,
        m1 DOUBLE, m3 DOUBLE, m6 DOUBLE, y1 DOUBLE, y2 DOUBLE, y3 DOUBLE, y5 DOUBLE, y7 DOUBLE, y10 DOUBLE,
        y20 DOUBLE, y30 DOUBLE, run_id VARCHAR NOT NULL)""",
    # the audit trail (emp_core/compliance/audit_store.py; PostgreSQL: sql/postgres/010_audit.sql)
    "CREATE SCHEMA IF NOT EXISTS audit",
    "CREATE SCHEMA IF NOT EXISTS compliance",  # breaches, KYC dossiers and cases, transaction reports, ROI
    """CREATE TABLE IF NOT EXISTS audit.log (
        seq BIGINT PRIMARY KEY, ts VARCHAR NOT NULL, kind VARCHAR NOT NULL, payload VARCHAR NOT NULL,
        prev_hash VARCHAR NOT NULL, hash VARCHAR NOT NULL)""",
]

_TABLES_SQL = ("SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_schema IN "
               "('market', 'macro', 'sensory', 'evolution', 'trading', 'audit', 'compliance') ORDER BY 1")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")


class StoreLockedError(EmpError):
    pass


_FILE_LOCKS: dict[str, threading.RLock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _file_lock(path: Path) -> threading.RLock:
    key = str(path.resolve())
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(key, threading.RLock())


_WHOLE = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"}
_REAL = {"FLOAT", "DOUBLE"}


def add_missing_columns(con: duckdb.DuckDBPyConnection, table: str, source: str) -> None:
    """Bring ``table`` up to the relation ``source``: add every column it lacks, with the source's type, and
    widen a whole-number column to the source's real type (a table created from a frame whose figures were
    all null typed them INTEGER, which would round every later value). Any other type clash is an error."""
    have = {r[0].lower(): r[1] for r in con.execute(f"DESCRIBE {table}").fetchall()}
    for name, sql_type, *_ in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall():
        old = have.get(name.lower())
        if old is None:
            con.execute(f'ALTER TABLE {table} ADD COLUMN "{name}" {sql_type}')
        elif old in _WHOLE and sql_type in _REAL:
            con.execute(f'ALTER TABLE {table} ALTER COLUMN "{name}" TYPE {sql_type}')
        elif sql_type not in (old, '"NULL"') and not (old in _REAL and sql_type in _WHOLE):
            raise EmpError(f"{table}.{name} is {old} but new rows bring {sql_type}; migrate the table first")


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    con.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _also(con: duckdb.DuckDBPyConnection, also) -> None:
    if also is not None:
        also(con)


def _batched(frame: pl.DataFrame) -> pa.Table:
    """The frame as Arrow in 256k-row batches: DuckDB scans an Arrow table in parallel by
    record batch, and one 1M-row chunk would scan on one core."""
    whole = frame.to_arrow()
    return pa.Table.from_batches(whole.to_batches(max_chunksize=262_144), schema=whole.schema)


class DuckDBStore:
    """Tables: ``market.bars_1d``, ``market.bars_1h``, ``market.quarantine``,
    ``market.ingest_journal``, ``macro.series``, ``macro.treasury_curve``, and the
    ``sensory.*`` feature tables (created by :meth:`replace_windows`)."""

    def __init__(self, path: str | Path, lock_timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self._schema_ready = False

    dialect = "duckdb"

    def __repr__(self) -> str:
        return f"DuckDBStore({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    @property
    def location(self) -> str:
        return str(self.path)

    def exists(self) -> bool:
        """Whether the store has been created (a read-only command on a fresh home has nothing to read)."""
        return self.path.exists()

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if read_only and not self.path.exists():
            raise EmpError(f"{self.path}: no store yet; run `emp demo` or `emp ingest` first")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.path):
            con = self._open(read_only)
            try:
                if not read_only and not self._schema_ready:
                    for stmt in DDL:
                        con.execute(stmt)
                    self._schema_ready = True
                yield con
            finally:
                con.close()

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.05
        while True:
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower():
                    raise EmpError(f"{self.path}: cannot open the DuckDB store ({exc})") from None
                if time.monotonic() >= deadline:
                    raise StoreLockedError(
                        f"{self.path}: the DuckDB store is held by another process for over "
                        f"{self.lock_timeout:.0f}s; stop it (a run, a notebook) and retry"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    # -- bars ---------------------------------------------------------------

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
        also: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
    ) -> None:
        """Idempotently store ``bars`` with their quarantine and journal rows, in one transaction.

        With a ``window`` [start, end): deletes the window's rows that came from
        ``source`` or belong to a symbol in ``bars``, then inserts; when the read was
        limited to the symbols in ``selection``, only those symbols' rows (and those of
        ``bars``) are deleted, never another symbol's. Without a window: deletes, per
        symbol, the range [first, last] that ``bars`` covers. Re-running the same input
        therefore leaves exactly one copy.

        ``also(con)``, when given, runs inside the same transaction after the write (every write method takes
        it: the failover path records the write in its log, so the write and its record commit together).
        """
        if table not in BAR_TABLES:
            raise EmpError(f"unknown bar table {table!r}; choose one of {', '.join(BAR_TABLES)}")
        symbols = sorted(set(bars.get_column("symbol").unique().to_list()) | set(selection or ()))
        arrow = _batched(bars)
        with self.connect() as con, _transaction(con):
            con.register("new_bars", arrow)
            con.register("new_quarantine", quarantine.to_arrow())
            con.register("new_journal", journal.to_arrow())
            if window is not None:
                con.execute(
                    f"""DELETE FROM market.{table} WHERE ts >= $start AND ts < $end
                    AND (($whole AND source = $source) OR list_contains($symbols, symbol))""",
                    {"start": window[0], "end": window[1], "source": source, "symbols": symbols,
                     "whole": selection is None},
                )
            elif bars.height:
                con.execute(
                    f"""DELETE FROM market.{table} AS t USING (
                        SELECT symbol, min(ts) AS lo, max(ts) AS hi FROM new_bars GROUP BY symbol) AS r
                    WHERE t.symbol = r.symbol AND t.ts BETWEEN r.lo AND r.hi"""
                )
            con.execute(
                f"""INSERT INTO market.{table}
                SELECT symbol, ts, open, high, low, close, volume, $source, $run_id FROM new_bars""",
                {"source": source, "run_id": run_id},
            )
            if quarantine.height:
                con.execute("INSERT INTO market.quarantine BY NAME SELECT * FROM new_quarantine")
            con.execute("INSERT INTO market.ingest_journal BY NAME SELECT * FROM new_journal")
            _also(con, also)

    def upsert_bars(self, table: str, bars: pl.DataFrame, *, source: str, run_id: str, also=None) -> int:
        """Store ``bars`` keyed by (symbol, ts): a bar already held at the same key is replaced, every other
        bar is left alone. Applying the same rows twice leaves one copy (a stream consumer's redelivery).
        Returns the number of rows written."""
        if table not in BAR_TABLES:
            raise EmpError(f"unknown bar table {table!r}; choose one of {', '.join(BAR_TABLES)}")
        if not bars.height:
            return 0
        new = bars.unique(subset=["symbol", "ts"], keep="last", maintain_order=True)
        with self.connect() as con, _transaction(con):
            con.register("new_bars", _batched(new))
            con.execute(f"DELETE FROM market.{table} AS t USING new_bars AS n WHERE t.symbol = n.symbol "
                        "AND t.ts = n.ts")
            con.execute(
                f"""INSERT INTO market.{table}
                SELECT symbol, ts, open, high, low, close, volume, $source, $run_id FROM new_bars""",
                {"source": source, "run_id": run_id},
            )
            _also(con, also)
        return new.height

    def read_bars(
        self,
        table: str,
        *,
        symbols: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pl.DataFrame:
        """Bars of ``table`` in [start, end), sorted by (symbol, ts)."""
        clauses, params = time_window(start, end)
        if symbols is not None:
            clauses.append("list_contains($symbols, symbol)")
            params["symbols"] = list(symbols)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        return self.query(
            f"SELECT symbol, ts, open, high, low, close, volume FROM market.{table} {where} ORDER BY symbol, ts",
            params,
        )

    # -- generic ------------------------------------------------------------

    def query(self, sql: str, params: dict | None = None) -> pl.DataFrame:
        with self.connect() as con:
            return con.execute(sql, params or {}).pl()

    def append(self, table: str, frame: pl.DataFrame, also=None) -> int:
        check_ident(table)
        with self.connect() as con, _transaction(con):
            con.register("new_rows", frame.to_arrow())
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM new_rows")
            _also(con, also)
        return frame.height

    def replace_table(self, table: str, frame: pl.DataFrame, also=None) -> int:
        """Replace every row of ``table`` (a small, unpartitioned table) in one transaction."""
        check_ident(table)
        with self.connect() as con, _transaction(con):
            con.register("new_rows", frame.to_arrow())
            con.execute(f"DELETE FROM {table}")
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM new_rows")
            _also(con, also)
        return frame.height

    def replace_windows(self, tables: dict[str, pl.DataFrame], *, dataset: str, start: datetime,
                        end: datetime, also=None) -> None:
        """Idempotently store the [start, end) window of ``dataset`` in each table, in one transaction.

        Each frame has ``dataset`` and ``ts`` columns; a table that does not exist yet is
        created from its frame's schema. The window's rows of ``dataset`` are deleted, then
        the frame is inserted by column name, so running the same window twice leaves one copy.
        """
        for table in tables:
            check_ident(table)
        with self.connect() as con, _transaction(con):
            for table, frame in tables.items():
                schema = table.split(".", maxsplit=1)[0]
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                con.register("new_rows", _batched(frame))
                con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM new_rows LIMIT 0")
                con.execute(f"DELETE FROM {table} WHERE dataset = $dataset AND ts >= $start AND ts < $end",
                            {"dataset": dataset, "start": start, "end": end})
                con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM new_rows")
                con.unregister("new_rows")
            _also(con, also)

    def append_table(self, table: str, frame: pl.DataFrame, also=None) -> int:
        """Append ``frame`` to ``table`` by column name, creating it from the frame's schema the first time
        (a history kept across runs, such as the promotion decisions); a column the table lacks (it was
        written by an earlier version) is added first, empty for the old rows."""
        check_ident(table)
        with self.connect() as con, _transaction(con):
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {table.split('.', maxsplit=1)[0]}")
            con.register("new_rows", frame.to_arrow())
            con.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM new_rows LIMIT 0")
            add_missing_columns(con, table, "new_rows")
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM new_rows")
            _also(con, also)
        return frame.height

    def overwrite_table(self, table: str, frame: pl.DataFrame, also=None) -> int:
        """Create or replace ``table`` with exactly ``frame`` (a small derived table such as calibration)."""
        check_ident(table)
        with self.connect() as con, _transaction(con):
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {table.split('.', maxsplit=1)[0]}")
            con.register("new_rows", frame.to_arrow())
            con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM new_rows")
            _also(con, also)
        return frame.height

    def tables(self) -> list[str]:
        """The platform's tables (schema.name) that exist, without counting their rows."""
        with self.connect() as con:
            return [n for (n,) in con.execute(_TABLES_SQL).fetchall()]

    def table_counts(self) -> dict[str, int]:
        with self.connect() as con:
            names = [n for (n,) in con.execute(_TABLES_SQL).fetchall()]
            return {n: con.execute(f"SELECT count(*) FROM {n}").fetchone()[0] for n in names}

    def ensure_table(self, table: str, schema: dict[str, pl.DataType], key: Sequence[str]) -> None:
        """``table`` with every column of ``schema`` and primary key ``key`` (a column it lacks is added)."""
        check_ident(table)
        cols = ", ".join(f"\"{c}\" {_duckdb_type(table, c, t)}" for c, t in schema.items())
        with self.connect() as con:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {table.split('.', maxsplit=1)[0]}")
            con.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols}, PRIMARY KEY ({', '.join(key)}))")
            con.register("table_schema", pl.DataFrame(schema=schema).to_arrow())
            add_missing_columns(con, table, "table_schema")
            con.unregister("table_schema")

    def insert_new(self, table: str, frame: pl.DataFrame, key: Sequence[str], also=None) -> int:
        """Insert the rows of ``frame`` whose ``key`` is not in ``table`` yet; return how many were inserted."""
        check_ident(table)
        if not frame.height:
            return 0
        with self.connect() as con, _transaction(con):
            before = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            con.register("new_rows", frame.to_arrow())
            con.execute(f"INSERT OR IGNORE INTO {table} BY NAME SELECT * FROM new_rows")
            con.unregister("new_rows")
            _also(con, also)
            return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0] - before


def _duckdb_type(table: str, name: str, dtype: pl.DataType) -> str:
    for polars_type, sql in ((pl.String, "VARCHAR"), (pl.Int64, "BIGINT"), (pl.Float64, "DOUBLE"),
                             (pl.Boolean, "BOOLEAN"), (pl.Datetime("us"), "TIMESTAMP"), (pl.Date, "DATE")):
        if dtype == polars_type:
            return sql
    raise EmpError(f"{table}.{name}: no column type for {dtype}")


def time_window(start: datetime | None, end: datetime | None, mark=lambda name: f"${name}"
                ) -> tuple[list[str], dict]:
    """The SQL conditions (and parameters) of ``ts`` in [start, end), either bound open; ``mark`` writes a
    parameter placeholder in the caller's style (DuckDB's ``$name`` by default, psycopg's ``%(name)s``)."""
    clauses, params = [], {}
    if start is not None:
        clauses.append(f"ts >= {mark('start')}")
        params["start"] = start
    if end is not None:
        clauses.append(f"ts < {mark('end')}")
        params["end"] = end
    return clauses, params


def check_ident(table: str) -> None:
    """Refuse anything but ``schema.name`` in lower-case words (table names are put into SQL text)."""
    if not _IDENT.match(table):
        raise EmpError(f"not a table name: {table!r}")

"""Failover between tiers: the institutional store with an embedded fallback, and the catch-up after.

:class:`FailoverStore` has the stores' interface. Every call goes to the primary (PostgreSQL) until one raises
:class:`~emp_core.store.postgres_store.StoreUnavailableError`; from then on, in that process, every call goes to
the fallback (a DuckDB file of its own, ``$EMP_HOME/failover.duckdb``, holding nothing but what was written
during outages), so a run's reads see its own writes. The decision (when, why, which primary) and every write
done on the fallback (operation, table, window, run) are recorded in the fallback's ``ops.failover_log``.

A write the primary was doing when it went away was not committed (its transaction died with the
connection), so doing it again on the fallback loses nothing and doubles nothing. A write the primary did
commit just before the connection dropped may be in both: the catch-up replaces by window and key, so it
still leaves one copy.

:func:`catch_up` replays the log onto the primary once it answers: each bar window (its runs' bars, quarantine
and journal rows) with the same idempotent replace the ingest uses, then checks parity of every replayed window
(row count and an order-independent checksum of the rows, on both stores) and marks the log rows caught up
(the fallback keeps its copies, as the record of the outage). If any parity fails, nothing is marked and the
report names the window.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime

import polars as pl

from emp_core.clock import utcnow
from emp_core.store.postgres_store import StoreUnavailableError

log = logging.getLogger("emp.store")

LOG_TABLE = "ops.failover_log"
_WRITES = {"replace_bars", "upsert_bars", "replace_table", "replace_windows", "append", "append_table",
           "overwrite_table", "insert_new", "ensure_table"}
LOG_SCHEMA = {"decided_at": pl.Datetime("us"), "primary": pl.String, "reason": pl.String, "operation": pl.String,
              "target": pl.String, "window_start": pl.Datetime("us"), "window_end": pl.Datetime("us"),
              "run_id": pl.String, "rows": pl.Int64, "caught_up_at": pl.Datetime("us")}


class FailoverStore:
    """The primary store, or the fallback once the primary is unreachable (module docstring)."""

    def __init__(self, primary, fallback) -> None:
        self.primary = primary
        self.fallback = fallback
        self.reason: str | None = None  # why this process failed over (None: on the primary)
        self.decided_at: datetime | None = None

    @property
    def active(self):
        return self.fallback if self.reason else self.primary

    @property
    def dialect(self) -> str:
        return self.active.dialect

    @property
    def location(self) -> str:
        return f"{self.primary.location} (failed over to {self.fallback.location})" if self.reason \
            else self.primary.location

    def __str__(self) -> str:
        return self.location

    def exists(self) -> bool:
        return self.active.exists()

    def __getattr__(self, name: str):
        target = getattr(self.primary, name)
        if not callable(target):
            return getattr(self.active, name)

        def call(*args, **kwargs):
            if not self.reason:
                try:
                    return target(*args, **kwargs)
                except StoreUnavailableError as exc:
                    self._fail_over(exc)
            result = getattr(self.fallback, name)(*args, **kwargs)
            if name in _WRITES and name != "ensure_table":
                self._record(name, args, kwargs)
            return result

        return call

    def _fail_over(self, exc: Exception) -> None:
        self.reason = " ".join(str(exc).split())
        self.decided_at = utcnow()
        log.warning("failover: %s is unreachable; writing to %s (%s)", self.primary.location,
                    self.fallback.location, self.reason)

    def _record(self, operation: str, args: tuple, kwargs: dict) -> None:
        target = args[0] if args else kwargs.get("table")
        window = kwargs.get("window")
        start, end = (window or (None, None)) if operation == "replace_bars" else (kwargs.get("start"),
                                                                                      kwargs.get("end"))
        if operation == "replace_windows":
            target = ",".join(sorted(args[0] if args else kwargs["tables"]))
        frame = args[1] if len(args) > 1 and isinstance(args[1], pl.DataFrame) else None
        row = pl.DataFrame([{
            "decided_at": self.decided_at, "primary": self.primary.location, "reason": self.reason,
            "operation": operation, "target": target, "window_start": start, "window_end": end,
            "run_id": kwargs.get("run_id"), "rows": frame.height if frame is not None else None,
            "caught_up_at": None}], schema=LOG_SCHEMA)
        self.fallback.append_table(LOG_TABLE, row)


def pending(fallback) -> pl.DataFrame:
    """The fallback's log rows not caught up yet, oldest first."""
    present = fallback.query("SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'ops' "
                             "AND table_name = 'failover_log'").item()
    if not present:  # ops.* are not among the platform's tables() (they are the platform's own records)
        return pl.DataFrame(schema=LOG_SCHEMA)
    return fallback.query(f"SELECT * FROM {LOG_TABLE} WHERE caught_up_at IS NULL ORDER BY decided_at")


def checksum(frame: pl.DataFrame) -> tuple[int, str]:
    """Row count and an order-independent checksum of ``frame``'s rows (the same on any store that returns the
    same rows): the sum, modulo 2^64, of each row's 64-bit hash of its values as text."""
    if not frame.height:
        return 0, "0" * 16
    text = frame.select(pl.concat_str([pl.col(c).cast(pl.String).fill_null("\x00") for c in frame.columns],
                                      separator="\x1f").alias("row"))["row"]
    total = 0
    for value in text:
        total = (total + int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "big")) % (1 << 64)
    return frame.height, f"{total:016x}"


@dataclass
class CatchUpReport:
    replayed: list[dict] = field(default_factory=list)  # one per log row: operation, target, window, parity
    pending_before: int = 0

    @property
    def parity(self) -> bool:
        return all(r["parity"] for r in self.replayed)

    def as_dict(self) -> dict:
        return {"pending_before": self.pending_before, "replayed": self.replayed, "parity": self.parity}


_BAR_KEY = ("symbol", "ts", "open", "high", "low", "close", "volume", "source", "run_id")


def _bar_rows(store, table: str, run_id: str) -> pl.DataFrame:
    return store.query(f"SELECT {', '.join(_BAR_KEY)} FROM market.{table} WHERE run_id = $r", {"r": run_id})


def bar_parity(primary, fallback, table: str, run_id: str) -> dict:
    """Whether both stores hold the same bars of ``run_id`` in ``market.<table>`` (count and checksum)."""
    ours, theirs = (checksum(_bar_rows(s, table, run_id)) for s in (fallback, primary))
    return {"parity": ours == theirs, "rows": ours[0], "primary_rows": theirs[0], "checksum": ours[1],
            "primary_checksum": theirs[1]}


def catch_up(primary, fallback) -> CatchUpReport:
    """Replay the fallback's pending writes onto ``primary`` and check parity (module docstring). Raises
    :class:`StoreUnavailableError` when the primary is still down (nothing is changed then)."""
    todo = pending(fallback)
    report = CatchUpReport(pending_before=todo.height)
    primary.tables()  # fails fast, before anything is replayed, while the primary is down
    done_runs: set[tuple[str, str]] = set()
    for row in todo.iter_rows(named=True):
        entry = {"operation": row["operation"], "target": row["target"], "run_id": row["run_id"],
                 "window": [str(row["window_start"]), str(row["window_end"])]}
        if row["operation"] == "replace_bars":
            table = row["target"]
            if (table, row["run_id"]) not in done_runs:
                _replay_bars(primary, fallback, table, row)
                done_runs.add((table, row["run_id"]))
            entry.update(bar_parity(primary, fallback, table, row["run_id"]))
        elif row["operation"] in ("replace_table", "overwrite_table"):
            frame = fallback.query(f"SELECT * FROM {row['target']}")
            getattr(primary, row["operation"])(row["target"], frame)
            theirs = primary.query(f"SELECT * FROM {row['target']}")
            entry.update(parity=checksum(_sorted(frame)) == checksum(_sorted(theirs.select(frame.columns))),
                         rows=frame.height)
        else:
            entry.update(parity=False, rows=None, note="no catch-up for this operation: replay it by hand")
        report.replayed.append(entry)
    if report.replayed and report.parity:
        fallback.replace_table(LOG_TABLE, pending_done(fallback))
    log.info("failover catch-up: %d write(s) replayed, parity %s", len(report.replayed),
             "holds" if report.parity else "FAILED")
    return report


def pending_done(fallback) -> pl.DataFrame:
    """The log with every pending row marked caught up now."""
    log_rows = fallback.query(f"SELECT * FROM {LOG_TABLE}")
    return log_rows.with_columns(pl.coalesce(pl.col("caught_up_at"), pl.lit(utcnow())).alias("caught_up_at"))


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(pl.all(), nulls_last=True)


def _replay_bars(primary, fallback, table: str, row: dict) -> None:
    run = row["run_id"]
    bars = _bar_rows(fallback, table, run)
    quarantine = fallback.query("SELECT * FROM market.quarantine WHERE run_id = $r", {"r": run})
    journal = fallback.query("SELECT * FROM market.ingest_journal WHERE run_id = $r", {"r": run})
    window = (row["window_start"], row["window_end"]) if row["window_start"] is not None else None
    if primary.query("SELECT count(*) AS n FROM market.ingest_journal WHERE run_id = $r", {"r": run}).item():
        # the primary committed this run's write just before it went away: its journal and quarantine are there
        quarantine, journal = quarantine.head(0), journal.head(0)
    sources = bars["source"].unique().to_list() or [journal["source"][0] if journal.height else "failover"]
    primary.replace_bars(table, bars.drop("source", "run_id"), source=sources[0], run_id=run, window=window,
                         quarantine=quarantine, journal=journal)


def drill(pg_url: str, workdir, *, symbols: int = 5, year: int = 2020) -> dict:
    """Rehearse a failover on demand, touching nothing of the platform's data: a scratch database on the server
    of ``pg_url`` stands for the primary, an unreachable address for its outage, a scratch DuckDB file for the
    fallback. A synthetic year of bars is ingested through a :class:`FailoverStore` (it must fail over and log
    the decision), then caught up into the scratch database (parity must hold). The scratch database is dropped
    whatever happens. Returns what happened, with timings."""
    import shutil
    import socket
    import time
    import uuid
    from pathlib import Path

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from emp_core.market_data.ingest import Partition
    from emp_core.market_data.pipeline import ingest_window
    from emp_core.market_data.sources import SyntheticSource
    from emp_core.store.duckdb_store import DuckDBStore
    from emp_core.store.migrations import _connect
    from emp_core.store.postgres_store import PostgresStore

    t0 = time.perf_counter()
    name = f"emp_drill_{uuid.uuid4().hex[:10]}"
    scratch_url = make_conninfo(pg_url, dbname=name)
    with socket.socket() as s:  # a loopback port nothing listens on: the primary "down"
        s.bind(("127.0.0.1", 0))
        down_port = s.getsockname()[1]
    parts = conninfo_to_dict(pg_url)
    down_url = make_conninfo(pg_url, host="127.0.0.1", port=str(down_port), dbname=parts.get("dbname") or "emp")
    work = Path(workdir) / name
    work.mkdir(parents=True, exist_ok=True)
    primary = PostgresStore(scratch_url)
    try:
        fallback = DuckDBStore(work / "failover.duckdb")
        store = FailoverStore(PostgresStore(down_url, connect_timeout=2), fallback)
        source = SyntheticSource(symbols, datetime(year, 1, 1), datetime(year + 1, 1, 1), seed=year)
        window = [Partition(f"{year}", datetime(year, 1, 1), datetime(year + 1, 1, 1))]
        t1 = time.perf_counter()
        result = ingest_window(store, source, "bars_1d", window, run_id=f"drill-{name}", max_gap_ratio=1.0)
        outage_seconds = time.perf_counter() - t1
        logged = pending(fallback).height
        t2 = time.perf_counter()
        report = catch_up(primary, fallback)
        catch_up_seconds = time.perf_counter() - t2
        passed = bool(store.reason) and logged > 0 and report.parity and bool(report.replayed)
        return {"passed": passed, "failed_over": store.reason is not None, "reason": store.reason,
                "rows_stored": result.report.rows_stored, "writes_logged": logged,
                "replayed": len(report.replayed), "parity": report.parity, "scratch_database": name,
                "outage_ingest_seconds": round(outage_seconds, 3), "catch_up_seconds": round(catch_up_seconds, 3),
                "seconds": round(time.perf_counter() - t0, 3)}
    finally:
        primary.dispose()
        with _connect(make_conninfo(pg_url, dbname="postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(work, ignore_errors=True)

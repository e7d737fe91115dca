"""Failover between tiers: the institutional store with an embedded fallback, and the catch-up after.

:class:`FailoverStore` has the stores' interface. Calls go to the primary (PostgreSQL). When it is unreachable:

- an **ingest write** (``replace_bars``, ``upsert_bars``, ``append``, ``replace_table``) fails over: from
  then on this store object sends every call to the fallback, a DuckDB file of its own
  (``$EMP_HOME/failover.duckdb``) that holds nothing but what was written during outages, so the run's reads
  see its own writes (an ingest reads its window back for its checks). The store object is the step's
  (``StoreResource.store()`` makes one per call). It never goes back to the primary on its own: its writes
  there would be overwritten by the replay of its earlier outage writes (restart a long-lived consumer after
  the catch-up);
- **anything else** (a read, a derived table's write) raises :class:`StoreUnavailableError`: a derived asset
  computed from the fallback would see only the outage's rows, so it waits for the primary instead.

The decision and every write done on the fallback are recorded in the fallback's ``ops.failover_log``
(``written_at``, operation, table, window, run, symbol selection, key). A write the primary was doing when it
went away was not committed (its transaction died with the connection), so doing it again on the fallback
loses nothing and doubles nothing.

:func:`catch_up` replays the log onto the primary once it answers, in the order the writes were made
(``written_at``), with the same operation and arguments the run used (the ingest's idempotent replace with its
window and selection, so nothing outside the run's scope is touched). Before replaying a bar write it looks for
a run on the primary that wrote the same window after it: such a window is a **conflict**, not replayed
(stale outage rows must not overwrite newer data), and reported for a decision. After all replays, parity is
checked per replayed bar write on its whole scope (every row the run's replace governs, on both stores: count
and a checksum of the rows as JSON, column names and types included), and the primary's rows outside that
scope must be unchanged by the replay. Only the log rows replayed with parity are marked caught up; anything
written meanwhile stays pending.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from emp_core.clock import utcnow
from emp_core.store.postgres_store import StoreUnavailableError

log = logging.getLogger("emp.store")

LOG_TABLE = "ops.failover_log"
FAILS_OVER = {"replace_bars", "upsert_bars", "append", "replace_table"}  # the ingests' writes (bars, macro)
_LOGGED = {"replace_bars", "upsert_bars", "replace_table", "replace_windows", "append", "append_table",
           "overwrite_table", "insert_new"}
LOG_SCHEMA = {"written_at": pl.Datetime("us"), "decided_at": pl.Datetime("us"), "primary": pl.String,
              "reason": pl.String, "operation": pl.String, "target": pl.String, "dataset": pl.String,
              "window_start": pl.Datetime("us"), "window_end": pl.Datetime("us"), "run_id": pl.String,
              "selection": pl.String, "key": pl.String, "rows": pl.Int64, "caught_up_at": pl.Datetime("us"),
              "note": pl.String}


class FailoverStore:
    """The primary store, or the fallback for an ingest while the primary is unreachable (module docstring)."""

    def __init__(self, primary, fallback) -> None:
        self.primary = primary
        self.fallback = fallback
        self.reason: str | None = None  # why this store failed over (None: on the primary)
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
                    if name not in FAILS_OVER:
                        raise
                    self._fail_over(exc)
            result = getattr(self.fallback, name)(*args, **kwargs)
            if name in _LOGGED:
                self._record(name, args, kwargs)
            return result

        return call

    def _fail_over(self, exc: Exception) -> None:
        self.reason = " ".join(str(exc).split())
        self.decided_at = utcnow()
        log.warning("failover: %s is unreachable; writing to %s (%s)", self.primary.location,
                    self.fallback.location, self.reason)

    def _record(self, operation: str, args: tuple, kwargs: dict) -> None:
        self.fallback.append_table(LOG_TABLE, pl.DataFrame([{
            "written_at": utcnow(), "decided_at": self.decided_at, "primary": self.primary.location,
            "reason": self.reason, "operation": operation, "caught_up_at": None, "note": None,
            **_describe(operation, args, kwargs)}], schema=LOG_SCHEMA))


def _arg(args: tuple, kwargs: dict, i: int, name: str):
    return args[i] if len(args) > i else kwargs.get(name)


def _single_run(frame) -> str | None:
    if not isinstance(frame, pl.DataFrame) or "run_id" not in frame.columns:
        return None
    runs = frame.get_column("run_id").unique().to_list()
    return runs[0] if len(runs) == 1 else None


def _describe(operation: str, args: tuple, kwargs: dict) -> dict:
    """What a replay needs of one write: its target, window, run, selection and key."""
    out = {"target": None, "dataset": None, "window_start": None, "window_end": None, "run_id": None,
           "selection": None, "key": None, "rows": None}
    if operation == "replace_windows":
        tables = _arg(args, kwargs, 0, "tables")
        frames = list(tables.values())
        out.update(target=",".join(sorted(tables)), dataset=kwargs.get("dataset"), window_start=kwargs.get("start"),
                   window_end=kwargs.get("end"), run_id=_single_run(frames[0]) if frames else None,
                   rows=sum(f.height for f in frames))
        return out
    frame = _arg(args, kwargs, 1, "bars" if operation in ("replace_bars", "upsert_bars") else "frame")
    out.update(target=_arg(args, kwargs, 0, "table"), rows=frame.height if isinstance(frame, pl.DataFrame) else None,
               run_id=kwargs.get("run_id") or _single_run(frame))
    if operation == "replace_bars":
        window = kwargs.get("window")
        selection = kwargs.get("selection")
        out.update(window_start=window[0] if window else None, window_end=window[1] if window else None,
                   selection=",".join(sorted(selection)) if selection is not None else None)
    if operation == "insert_new":
        out["key"] = ",".join(_arg(args, kwargs, 2, "key"))
    return out


def pending(fallback) -> pl.DataFrame:
    """The fallback's log rows not caught up yet, in the order they were written."""
    present = fallback.query("SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'ops' "
                             "AND table_name = 'failover_log'").item()
    if not present:  # ops.* are not among the platform's tables() (they are the platform's own records)
        return pl.DataFrame(schema=LOG_SCHEMA)
    rows = fallback.query(f"SELECT * FROM {LOG_TABLE} WHERE caught_up_at IS NULL")
    return rows.select([pl.col(c) if c in rows.columns else pl.lit(None, t).alias(c) for c, t in LOG_SCHEMA.items()]
                       ).sort("written_at", maintain_order=True)


def checksum(frame: pl.DataFrame) -> tuple[int, str]:
    """Row count and an order-independent checksum of ``frame``'s rows: the sum, modulo 2^64, of a 64-bit hash
    of each row as a JSON object (column names, types and nulls are part of what is hashed: {"x": 1} is not
    {"x": "1"}, null is not "", and no separator inside a value can make two rows alike)."""
    if not frame.height:
        return 0, "0" * 16
    cols = sorted(frame.columns)
    text = frame.select(pl.struct(cols).struct.json_encode().alias("row"))["row"]
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


_BAR_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume", "source", "run_id")


def _scope(row: dict, fallback) -> tuple[str, dict]:
    """The SQL condition (``$`` parameters) of every bar a replayed ``replace_bars``/``upsert_bars`` governs:
    the rows its replace deletes and writes. With a window: the window's rows of its source (a whole-window
    read) or of its symbols; without one: each symbol's [first, last] range of the run's bars."""
    run = row["run_id"]
    mine = fallback.query(f"SELECT symbol, min(ts) AS lo, max(ts) AS hi, min(source) AS source FROM "
                          f"market.{row['target']} WHERE run_id = $r GROUP BY symbol ORDER BY symbol", {"r": run})
    symbols = set(mine["symbol"].to_list()) | set((row["selection"] or "").split(",")) - {""}
    params: dict = {}
    if row["operation"] == "replace_bars" and row["window_start"] is not None:
        params.update(ws=row["window_start"], we=row["window_end"])
        parts = ["ts >= $ws AND ts < $we"]
        alts = [f"symbol = $s{i}" for i in range(len(symbols))]
        params.update({f"s{i}": s for i, s in enumerate(sorted(symbols))})
        if row["selection"] is None:
            source = mine["source"][0] if mine.height else _journal_source(fallback, run)
            alts.append("source = $src")
            params["src"] = source
        return f"({parts[0]} AND ({' OR '.join(alts) or 'FALSE'}))", params
    spans = []
    for i, (symbol, lo, hi, _) in enumerate(mine.iter_rows()):
        spans.append(f"(symbol = $s{i} AND ts >= $lo{i} AND ts <= $hi{i})")
        params.update({f"s{i}": symbol, f"lo{i}": lo, f"hi{i}": hi})
    return f"({' OR '.join(spans) or 'FALSE'})", params


def _journal_source(store, run: str) -> str:
    journal = store.query("SELECT source FROM market.ingest_journal WHERE run_id = $r", {"r": run})
    return journal["source"][0] if journal.height else "failover"


def _rows(store, table: str, where: str, params: dict) -> pl.DataFrame:
    return store.query(f"SELECT {', '.join(_BAR_COLUMNS)} FROM market.{table} WHERE {where}", params)


def bar_parity(primary, fallback, table: str, run_id: str) -> dict:
    """Whether both stores hold the same bars of ``run_id`` in ``market.<table>`` (count and checksum)."""
    where, params = "run_id = $r", {"r": run_id}
    ours, theirs = (checksum(_rows(s, table, where, params)) for s in (fallback, primary))
    return {"parity": ours == theirs, "rows": ours[0], "primary_rows": theirs[0], "checksum": ours[1],
            "primary_checksum": theirs[1]}


# Runs stamp the journal with their own clocks, so hosts must keep them in step (NTP): a run is later when its
# stamp is. A margin toward "conflict" was tried: even 1 s turned the last run before an outage into a false
# conflict. Ordering by the server's clock (a sequence) is the sound fix, not done yet.
CLOCK_SKEW = timedelta(0)
_LATER_SQL = ("SELECT run_id, finished_at, window_start, window_end FROM market.ingest_journal WHERE dataset = {d} "
              "AND finished_at > {w} AND rows_stored > 0 ORDER BY finished_at")


class ConflictError(Exception):
    """A newer run on the primary wrote the window a replay would replace."""


def _later(rows, row: dict, outage_runs: set[str]) -> str | None:
    ws, we = row["window_start"], row["window_end"]
    for run, finished, a, b in rows:
        if run not in outage_runs and (ws is None or a is None or (a < we and ws < b)):
            return f"run {run} wrote this window on the primary at {finished} (after this outage write)"
    return None


def _conflict(primary, row: dict, outage_runs: set[str]) -> str | None:
    """A run on the primary that stored bars in this write's window after it (its rows are newer; a run within
    the clock skew of the write counts as later), or None. The outage's own runs (replayed with their journal) are
    not such runs, nor is a run that stored nothing."""
    if row["operation"] != "replace_bars":
        return None
    later = primary.query(_LATER_SQL.format(d="$d", w="$w"), {"d": row["target"], "w": row["written_at"] - CLOCK_SKEW})
    return _later(later.iter_rows(), row, outage_runs)


def _guard(row: dict, outage_runs: set[str]):
    """The same test inside the replay's transaction, under the table's write lock: a run that committed between
    the first test and the replay is seen, and the replay is refused."""
    def check(cur) -> None:
        cur.execute(_LATER_SQL.format(d="%s", w="%s"), (row["target"], row["written_at"] - CLOCK_SKEW))
        found = _later(cur.fetchall(), row, outage_runs)
        if found:
            raise ConflictError(found)

    return check


def catch_up(primary, fallback) -> CatchUpReport:
    """Replay the fallback's pending writes onto ``primary`` in write order and check parity (module
    docstring). Raises :class:`StoreUnavailableError` when the primary is still down (nothing is changed)."""
    todo = pending(fallback)
    report = CatchUpReport(pending_before=todo.height)
    primary.tables()  # fails fast, before anything is replayed, while the primary is down
    outage_runs = set(fallback.query(f"SELECT DISTINCT run_id FROM {LOG_TABLE} WHERE run_id IS NOT NULL")["run_id"])
    checks = []
    for row in todo.iter_rows(named=True):
        entry = {"operation": row["operation"], "target": row["target"], "run_id": row["run_id"],
                 "window": [str(row["window_start"]), str(row["window_end"])], "written_at": str(row["written_at"])}
        conflict = _conflict(primary, row, outage_runs)
        bar_write = row["operation"] in ("replace_bars", "upsert_bars")
        if conflict:
            entry.update(parity=False, note=f"CONFLICT, not replayed: {conflict}; re-run that window's ingest or "
                                            "decide which rows stand")
        elif bar_write and row["rows"] and not _rows(fallback, row["target"], "run_id = $r",
                                                     {"r": row["run_id"]}).height:
            # every row it wrote was replaced by a later outage write, which governs: replaying it now would be a
            # delete of the window with nothing to put back
            entry.update(parity=True, note="superseded by a later outage write; not replayed")
        elif bar_write:
            where, params = _scope(row, fallback)
            outside = f"NOT {where} AND ts >= $olo AND ts <= $ohi"
            span = _rows(fallback, row["target"], where, params)
            lo, hi = (span["ts"].min(), span["ts"].max()) if span.height else (row["window_start"],
                                                                                row["window_end"])
            bounds = {**params, "olo": lo or datetime(1900, 1, 1), "ohi": hi or datetime(2100, 1, 1)}
            before = checksum(_rows(primary, row["target"], outside, bounds))
            try:
                _replay(primary, fallback, row, _guard(row, outage_runs))
            except ConflictError as exc:
                entry.update(parity=False, note=f"CONFLICT, not replayed: {exc}; re-run that window's ingest or "
                                                "decide which rows stand")
                report.replayed.append(entry)
                continue
            unchanged = checksum(_rows(primary, row["target"], outside, bounds)) == before  # right after it
            checks.append((entry, row, where, params, unchanged))
            entry.update(parity=None)
        elif row["operation"] in ("replace_table", "overwrite_table"):
            frame = fallback.query(f"SELECT * FROM {row['target']}")
            getattr(primary, row["operation"])(row["target"], frame)
            theirs = primary.query(f"SELECT * FROM {row['target']}")
            entry.update(parity=checksum(frame) == checksum(theirs.select(frame.columns)), rows=frame.height)
        elif row["operation"] == "replace_windows":
            entry.update(_replay_windows(primary, fallback, row))
        elif row["run_id"] is not None and row["operation"] in ("append", "append_table", "insert_new"):
            entry.update(_replay_rows(primary, fallback, row))
        else:
            entry.update(parity=False, note="nothing identifies this write's rows (no single run id): replay by hand")
        report.replayed.append(entry)
    for entry, row, where, params, unchanged in checks:  # after every replay: the final state
        ours, theirs = (checksum(_rows(s, row["target"], where, params)) for s in (fallback, primary))
        entry.update(parity=ours == theirs and unchanged, rows=ours[0], primary_rows=theirs[0],
                     outside_unchanged=unchanged)
    done = [e for e in report.replayed if e["parity"]]
    stamp = utcnow()
    for e in done:
        fallback.query(f"UPDATE {LOG_TABLE} SET caught_up_at = $t WHERE written_at = $w AND operation = $o",
                       {"t": stamp, "w": datetime.fromisoformat(e["written_at"]), "o": e["operation"]})
    log.info("failover catch-up: %d write(s) replayed, %d with parity, %d pending", len(report.replayed), len(done),
             len(report.replayed) - len(done))
    return report


def invalidate_cache(primary) -> None:
    """Retire the primary's hot-cache namespace after a catch-up wrote to it behind the cache's back (the tier's
    Redis, when there is one; Redis down: nothing was cached meanwhile that a missed invalidation would not
    retire on its own)."""
    from emp_core.config import settings

    cfg = settings()
    if not cfg.redis_url:
        return
    from emp_core.store import cache_namespace
    from emp_core.store.cache import HotCache

    try:
        HotCache(cfg.redis_url, namespace=cache_namespace(primary.url)).invalidate_all()
    except Exception as exc:  # reported: the TTL bounds how long a stale entry could be served
        log.warning("failover catch-up: could not retire the cache namespace (%s)", exc)


def _replay(primary, fallback, row: dict, guard=None) -> None:
    table, run = row["target"], row["run_id"]
    bars = fallback.query(f"SELECT {', '.join(_BAR_COLUMNS)} FROM market.{table} WHERE run_id = $r", {"r": run})
    if row["operation"] == "upsert_bars":
        if bars.height:
            primary.upsert_bars(table, bars.drop("source", "run_id"), source=bars["source"][0], run_id=run)
        return
    quarantine = fallback.query("SELECT * FROM market.quarantine WHERE run_id = $r", {"r": run})
    journal = fallback.query("SELECT * FROM market.ingest_journal WHERE run_id = $r", {"r": run})
    if primary.query("SELECT count(*) AS n FROM market.ingest_journal WHERE run_id = $r", {"r": run}).item():
        # the primary committed this run's write just before it went away: its journal and quarantine are there
        quarantine, journal = quarantine.head(0), journal.head(0)
    window = (row["window_start"], row["window_end"]) if row["window_start"] is not None else None
    source = bars["source"][0] if bars.height else _journal_source(fallback, run)
    selection = row["selection"].split(",") if row["selection"] is not None else None
    primary.replace_bars(table, bars.drop("source", "run_id"), source=source, run_id=run, window=window,
                         quarantine=quarantine, journal=journal, selection=selection, guard=guard)


def _replay_windows(primary, fallback, row: dict) -> dict:
    tables = row["target"].split(",")
    params = {"d": row["dataset"], "s": row["window_start"], "e": row["window_end"]}
    where = "dataset = $d AND ts >= $s AND ts < $e"
    frames = {t: fallback.query(f"SELECT * FROM {t} WHERE {where}", params) for t in tables}
    primary.replace_windows(frames, dataset=row["dataset"], start=row["window_start"], end=row["window_end"])
    ok = all(checksum(f) == checksum(primary.query(f"SELECT * FROM {t} WHERE {where}", params).select(f.columns))
             for t, f in frames.items())
    return {"parity": ok, "rows": sum(f.height for f in frames.values())}


def _replay_rows(primary, fallback, row: dict) -> dict:
    table, run = row["target"], row["run_id"]
    frame = fallback.query(f"SELECT * FROM {table} WHERE run_id = $r", {"r": run})
    if row["operation"] == "insert_new":
        primary.ensure_table(table, dict(frame.schema), row["key"].split(","))
        primary.insert_new(table, frame, row["key"].split(","))
    elif not primary.query(f"SELECT count(*) AS n FROM {table} WHERE run_id = $r", {"r": run}).item():
        getattr(primary, row["operation"])(table, frame)  # appended once: a second catch-up adds nothing
    theirs = primary.query(f"SELECT * FROM {table} WHERE run_id = $r", {"r": run}).select(frame.columns)
    return {"parity": checksum(frame) == checksum(theirs), "rows": frame.height}


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

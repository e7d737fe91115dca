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

Every write done on the fallback is recorded in the fallback's ``ops.failover_log`` **in the write's own
transaction** (a crash leaves both or neither): a sequence number, the host's time, the decision (why, when),
operation, table, window, run, symbol selection, and for a bar write the bars it wrote (``ops.failover_rows``,
by sequence number), so a replay applies exactly that write, not whatever the fallback holds by then. A write
the primary was doing when it went away was not committed (its transaction died with the connection), so
doing it again on the fallback loses nothing and doubles nothing.

:func:`catch_up` replays the log onto the primary once it answers, in sequence order, with the same operation
and arguments the write had (the ingest's idempotent replace with its window and selection, so nothing outside
its scope is touched). **Conflicts** are found on the server's clock: the primary stamps every write to a table
in ``ops.write_log`` with its own clock (:mod:`emp_core.store.postgres_store`), from whatever host. The
catch-up runs on the host that wrote the fallback (the file is local to it), measures that host's clock offset
to the server (the sample with the shortest round trip; half of it bounds the error), and so places each
outage write on the server's clock. A replay finds, under the table's write lock in its own transaction, any
write stamped after its outage write (minus the error bound) whose scope (table, time span, symbols) overlaps
its own: that is a **conflict**, not replayed (stale outage rows must not overwrite newer data), and reported
for a decision (:func:`catch_up`'s ``keep_primary`` and ``force``; ``emp db catch-up --keep-primary N
--replay N``). A replace of a whole table (or window of features) that a later outage write of the same
target supersedes is not replayed: the later one carries the table's final rows.

After all replays, parity is checked per replayed bar write on its whole scope (every row the write governs, on
both stores: count and a checksum of the rows as JSON, column names and types included), and the primary's rows
outside that scope must be unchanged by the replay. Only the log rows replayed with parity are marked caught up
(their bars dropped from the log); anything written meanwhile stays pending.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import polars as pl

from emp_core.clock import utcnow
from emp_core.errors import EmpError
from emp_core.store.duckdb_store import _duckdb_type, _transaction, add_missing_columns
from emp_core.store.postgres_store import REPLAY, StoreUnavailableError

log = logging.getLogger("emp.store")

LOG_TABLE = "ops.failover_log"
ROWS_TABLE = "ops.failover_rows"  # the bars of each logged bar write, by its seq
META_TABLE = "ops.failover_meta"  # this fallback's id: its replays are stamped '<id>:<seq>' on the primary
FAILS_OVER = {"replace_bars", "upsert_bars", "append", "replace_table"}  # the ingests' writes (bars, macro)
_LOGGED = {"replace_bars", "upsert_bars", "replace_table", "replace_windows", "append", "append_table",
           "overwrite_table", "insert_new"}
_BAR_WRITES = ("replace_bars", "upsert_bars")
_WHOLE_TABLE = ("replace_table", "overwrite_table")
LOG_SCHEMA = {"seq": pl.Int64, "written_at": pl.Datetime("us"), "decided_at": pl.Datetime("us"),
              "primary": pl.String, "reason": pl.String, "operation": pl.String, "target": pl.String,
              "dataset": pl.String, "window_start": pl.Datetime("us"), "window_end": pl.Datetime("us"),
              "run_id": pl.String, "source": pl.String, "selection": pl.String, "key": pl.String, "rows": pl.Int64,
              "caught_up_at": pl.Datetime("us"), "note": pl.String}
_BAR_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume", "source", "run_id")
_LOG_DDL = [
    "CREATE SCHEMA IF NOT EXISTS ops",
    "CREATE SEQUENCE IF NOT EXISTS ops.failover_seq",
    f"CREATE TABLE IF NOT EXISTS {META_TABLE} (id VARCHAR NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {LOG_TABLE} ("
    + ", ".join(f'"{c}" {_duckdb_type(LOG_TABLE, c, t)}' for c, t in LOG_SCHEMA.items()) + ")",
    f"CREATE TABLE IF NOT EXISTS {ROWS_TABLE} (seq BIGINT NOT NULL, symbol VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, "
    "open DOUBLE NOT NULL, high DOUBLE NOT NULL, low DOUBLE NOT NULL, close DOUBLE NOT NULL, volume DOUBLE NOT NULL)",
]


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
        """True: a write is always stored somewhere (the primary, or the fallback while it is unreachable), so
        a failed command journals its failure even during an outage."""
        return True

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
            if name in _LOGGED:
                kwargs = {**kwargs, "also": self._recorder(name, args, kwargs)}
            return getattr(self.fallback, name)(*args, **kwargs)

        return call

    def _fail_over(self, exc: Exception) -> None:
        self.reason = " ".join(str(exc).split())
        self.decided_at = utcnow()
        log.warning("failover: %s is unreachable; writing to %s (%s)", self.primary.location,
                    self.fallback.location, self.reason)

    def _recorder(self, operation: str, args: tuple, kwargs: dict):
        """What records this write in the fallback's log, inside the write's transaction (module docstring)."""
        described = _describe(operation, args, kwargs)
        bars = _arg(args, kwargs, 1, "bars") if operation in _BAR_WRITES else None
        decided_at, primary, reason = self.decided_at, self.primary.location, self.reason

        def record(con) -> None:
            for stmt in _LOG_DDL:
                con.execute(stmt)
            if not con.execute(f"SELECT count(*) FROM {META_TABLE}").fetchone()[0]:
                con.execute(f"INSERT INTO {META_TABLE} VALUES ($id)", {"id": uuid.uuid4().hex})
            seq = con.execute("SELECT nextval('ops.failover_seq')").fetchone()[0]
            row = pl.DataFrame([{"seq": seq, "written_at": utcnow(), "decided_at": decided_at, "primary": primary,
                                 "reason": reason, "operation": operation, "caught_up_at": None, "note": None,
                                 **described}], schema=LOG_SCHEMA)
            con.register("log_row", row.to_arrow())
            add_missing_columns(con, LOG_TABLE, "log_row")  # a log kept by an earlier version
            con.execute(f"INSERT INTO {LOG_TABLE} BY NAME SELECT * FROM log_row")
            con.unregister("log_row")
            if bars is not None and bars.height:
                con.register("log_bars", bars.select(_BAR_COLUMNS[:7]).to_arrow())
                con.execute(f"INSERT INTO {ROWS_TABLE} SELECT $seq, {', '.join(_BAR_COLUMNS[:7])} FROM log_bars",
                            {"seq": seq})
                con.unregister("log_bars")

        return record


def _arg(args: tuple, kwargs: dict, i: int, name: str):
    return args[i] if len(args) > i else kwargs.get(name)


def _single_run(frame) -> str | None:
    if not isinstance(frame, pl.DataFrame) or "run_id" not in frame.columns:
        return None
    runs = frame.get_column("run_id").unique().to_list()
    return runs[0] if len(runs) == 1 else None


def _describe(operation: str, args: tuple, kwargs: dict) -> dict:
    """What a replay needs of one write: its target, window, run, source, selection and key."""
    out = {"target": None, "dataset": None, "window_start": None, "window_end": None, "run_id": None,
           "source": kwargs.get("source"), "selection": None, "key": None, "rows": None}
    if operation == "replace_windows":
        tables = _arg(args, kwargs, 0, "tables")
        frames = list(tables.values())
        out.update(target=",".join(sorted(tables)), dataset=kwargs.get("dataset"), window_start=kwargs.get("start"),
                   window_end=kwargs.get("end"), run_id=_single_run(frames[0]) if frames else None,
                   rows=sum(f.height for f in frames))
        return out
    frame = _arg(args, kwargs, 1, "bars" if operation in _BAR_WRITES else "frame")
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


def _has_log(fallback) -> bool:
    return bool(fallback.query("SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'ops' "
                               "AND table_name = 'failover_log'").item())


def pending(fallback) -> pl.DataFrame:
    """The fallback's log rows not caught up yet, in the order they were written."""
    if not _has_log(fallback):  # ops.* are not among the platform's tables() (they are the platform's own records)
        return pl.DataFrame(schema=LOG_SCHEMA)
    rows = fallback.query(f"SELECT * FROM {LOG_TABLE} WHERE caught_up_at IS NULL")
    return rows.select([pl.col(c) if c in rows.columns else pl.lit(None, t).alias(c) for c, t in LOG_SCHEMA.items()]
                       ).sort("seq", "written_at", nulls_last=False, maintain_order=True)


def fallback_id(fallback) -> str | None:
    present = fallback.query("SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'ops' "
                             "AND table_name = 'failover_meta'").item()
    ids = fallback.query(f"SELECT id FROM {META_TABLE}")["id"] if present else []
    return ids[0] if len(ids) else None


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
    replayed: list[dict] = field(default_factory=list)  # one per log row: seq, operation, target, window, parity
    pending_before: int = 0
    clock: dict = field(default_factory=dict)  # this host's offset to the server's clock, and its error bound

    @property
    def parity(self) -> bool:
        return all(r["parity"] for r in self.replayed)

    def as_dict(self) -> dict:
        return {"pending_before": self.pending_before, "replayed": self.replayed, "parity": self.parity,
                "clock": self.clock}


@dataclass(frozen=True)
class ServerClock:
    """This host's clock against the server's: server time = host time + ``offset``, within ``error``."""

    offset: timedelta
    error: timedelta

    def on_server(self, host_time: datetime) -> datetime:
        return (host_time + self.offset).replace(tzinfo=UTC)


MARGIN = timedelta(milliseconds=1)  # added to the measured bound: the clocks' reading and scheduling jitter


def server_clock(primary, samples: int = 7) -> ServerClock:
    """Measure this host's clock offset to the primary's server, as NTP does: of ``samples`` round trips the
    shortest, whose half bounds the error of reading the server's clock at its midpoint."""
    best = None
    with primary.cursor() as cur:
        for _ in range(samples):
            t0 = utcnow()
            cur.execute("SELECT clock_timestamp()")
            server = cur.fetchone()[0].astimezone(UTC).replace(tzinfo=None)
            rtt = utcnow() - t0
            if best is None or rtt < best[1]:
                best = (server - (t0 + rtt / 2), rtt)
    return ServerClock(offset=best[0], error=best[1] / 2 + MARGIN)


_MICRO = timedelta(microseconds=1)


def _payload(fallback, seq: int) -> pl.DataFrame:
    return fallback.query(f"SELECT {', '.join(_BAR_COLUMNS[:7])} FROM {ROWS_TABLE} WHERE seq = $s", {"s": seq})


def _region(row: dict, payload: pl.DataFrame):
    """The rows a bar write governs (what its replace deleted and wrote): ``(lo, hi, inside)`` where [lo, hi]
    bounds their time and ``inside(frame)`` keeps a frame's rows in the region. A window: the window's rows of
    its symbols and selection, and of its source when the read was whole; no window: each symbol's [first,
    last] range of its bars; an upsert: exactly the keys it wrote."""
    if row["operation"] == "replace_bars" and row["window_start"] is not None:
        ws, we = row["window_start"], row["window_end"]
        symbols = sorted(set(payload["symbol"].to_list()) | set((row["selection"] or "").split(",")) - {""})
        whole = row["selection"] is None

        def in_window(frame: pl.DataFrame) -> pl.DataFrame:
            mine = pl.col("symbol").is_in(symbols) | (pl.lit(whole) & (pl.col("source") == row["source"]))
            return frame.filter(pl.col("ts").is_between(ws, we, closed="left") & mine)

        return ws, we - _MICRO, in_window
    if not payload.height:
        return None, None, lambda frame: frame.head(0)
    lo, hi = payload["ts"].min(), payload["ts"].max()
    if row["operation"] == "upsert_bars":
        keys = payload.select("symbol", "ts").unique()
        return lo, hi, lambda frame: frame.join(keys, on=["symbol", "ts"], how="semi")
    spans = payload.group_by("symbol").agg(pl.col("ts").min().alias("_lo"), pl.col("ts").max().alias("_hi"))

    def in_spans(frame: pl.DataFrame) -> pl.DataFrame:
        joined = frame.join(spans, on="symbol", how="inner")
        return joined.filter(pl.col("ts").is_between(pl.col("_lo"), pl.col("_hi"))).drop("_lo", "_hi")

    return lo, hi, in_spans


def _box(store, table: str, lo, hi) -> pl.DataFrame:
    """Every bar of ``market.<table>`` with ts in [lo, hi] (all symbols)."""
    if lo is None:
        return pl.DataFrame(schema={c: pl.String for c in _BAR_COLUMNS}).head(0)
    return store.query(f"SELECT {', '.join(_BAR_COLUMNS)} FROM market.{table} WHERE ts >= $lo AND ts <= $hi",
                       {"lo": lo, "hi": hi})


def _outside(frame: pl.DataFrame, inside) -> pl.DataFrame:
    return frame.join(inside(frame).select("symbol", "ts"), on=["symbol", "ts"], how="anti")


def bar_parity(primary, fallback, table: str, run_id: str) -> dict:
    """Whether both stores hold the same bars of ``run_id`` in ``market.<table>`` (count and checksum)."""
    query = f"SELECT {', '.join(_BAR_COLUMNS)} FROM market.{table} WHERE run_id = $r"
    ours, theirs = (checksum(s.query(query, {"r": run_id})) for s in (fallback, primary))
    return {"parity": ours == theirs, "rows": ours[0], "primary_rows": theirs[0], "checksum": ours[1],
            "primary_checksum": theirs[1]}


class ConflictError(Exception):
    """A write on the primary, later than the outage write a replay would apply, touched the same rows."""


_LATER_SQL = """SELECT seq, operation, run_id, coalesce(original_at, committed_at) AS at, replay_of
FROM ops.write_log WHERE target = %(target)s AND coalesce(original_at, committed_at) > %(after)s
AND (replay_of IS NULL OR NOT replay_of = ANY(%(ours)s))
AND (ts_lo IS NULL OR %(end)s::timestamp IS NULL OR ts_lo < %(end)s::timestamp)
AND (ts_end IS NULL OR %(lo)s::timestamp IS NULL OR %(lo)s::timestamp < ts_end)
AND (symbols IS NULL OR %(symbols)s::text[] IS NULL OR symbols && %(symbols)s::text[])
ORDER BY seq LIMIT 1"""


def _guard(after: datetime, ours: list[str]):
    """The conflict test a replay runs inside its transaction, under its table's write lock, on the scope the
    store is about to write: a write stamped after ``after`` (the outage write's time on the server's clock,
    minus the error bound) that overlaps it, other than replays of this log's pending writes (they are applied
    again, in order, by this catch-up)."""
    def check(cur, scope: dict) -> None:
        cur.execute(_LATER_SQL, {**scope, "after": after, "ours": ours})
        found = cur.fetchone()
        if found:
            seq, operation, run, at, replay_of = found
            by = f"a replay of {replay_of}" if replay_of else f"run {run}"
            raise ConflictError(f"{operation} #{seq} by {by} wrote {scope['target']} on the primary at {at} "
                                "(after this outage write)")

    return check


def catch_up(primary, fallback, *, keep_primary=(), force=()) -> CatchUpReport:
    """Replay the fallback's pending writes onto ``primary`` in write order and check parity (module
    docstring). ``keep_primary``: seqs of conflicting writes to drop (the primary's rows stand; marked caught up
    with that note); ``force``: seqs to replay even over a later write on the primary. Raises
    :class:`StoreUnavailableError` when the primary is still down (nothing is changed)."""
    todo = pending(fallback)
    report = CatchUpReport(pending_before=todo.height)
    primary.tables()  # fails fast, before anything is replayed, while the primary is down
    clock = server_clock(primary)
    report.clock = {"offset_seconds": clock.offset.total_seconds(), "error_seconds": clock.error.total_seconds()}
    me = fallback_id(fallback)
    unknown = (set(keep_primary) | set(force)) - set(todo["seq"].drop_nulls().to_list())
    if unknown:
        raise EmpError(f"no pending failover write with seq {', '.join(map(str, sorted(unknown)))}; "
                       "`emp db catch-up --json` lists them")
    _mark_done(fallback, keep_primary, note="resolved: the primary's rows kept, this write dropped")
    todo = todo.filter(~pl.col("seq").is_in(list(keep_primary)))
    ours = [f"{me}:{s}" for s in todo["seq"].drop_nulls().to_list()]
    rows = list(todo.iter_rows(named=True))
    checks = []
    for i, row in enumerate(rows):
        entry = {"seq": row["seq"], "operation": row["operation"], "target": row["target"], "run_id": row["run_id"],
                 "window": [str(row["window_start"]), str(row["window_end"])], "written_at": str(row["written_at"])}
        report.replayed.append(entry)
        if row["seq"] is None or me is None:
            entry.update(parity=False, note="logged by an earlier version (no sequence number): replay by hand")
            continue
        if _superseded(row, rows[i + 1:]):
            entry.update(parity=True, note="superseded by a later outage write of the same target; not replayed")
            continue
        original_at = clock.on_server(row["written_at"])
        replay = {"replay_of": f"{me}:{row['seq']}", "original_at": original_at,
                  "guard": None if row["seq"] in force else _guard(original_at - clock.error, ours)}
        token = REPLAY.set(replay)
        try:
            check = _replay_one(primary, fallback, row, entry)
            if check is not None:
                checks.append(check)
        except ConflictError as exc:
            entry.update(parity=False, note=f"CONFLICT, not replayed: {exc}; decide with `emp db catch-up "
                                            f"--keep-primary {row['seq']}` or `--replay {row['seq']}`")
        finally:
            REPLAY.reset(token)
        if row["seq"] in force:
            entry["forced"] = True
    for entry, row, lo, hi, inside, unchanged in checks:  # after every replay: the final state
        ours_, theirs = (checksum(inside(_box(s, row["target"], lo, hi))) for s in (fallback, primary))
        entry.update(parity=ours_ == theirs and unchanged, rows=ours_[0], primary_rows=theirs[0],
                     outside_unchanged=unchanged)
    done = [e["seq"] for e in report.replayed if e["parity"]]
    _mark_done(fallback, done)
    log.info("failover catch-up: %d write(s) replayed, %d with parity, %d pending", len(report.replayed), len(done),
             len(report.replayed) - len(done))
    return report


def _mark_done(fallback, seqs, note: str | None = None) -> None:
    """Mark log rows caught up and drop their bars, in one transaction of the fallback."""
    if not seqs:
        return
    with fallback.connect() as con, _transaction(con):
        params = {"t": utcnow(), "s": list(seqs), "n": note}
        con.execute(f"UPDATE {LOG_TABLE} SET caught_up_at = $t, note = coalesce($n, note) "
                    "WHERE list_contains($s, seq)", params)
        con.execute(f"DELETE FROM {ROWS_TABLE} WHERE list_contains($s, seq)", {"s": params["s"]})


def _replay_one(primary, fallback, row: dict, entry: dict):
    """Replay one logged write (inside the caller's :data:`REPLAY` context) and fill ``entry``; a bar write's
    parity is checked after every replay, so it returns what that check needs instead."""
    if row["operation"] in _BAR_WRITES:
        payload = _payload(fallback, row["seq"])
        lo, hi, inside = _region(row, payload)
        before = checksum(_outside(_box(primary, row["target"], lo, hi), inside))
        _replay(primary, fallback, row, payload)
        unchanged = checksum(_outside(_box(primary, row["target"], lo, hi), inside)) == before  # right after it
        entry.update(parity=None)
        return entry, row, lo, hi, inside, unchanged
    if row["operation"] in _WHOLE_TABLE:
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
    return None


def _superseded(row: dict, later: list[dict]) -> bool:
    """Whether a later outage write replaces all of what ``row`` wrote: a whole table's (or a feature window's)
    replace followed by another of the same target (the fallback holds only the last one's rows)."""
    same = ("target", "dataset", "window_start", "window_end") if row["operation"] == "replace_windows" else \
        ("target",) if row["operation"] in _WHOLE_TABLE else None
    return same is not None and any(r["operation"] == row["operation"] and all(r[k] == row[k] for k in same)
                                    for r in later)


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


def _replay(primary, fallback, row: dict, payload: pl.DataFrame) -> None:
    """Apply one logged bar write to the primary: its own bars, with its run, source, window and selection."""
    table, run = row["target"], row["run_id"]
    if row["operation"] == "upsert_bars":
        if payload.height:
            primary.upsert_bars(table, payload, source=row["source"], run_id=run)
        return
    quarantine = fallback.query("SELECT * FROM market.quarantine WHERE run_id = $r", {"r": run})
    journal = fallback.query("SELECT * FROM market.ingest_journal WHERE run_id = $r", {"r": run})
    if primary.query("SELECT count(*) AS n FROM market.ingest_journal WHERE run_id = $r", {"r": run}).item():
        # the primary holds this run's journal (committed just before it went away, or replayed with an earlier
        # window of the run)
        quarantine, journal = quarantine.head(0), journal.head(0)
    window = (row["window_start"], row["window_end"]) if row["window_start"] is not None else None
    selection = row["selection"].split(",") if row["selection"] is not None else None
    primary.replace_bars(table, payload, source=row["source"], run_id=run, window=window, quarantine=quarantine,
                         journal=journal, selection=selection)


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

"""Failover between tiers: the institutional store with an embedded fallback, and the catch-up after.

:class:`FailoverStore` has the stores' interface. Calls go to the primary (PostgreSQL). When it is unreachable:

- an **ingest write** (``replace_bars``, ``upsert_bars``, ``append``, ``replace_table``) fails over: from
  then on this store object sends every call to the fallback, a DuckDB file of its own
  (``$EMP_HOME/failover.duckdb``) that holds nothing but what was written during outages, so the run's reads
  see its own writes (an ingest reads its window back for its checks). The store object is the step's
  (``StoreResource.store()`` makes one per call). It never goes back to the primary on its own: its writes
  there would be overwritten by the replay of its earlier outage writes (restart a long-lived consumer after
  the catch-up);
- **anything else, before the store object has failed over** (a read, a derived table's write) raises
  :class:`StoreUnavailableError`: a derived asset computed from the fallback would see only the outage's rows,
  so it waits for the primary instead. (After it has failed over, the same step's later calls go to the
  fallback, logged like the rest.)

**The log.** Every write through this store gets an id before its first attempt (the primary stamps it with
the write; see below). Every write done on the fallback is recorded in the fallback's ``ops.failover_log``
**in the write's own transaction** (a crash leaves both or neither), with that id, a sequence number, the
decision (why, when), operation, table, window, run, symbol selection, the host's wall clock *and* its boot
clock (``CLOCK_BOOTTIME``: it counts a suspend, and a corrected wall clock does not move it) with the boot it
belongs to, and **what the write wrote**: a bar write's bars (``ops.failover_rows``), every other frame
(journal and quarantine rows, appended rows, a replaced table, feature windows) as a table of its own listed in
``ops.failover_parts``. A replay applies exactly that, never whatever the fallback holds by then.

**The catch-up** (:func:`catch_up`) replays the log onto the primary once it answers, in sequence order, each
write with the same operation and arguments it had (the ingest's idempotent replace with its window and
selection, so nothing outside its scope is touched). A write left pending (a conflict, a failure) holds back
the later writes to its table until it is decided. Each replay is one transaction on the primary which, under
the table's write lock (:mod:`emp_core.store.postgres_store` stamps every write in ``ops.write_log`` with the
server's clock and its id):

1. finds whether this write is already on the primary (a committed stamp with its id: an earlier catch-up's
   replay, or the primary's own commit whose acknowledgement was lost when the connection died): then it is
   not applied again, so an append is never doubled, and a crashed catch-up, or two at once, converge;
2. finds any **later** write stamped over the same scope (table, time span, symbols, dataset): another
   writer's stamp after the outage write's time on the server's clock minus the error bound; this log's own
   replays by their sequence numbers; this log's own writes committed on the primary whose acknowledgement
   was lost by their commit's time when later in the log (an earlier one's commit came before its log row,
   so before this write). A later replace, or a later upsert whose rows in this write's scope differ from
   this write's rows, is a **CONFLICT** unless the rows this write governs already are exactly its rows: not
   replayed (stale outage rows must not overwrite newer data) and reported for a decision (``keep_primary`` /
   ``force``; ``emp db catch-up --keep-primary N --replay N``; forcing overrides other writers, never this
   log's own writes, which it would have to apply again after). Appends commute with other appends and
   upserts, not with a later replace of their table; ``insert_new`` (the first insert of a key wins) also
   not with a later insert of one of its keys holding another row;
3. writes, then **verifies** before committing that every row a replace or upsert governs on the primary
   equals what it wrote (on the server: its rows in a temporary table, joined on the key); a mismatch rolls
   it back. Appends are applied exactly once (step 1) but not read back (nothing identifies their rows).

"Later" is on the server's clock. A stamp's time is the server's clock when it processes the write's COMMIT
(a deferred trigger; a row inserted with a time an hour or more before its transaction, as a hand-made or
data-only restored one, keeps it, so a backward step of the server's clock of over an hour during a write
would leave that write at its lock time), so a long write (a multi-year COPY, a COMMIT held up on the
network) counts from when its COMMIT was processed, not from when it took its lock. What follows in the
server (the WAL flush; a synchronous standby's acknowledgement, where one is configured) happens while the
write still holds its table's lock and is not yet visible, so the stamps' order stays a valid order of the
writes. The catch-up runs on the host that wrote the fallback (the file is local to
it) and measures, as NTP does, the offset of the server's clock to this host's boot clock; a write made in the
same boot is placed on the server's clock by its boot-clock time, one from an earlier boot by its wall clock.
The error bound is half the shortest round trip plus :data:`MARGIN` (60 s: clocks slewed by NTP, a paused VM)
plus 100 ppm of the time since the write; a write on the primary within the bound counts as later (a conflict
is the safe mistake, and a write whose rows agree is none). Stamps are kept 90 days (the nightly backup prunes
older ones by commit time), so an outage write older than that is not replayed on its own. A replace of a whole
table (or feature window) that a later outage write of the same target supersedes is not replayed. Only writes
applied and verified (or found applied) are marked caught up, and their logged rows dropped.

A replay whose logged rows are not all there (the log records each part's row count) is refused, so a damaged
or partly restored fallback file never deletes rows on the primary. A row logged by an earlier version (no
sequence number or write id) is reported for a replay by hand and holds back its table. A fallback file held
by another process past its lock timeout (a failed-over step still writing) stops the catch-up with that
error, marking nothing, so its run fails and the recovery sensor retries it. Two processes failing over at
once take turns on the file (DuckDB admits one writing process; the log's order is the order they wrote in).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import polars as pl

from emp_core.clock import utcnow
from emp_core.errors import EmpError
from emp_core.store.duckdb_store import StoreLockedError, _duckdb_type, _transaction, add_missing_columns
from emp_core.store.postgres_store import REPLAY, WRITE_LOG_DAYS, StoreUnavailableError, _csv, _quoted

log = logging.getLogger("emp.store")

LOG_TABLE = "ops.failover_log"
ROWS_TABLE = "ops.failover_rows"  # the bars of each logged bar write, by its seq
PARTS_TABLE = "ops.failover_parts"  # every other frame a logged write wrote: seq, part (its table), name, nulls
META_TABLE = "ops.failover_meta"  # this fallback's id: its replays are stamped '<id>:<seq>' on the primary
FAILS_OVER = {"replace_bars", "upsert_bars", "append", "replace_table"}  # the ingests' writes (bars, macro)
_LOGGED = {"replace_bars", "upsert_bars", "replace_table", "replace_windows", "append", "append_table",
           "overwrite_table", "insert_new"}
_BAR_WRITES = ("replace_bars", "upsert_bars")
_WHOLE_TABLE = ("replace_table", "overwrite_table")
LOG_SCHEMA = {"seq": pl.Int64, "write_id": pl.String, "written_at": pl.Datetime("us"), "mono_ns": pl.Int64,
              "boot_id": pl.String,
              "decided_at": pl.Datetime("us"), "primary": pl.String, "reason": pl.String, "operation": pl.String,
              "target": pl.String, "dataset": pl.String, "window_start": pl.Datetime("us"),
              "window_end": pl.Datetime("us"), "run_id": pl.String, "source": pl.String, "selection": pl.String,
              "key": pl.String, "rows": pl.Int64, "logged_rows": pl.Int64, "caught_up_at": pl.Datetime("us"),
              "note": pl.String}
_BAR_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume", "source", "run_id")
_OHLCV = _BAR_COLUMNS[:7]
_LOG_DDL = [
    "CREATE SCHEMA IF NOT EXISTS ops",
    "CREATE SEQUENCE IF NOT EXISTS ops.failover_seq",
    f"CREATE TABLE IF NOT EXISTS {META_TABLE} (id VARCHAR NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {LOG_TABLE} ("
    + ", ".join(f'"{c}" {_duckdb_type(LOG_TABLE, c, t)}' for c, t in LOG_SCHEMA.items()) + ")",
    f"CREATE TABLE IF NOT EXISTS {ROWS_TABLE} (seq BIGINT NOT NULL, symbol VARCHAR NOT NULL, ts TIMESTAMP NOT NULL, "
    "open DOUBLE NOT NULL, high DOUBLE NOT NULL, low DOUBLE NOT NULL, close DOUBLE NOT NULL, volume DOUBLE NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {PARTS_TABLE} (seq BIGINT NOT NULL, part VARCHAR NOT NULL, name VARCHAR NOT NULL, "
    "nulls VARCHAR NOT NULL)",
    f"ALTER TABLE {PARTS_TABLE} ADD COLUMN IF NOT EXISTS rows BIGINT",  # each part's row count (checked at replay)
]
def _boot_clock_ns() -> int:
    """Nanoseconds since boot, counting suspended time (CLOCK_BOOTTIME; the monotonic clock elsewhere)."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic_ns()


_monotonic_ns = _boot_clock_ns  # the clock a write is placed by within one boot (module docstring)


def _boot_id() -> str | None:
    """This boot of the machine (the monotonic clock's epoch), or None where the system does not say."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


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
            write_id = uuid.uuid4().hex if name in _LOGGED else None  # the primary's commit and any replay share it
            if not self.reason:
                token = REPLAY.set({"write_id": write_id} if write_id else None)
                try:
                    return target(*args, **kwargs)
                except StoreUnavailableError as exc:
                    if name not in FAILS_OVER:
                        raise
                    self._fail_over(exc)
                finally:
                    REPLAY.reset(token)
            if name in _LOGGED:
                kwargs = {**kwargs, "also": self._recorder(name, args, kwargs, write_id)}
            return getattr(self.fallback, name)(*args, **kwargs)

        return call

    def _fail_over(self, exc: Exception) -> None:
        self.reason = " ".join(str(exc).split())
        self.decided_at = utcnow()
        log.warning("failover: %s is unreachable; writing to %s (%s)", self.primary.location,
                    self.fallback.location, self.reason)

    def _recorder(self, operation: str, args: tuple, kwargs: dict, write_id: str):
        """What records this write in the fallback's log, inside the write's transaction (module docstring)."""
        described = _describe(operation, args, kwargs)
        bars = _arg(args, kwargs, 1, "bars") if operation in _BAR_WRITES else None
        if operation == "upsert_bars" and bars is not None:  # as the stores apply it: the last row of a key wins
            bars = bars.unique(subset=["symbol", "ts"], keep="last", maintain_order=True)
        parts = _parts(operation, args, kwargs)
        decided_at, primary, reason = self.decided_at, self.primary.location, self.reason

        def record(con) -> None:
            for stmt in _LOG_DDL:
                con.execute(stmt)
            if not con.execute(f"SELECT count(*) FROM {META_TABLE}").fetchone()[0]:
                con.execute(f"INSERT INTO {META_TABLE} VALUES ($id)", {"id": uuid.uuid4().hex})
            seq = con.execute("SELECT nextval('ops.failover_seq')").fetchone()[0]
            row = pl.DataFrame([{"seq": seq, "write_id": write_id, "written_at": utcnow(), "mono_ns": _monotonic_ns(),
                                 "boot_id": _boot_id(),
                                 "decided_at": decided_at, "primary": primary, "reason": reason,
                                 "operation": operation, "caught_up_at": None, "note": None, **described,
                                 "logged_rows": bars.height if bars is not None else None}],
                               schema=LOG_SCHEMA)
            con.register("log_row", row.to_arrow())
            add_missing_columns(con, LOG_TABLE, "log_row")  # a log kept by an earlier version
            con.execute(f"INSERT INTO {LOG_TABLE} BY NAME SELECT * FROM log_row")
            con.unregister("log_row")
            if bars is not None and bars.height:
                con.register("log_bars", bars.select(_OHLCV).to_arrow())
                con.execute(f"INSERT INTO {ROWS_TABLE} SELECT $seq, {', '.join(_OHLCV)} FROM log_bars", {"seq": seq})
                con.unregister("log_bars")
            for i, (name, frame) in enumerate(parts.items()):
                part = f"ops.failover_p{seq}_{i}"
                nulls = [c for c, t in frame.schema.items() if t == pl.Null]  # DuckDB would type them INTEGER
                con.register("log_part", frame.to_arrow())
                con.execute(f"CREATE TABLE {part} AS SELECT * FROM log_part")
                con.unregister("log_part")
                con.execute(f"INSERT INTO {PARTS_TABLE} (seq, part, name, nulls, rows) VALUES ($s, $p, $n, $u, $r)",
                            {"s": seq, "p": part, "n": name, "u": json.dumps(nulls), "r": frame.height})

        return record


def _arg(args: tuple, kwargs: dict, i: int, name: str):
    return args[i] if len(args) > i else kwargs.get(name)


def _parts(operation: str, args: tuple, kwargs: dict) -> dict[str, pl.DataFrame]:
    """The frames a write wrote besides bars, by name (what its replay applies)."""
    if operation == "replace_bars":
        return {"journal": kwargs["journal"], "quarantine": kwargs["quarantine"]}
    if operation == "replace_windows":
        return dict(_arg(args, kwargs, 0, "tables"))
    if operation in ("append", "append_table", "insert_new", "replace_table", "overwrite_table"):
        return {"frame": _arg(args, kwargs, 1, "frame")}
    return {}


def _single_run(frame) -> str | None:
    if not isinstance(frame, pl.DataFrame) or "run_id" not in frame.columns:
        return None
    runs = frame.get_column("run_id").unique().to_list()
    return runs[0] if len(runs) == 1 else None


def _describe(operation: str, args: tuple, kwargs: dict) -> dict:
    """What a replay needs of one write besides its rows: its target, window, run, source, selection and key."""
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
                   selection=json.dumps(sorted(selection)) if selection is not None else None)
    if operation == "insert_new":
        out["key"] = ",".join(_arg(args, kwargs, 2, "key"))
    return out


def _has(fallback, table: str) -> bool:
    schema, name = table.split(".")
    return bool(fallback.query("SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = $s "
                               "AND table_name = $t", {"s": schema, "t": name}).item())


def pending(fallback) -> pl.DataFrame:
    """The fallback's log rows not caught up yet, in the order they were written."""
    if not _has(fallback, LOG_TABLE):  # ops.* are not among the platform's tables() (the platform's own records)
        return pl.DataFrame(schema=LOG_SCHEMA)
    rows = fallback.query(f"SELECT * FROM {LOG_TABLE} WHERE caught_up_at IS NULL")
    return rows.select([pl.col(c) if c in rows.columns else pl.lit(None, t).alias(c) for c, t in LOG_SCHEMA.items()]
                       ).sort("seq", "written_at", nulls_last=False, maintain_order=True)


def fallback_id(fallback) -> str | None:
    ids = fallback.query(f"SELECT id FROM {META_TABLE}")["id"] if _has(fallback, META_TABLE) else []
    return ids[0] if len(ids) else None


@dataclass
class CatchUpReport:
    replayed: list[dict] = field(default_factory=list)  # one per log row: seq, operation, target, window, parity
    pending_before: int = 0
    clock: dict = field(default_factory=dict)  # this host's clocks against the server's, and the error bound

    @property
    def parity(self) -> bool:
        return all(r["parity"] for r in self.replayed)

    def as_dict(self) -> dict:
        return {"pending_before": self.pending_before, "replayed": self.replayed, "parity": self.parity,
                "clock": self.clock}


_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)
# Added to the measured bound: a host's clocks can be off by more than a round trip says (slewed by NTP, a VM
# paused); a write on the primary this close to an outage write is taken as later unless its rows agree.
MARGIN = timedelta(seconds=60)
DRIFT = 100e-6  # a free-running clock's rate error bound (100 ppm), applied to the time since the write


@dataclass(frozen=True)
class ServerClock:
    """This host's clocks against the server's (module docstring): server time = host wall time +
    ``wall_offset`` = monotonic ns + ``mono_offset_ns``, within ``error`` (plus drift since the write)."""

    wall_offset: timedelta
    mono_offset_ns: int
    mono_now_ns: int
    boot_id: str | None
    error: timedelta
    wall_now: datetime  # this host's wall clock when measured (the drift of a write from an earlier boot)

    def place(self, row: dict) -> tuple[datetime, timedelta]:
        """The server's time of a logged write (aware, UTC) and its error bound."""
        if row.get("boot_id") and row["boot_id"] == self.boot_id and row.get("mono_ns") is not None:
            elapsed_s = max(0, self.mono_now_ns - row["mono_ns"]) / 1e9
            at = _EPOCH + (row["mono_ns"] + self.mono_offset_ns) // 1000 * _US
            return at.replace(tzinfo=UTC), self.error + timedelta(seconds=elapsed_s * DRIFT)
        elapsed_s = max(0.0, (self.wall_now - row["written_at"]).total_seconds())  # on this host's wall clock
        return (row["written_at"] + self.wall_offset).replace(tzinfo=UTC), \
            self.error + timedelta(seconds=elapsed_s * DRIFT)

    def as_dict(self) -> dict:
        return {"wall_offset_seconds": self.wall_offset.total_seconds(), "error_seconds": self.error.total_seconds(),
                "boot_id": self.boot_id}


def server_clock(primary, samples: int = 7) -> ServerClock:
    """Measure this host's clocks against the primary's server, as NTP does: of ``samples`` round trips the
    shortest, whose half bounds the error of reading the server's clock at its midpoint."""
    best = None
    with primary.cursor() as cur:
        for _ in range(samples):
            w0, m0 = utcnow(), _monotonic_ns()
            cur.execute("SELECT clock_timestamp()")
            server = cur.fetchone()[0].astimezone(UTC).replace(tzinfo=None)
            w1, m1 = utcnow(), _monotonic_ns()
            rtt = m1 - m0
            if best is None or rtt < best[0]:
                server_ns = (server - _EPOCH) // _US * 1000
                best = (rtt, server - (w0 + (w1 - w0) / 2), server_ns - (m0 + rtt // 2), m1)
    rtt, wall_offset, mono_offset, now = best
    return ServerClock(wall_offset=wall_offset, mono_offset_ns=mono_offset, mono_now_ns=now, boot_id=_boot_id(),
                       error=timedelta(microseconds=rtt / 2000) + MARGIN, wall_now=utcnow())


class ConflictError(Exception):
    """A write on the primary, later than the outage write a replay would apply, touched the same rows.
    ``forceable``: False when one of the later writes is this log's own (forcing does not override those)."""

    def __init__(self, message: str, forceable: bool = True) -> None:
        super().__init__(message)
        self.forceable = forceable


class AlreadyApplied(Exception):
    """This outage write's replay is already committed on the primary (an earlier catch-up applied it)."""


class ParityError(Exception):
    """A replay did not leave the primary's rows equal to what the write wrote (it was rolled back)."""


_OVERLAP = """(ts_lo IS NULL OR %(end)s::timestamp IS NULL OR ts_lo < %(end)s::timestamp)
AND (ts_end IS NULL OR %(lo)s::timestamp IS NULL OR %(lo)s::timestamp < ts_end)
AND (symbols IS NULL OR %(symbols)s::text[] IS NULL OR symbols && %(symbols)s::text[])
AND (dataset IS NULL OR %(dataset)s::text IS NULL OR dataset = %(dataset)s::text)"""
# stamps over the scope that may be later than the outage write: after its time (less the error bound) on the
# server's clock, or this log's own by write id (ordered by their sequence numbers instead: _guard)
_LATER_SQL = f"""SELECT seq, operation, run_id, coalesce(original_at, committed_at) AS at, replay_of, write_id
FROM ops.write_log WHERE target = %(target)s
AND (coalesce(original_at, committed_at) > %(after)s OR write_id = ANY(%(own_ids)s::text[]))
AND write_id IS DISTINCT FROM %(write_id)s AND {_OVERLAP}
ORDER BY seq"""
_COMMUTE = ("append", "append_table", "insert_new")  # appends (insert_new by its key) never undo another write
_COMMUTES_WITH = {"append": (*_COMMUTE, "upsert_bars"), "append_table": (*_COMMUTE, "upsert_bars"),
                  "insert_new": ("append", "append_table", "upsert_bars")}


def _guard(row: dict, after: datetime, force: bool, own: dict[str, int], agree=None):
    """The test a replay runs inside its transaction, under its table's write lock, on the scope the store is
    about to write (module docstring, steps 1 and 2). ``own``: this log's write ids -> their seqs.

    A stamp of another writer is later when it is after ``after`` (the outage write's time on the server's
    clock less the error bound), unless ``force``. This log's own stamps, known by their write ids, are never
    overridden by ``force`` (that would need this log's later write applied again): its replays are ordered
    by sequence number; its writes committed on the primary whose acknowledgement was lost are before when
    earlier in the log (their commit came before their log row, which came before this one) and, when later
    in the log, ordered by their commit's time like any write. (A replay tagged with this fallback's id whose
    write id the log no longer holds, as after the file was restored from a backup, counts as another
    writer's, by its original time.) ``agree(cur, later)``: whether the rows the write governs show that the
    later writes did not change what it writes."""
    state = {"first": True}
    write_id, seq = row["write_id"], row["seq"]
    params = {"own_ids": sorted(own), "write_id": write_id}

    def is_later(stamp) -> bool:
        _, _, _, at, replay_of, stamp_id = stamp
        if stamp_id in own and replay_of:  # a replay of this log's write
            return own[stamp_id] > seq
        if stamp_id in own:  # this log's write, committed on the primary (acknowledgement lost)
            return own[stamp_id] > seq and at > after
        return at > after and not force  # another writer (or a replay of a log row this file no longer has)

    def check(cur, scope: dict) -> None:
        if state["first"]:  # a replace of several tables stamps each; its own first stamp is not "applied before"
            state["first"] = False
            cur.execute("SELECT seq FROM ops.write_log WHERE write_id = %s LIMIT 1", (write_id,))
            if write_id is not None and cur.fetchone():
                raise AlreadyApplied(write_id)
        cur.execute(_LATER_SQL, {**scope, **params, "after": after})
        later = [stamp for stamp in cur.fetchall() if is_later(stamp)]
        if row["operation"] in _COMMUTE:  # commutes with other appends and upserts, not with a later replace;
            # insert_new (the first insert of a key wins) not with a later insert_new of one of its keys either
            later = [st for st in later if st[1] not in _COMMUTES_WITH[row["operation"]]]
        if not later or (agree is not None and agree(cur, later)):
            return
        own_later = [st for st in later if st[5] in own]
        at_seq, operation, run, at, replay_of, stamp_id = (own_later or later)[0]
        if stamp_id in own and replay_of:
            by = f"the replay of this log's write {own[stamp_id]} (forcing does not override it)"
        elif stamp_id in own:
            by = (f"this log's write {own[stamp_id]}, committed on the primary though its acknowledgement was "
                  "lost (forcing does not override it)")
        else:
            by = f"run {run}" if run else "a write"
        raise ConflictError(f"{operation} by {by} (write_log entry {at_seq}) wrote {scope['target']} on the "
                            f"primary at {at}, after this outage write or within its clock error",
                            forceable=not own_later)

    return check


def _selection(row: dict) -> list[str] | None:
    text = row["selection"]
    if text is None:
        return None
    return json.loads(text) if text.startswith("[") else [s for s in text.split(",") if s]


def _region_sql(row: dict, payload: pl.DataFrame) -> tuple[str, dict]:
    """The condition (psycopg parameters, table alias ``t``) of every bar a bar write governs: what its replace
    deletes and writes. A window: the window's rows of its symbols and selection, and of its source when the
    read was whole; no window: each symbol's [first, last] range of its bars; an upsert: exactly its keys."""
    if row["operation"] == "replace_bars" and row["window_start"] is not None:
        selection = _selection(row)
        symbols = sorted(set(payload["symbol"].to_list()) | set(selection or ()))
        return ("t.ts >= %(ws)s AND t.ts < %(we)s AND (t.symbol = ANY(%(syms)s) OR (%(whole)s AND t.source = "
                "%(src)s))", {"ws": row["window_start"], "we": row["window_end"], "syms": symbols,
                              "whole": selection is None, "src": row["source"]})
    if row["operation"] == "upsert_bars":  # its keys: the write's rows, loaded into emp_expected (_expect)
        return "(t.symbol, t.ts) IN (SELECT symbol, ts FROM emp_expected)", {}
    spans = payload.group_by("symbol").agg(pl.col("ts").min().alias("lo"), pl.col("ts").max().alias("hi"))
    return ("EXISTS (SELECT 1 FROM unnest(%(s)s::text[], %(lo)s::timestamp[], %(hi)s::timestamp[]) "
            "AS r(symbol, lo, hi) WHERE r.symbol = t.symbol AND t.ts BETWEEN r.lo AND r.hi)",
            {"s": spans["symbol"].to_list(), "lo": spans["lo"].to_list(), "hi": spans["hi"].to_list()})


def _expect(cur, table: str, frame: pl.DataFrame) -> str:
    """Load ``frame`` into ``emp_expected``, a temporary table of its columns typed as in ``table`` (dropped at
    commit), with COPY; returns the quoted column list."""
    cols = _quoted(frame.columns)
    cur.execute("DROP TABLE IF EXISTS emp_expected")
    cur.execute(f"CREATE TEMP TABLE emp_expected ON COMMIT DROP AS SELECT {cols} FROM {table} WITH NO DATA")
    if frame.height:
        with cur.copy(f"COPY emp_expected ({cols}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(_csv(frame))
    cur.execute("ANALYZE emp_expected")  # the planner's row counts for the joins that follow
    return cols


def _excess(cur, left: str, right: str, params: dict) -> int:
    """How many rows of ``left`` are not in ``right`` (as multisets: EXCEPT ALL), on the server."""
    cur.execute(f"SELECT count(*) FROM ({left} EXCEPT ALL {right}) AS d", params)
    return cur.fetchone()[0]


def _bar_checks(row: dict, payload: pl.DataFrame):
    """(agree, verify) of a bar write: the rows-level conflict refinement and the in-transaction parity, both
    computed by the server against the write's rows loaded into a temporary table, joined on the bar key
    (symbol, ts), which is unique in both."""
    table = f"market.{row['target']}"
    where, params = _region_sql(row, payload)
    mine = payload.with_columns(pl.lit(row["source"]).alias("source"), pl.lit(row["run_id"]).alias("run_id"))

    upsert = row["operation"] == "upsert_bars"

    def differing(cur, columns) -> tuple[int, int]:
        """(rows the write governs on the primary that are not its rows, its rows that are not there), comparing
        ``columns`` (one hash join on the key; an upsert governs exactly its keys, a replace its region)."""
        same = " AND ".join(f"e.{c} IS NOT DISTINCT FROM t.{c}" for c in columns)
        cur.execute(f"SELECT count(*) FILTER (WHERE t.symbol IS NULL), count(*) FILTER (WHERE t.symbol IS NOT NULL "
                    f"AND NOT ({same})) FROM emp_expected AS e LEFT JOIN {table} AS t "
                    "ON t.symbol = e.symbol AND t.ts = e.ts")
        missing, differ = cur.fetchone()
        if upsert:  # its scope is its keys: a row there is either its own or differs
            return differ, missing + differ
        cur.execute(f"SELECT count(*) FROM {table} AS t WHERE {where} AND NOT EXISTS (SELECT 1 FROM emp_expected "
                    f"AS e WHERE e.symbol = t.symbol AND e.ts = t.ts AND {same})", params)
        return cur.fetchone()[0], missing + differ

    def later_rows_differ(cur, runs: list[str]) -> int:
        same = " AND ".join(f"e.{c} IS NOT DISTINCT FROM t.{c}" for c in _OHLCV[2:])
        cur.execute(f"SELECT count(*) FROM {table} AS t LEFT JOIN emp_expected AS e ON e.symbol = t.symbol "
                    f"AND e.ts = t.ts WHERE {where} AND t.run_id = ANY(%(runs)s) AND (e.symbol IS NULL OR NOT "
                    f"({same}))", {**params, "runs": runs})
        return cur.fetchone()[0]

    def agree(cur, later: list) -> bool:
        """Later upserts: their rows in this write's scope are among its own. Anything else: the rows this write
        governs already are exactly its rows (a commit whose acknowledgement was lost; the stream mirroring
        the outage's own bars): replaying it changes no value."""
        _expect(cur, table, mine)
        if all(op == "upsert_bars" and run is not None for _, op, run, *_ in later):
            runs = sorted({run for _, _, run, *_ in later})
            return later_rows_differ(cur, runs) == 0
        return differing(cur, _OHLCV[2:]) == (0, 0)

    def verify(cur) -> None:
        _expect(cur, table, mine.select(_BAR_COLUMNS))
        extra, missing = differing(cur, _BAR_COLUMNS[2:])
        if extra or missing:
            raise ParityError(f"after the replay {extra} row(s) in this write's scope on the primary are not among "
                              f"its {mine.height} rows, and {missing} of its rows are not there")

    return agree, verify


def _keys_agree(table: str, key: str, frame: pl.DataFrame):
    """``agree(cur, later)`` of an ``insert_new``: later writes that are all ``insert_new`` left every key of the
    write either absent or holding exactly its row (so the first insert of each key is the same in either
    order); any other later write (a replace) disagrees."""
    names = key.split(",")
    first = frame.unique(subset=names, keep="first", maintain_order=True)
    keys = _quoted(names)

    def agree(cur, later: list) -> bool:
        if any(op != "insert_new" for _, op, *_ in later):
            return False
        cols = _expect(cur, table, first)
        return _excess(cur, f"SELECT {cols} FROM {table} WHERE ({keys}) IN (SELECT {keys} FROM emp_expected)",
                       f"SELECT {cols} FROM emp_expected", {}) == 0

    return agree


def _frame_verify(checks: list[tuple[str, str, dict, pl.DataFrame]]):
    """The in-transaction parity of a table write: each ``(table, where, params, expected)`` holds exactly
    ``expected``'s rows where ``where`` holds (compared on the server)."""
    def verify(cur) -> None:
        for table, where, params, expected in checks:
            cols = _expect(cur, table, expected)
            theirs, ours = f"SELECT {cols} FROM {table} WHERE {where}", f"SELECT {cols} FROM emp_expected"
            extra, missing = _excess(cur, theirs, ours, params), _excess(cur, ours, theirs, params)
            if extra or missing:
                raise ParityError(f"after the replay {extra} row(s) of {table} in this write's scope are not "
                                  f"among its {expected.height} rows, and {missing} of its rows are not there")

    return verify


def catch_up(primary, fallback, *, keep_primary=(), force=()) -> CatchUpReport:
    """Replay the fallback's pending writes onto ``primary`` in write order, each verified in its transaction
    (module docstring). ``keep_primary``: seqs of conflicting writes to drop (the primary's rows stand; marked
    caught up with that note); ``force``: seqs to replay even over a later write by another writer (never over a
    later write of this log). A write that is left pending holds back the later writes to its table (they wait
    for it: applying them first would put it out of order). Raises :class:`StoreUnavailableError` when the
    primary is down (nothing is changed)."""
    primary.tables()  # fails fast, before anything is replayed, while the primary is down
    me = fallback_id(fallback)
    # two catch-ups at once are safe: each replay finds, under its table's write lock, a write already applied
    todo = pending(fallback)
    report = CatchUpReport(pending_before=todo.height)
    unknown = (set(keep_primary) | set(force)) - set(todo["seq"].drop_nulls().to_list())
    if unknown:
        raise EmpError(f"no pending failover write with seq {', '.join(map(str, sorted(unknown)))}; "
                       "`emp db catch-up --json` lists them")
    clock = server_clock(primary)
    report.clock = clock.as_dict()
    _mark_done(fallback, keep_primary, note="resolved: the primary's rows kept, this write dropped")
    own = _own_writes(fallback)
    on_primary = _stamped(primary, todo["write_id"].drop_nulls().to_list())
    # a row without a seq (an earlier version's log) is kept and reported: is_in gives null for it
    rows = list(todo.filter(~pl.col("seq").is_in(list(keep_primary)).fill_null(False)).iter_rows(named=True))
    held: dict[str, int | None] = {}  # table -> the pending write that holds its later writes back
    for i, row in enumerate(rows):
        tables = (row["target"] or "").split(",")
        waiting = [t for t in tables if t in held]
        if waiting:
            entry = {**_entry(row), "parity": False, "note": f"waits for write {held[waiting[0]]} of the same table"}
        else:
            later = [r for r in rows[i + 1:] if r["write_id"] not in on_primary]
            entry = _catch_up_one(primary, fallback, row, later, me, clock, row["seq"] in force, own)
        report.replayed.append(entry)
        if not entry["parity"]:
            held.update(dict.fromkeys(tables, row["seq"]))
    done = [e["seq"] for e in report.replayed if e["parity"]]
    _mark_done(fallback, done)
    log.info("failover catch-up: %d write(s) considered, %d applied or found applied, %d pending",
             len(report.replayed), len(done), len(report.replayed) - len(done))
    return report


def _stamped(primary, write_ids: list[str]) -> set[str]:
    """Which of ``write_ids`` the primary committed itself, before their acknowledgement was lost (a replay of
    them by a catch-up, interrupted before it marked them, does not count: it came in log order)."""
    with primary.cursor() as cur:
        cur.execute("SELECT DISTINCT write_id FROM ops.write_log WHERE write_id = ANY(%s) AND replay_of IS NULL",
                    (write_ids,))
        return {w for (w,) in cur.fetchall()}


def _own_writes(fallback) -> dict[str, int]:
    """This log's write ids -> their seqs (every row that has both)."""
    if not _has(fallback, LOG_TABLE) or "write_id" not in fallback.query(f"SELECT * FROM {LOG_TABLE} LIMIT 0").columns:
        return {}  # a log kept by a version without write ids
    rows = fallback.query(f"SELECT write_id, seq FROM {LOG_TABLE} WHERE write_id IS NOT NULL AND seq IS NOT NULL")
    return dict(rows.iter_rows())


def _entry(row: dict) -> dict:
    return {"seq": row["seq"], "operation": row["operation"], "target": row["target"], "run_id": row["run_id"],
            "window": [str(row["window_start"]), str(row["window_end"])], "written_at": str(row["written_at"])}


def _catch_up_one(primary, fallback, row: dict, later: list[dict], me: str | None, clock: ServerClock,  # noqa: PLR0911
                  forced: bool, own: dict[str, int]) -> dict:
    entry = _entry(row)
    if forced:
        entry["forced"] = True
    if row["seq"] is None or row["write_id"] is None or me is None:
        then = f"--keep-primary {row['seq']}" if row["seq"] is not None else \
            f"set its caught_up_at in {LOG_TABLE} (it has no seq)"
        return {**entry, "parity": False, "note": "logged by an earlier version of the platform (no write id): "
                                                  f"apply it by hand from {LOG_TABLE}, then {then}"}
    if _superseded(row, later):
        return {**entry, "parity": True, "note": "superseded by a later outage write of the same target; not replayed"}
    at, error = clock.place(row)
    if not forced and at < utcnow().replace(tzinfo=UTC) + clock.wall_offset - timedelta(days=WRITE_LOG_DAYS - 1):
        return {**entry, "parity": False, "note": f"CONFLICT, not replayed: older than the write log's retention "
                                                  f"({WRITE_LOG_DAYS} days), so later writes, and an earlier "
                                                  "replay of this one, may no longer show: look at the primary's "
                                                  "rows, then decide with "
                                                  f"--keep-primary {row['seq']} or --replay {row['seq']} (a "
                                                  "replay applied before is applied again: an append doubled)"}
    try:
        _replay_one(primary, fallback, row, f"{me}:{row['seq']}", at, error, forced, own)
    except AlreadyApplied:
        return {**entry, "parity": True, "note": "already applied (by an earlier catch-up, or committed on the "
                                                 "primary before it went away)"}
    except ConflictError as exc:
        decide = f"`emp db catch-up --keep-primary {row['seq']}`" + \
            (f" or `--replay {row['seq']}`" if exc.forceable else " (the primary holds this log's later write; "
             "keeping it drops this whole write, its rows outside that write's scope too: re-run its ingest for "
             "those)")
        return {**entry, "parity": False, "note": f"CONFLICT, not replayed: {exc}; decide with {decide}"}
    except ParityError as exc:
        return {**entry, "parity": False, "note": f"NOT VERIFIED, rolled back: {exc}"}
    except (StoreUnavailableError, StoreLockedError):
        raise  # the primary went away again, or the fallback is busy (a failed-over step still writing): stop;
        # what was applied stays applied, the rest pending, and the run fails for the sensor to retry
    except Exception as exc:  # one write's failure is reported with its number; the others go on
        if _caught_up(fallback, row["seq"]):  # a concurrent catch-up applied and marked it meanwhile
            return {**entry, "parity": True, "note": "caught up by a concurrent catch-up"}
        log.exception("failover catch-up: write %s failed", row["seq"])
        return {**entry, "parity": False, "note": f"FAILED: {type(exc).__name__}: {' '.join(str(exc).split())}"}
    return {**entry, "parity": True, "rows": row["rows"]}


def _caught_up(fallback, seq: int) -> bool:
    return fallback.query(f"SELECT count(*) AS n FROM {LOG_TABLE} WHERE seq = $s AND caught_up_at IS NOT NULL",
                          {"s": seq}).item() > 0


def _replay_one(primary, fallback, row: dict, tag: str, at: datetime, error: timedelta, forced: bool,
                own: dict[str, int]) -> None:
    """Apply one logged write to the primary in one transaction, guarded and verified (module docstring)."""
    op, target = row["operation"], row["target"]
    replay = {"write_id": row["write_id"], "replay_of": tag, "original_at": at}
    if op in _BAR_WRITES:
        payload = fallback.query(f"SELECT {', '.join(_OHLCV)} FROM {ROWS_TABLE} WHERE seq = $s ORDER BY symbol, ts",
                                 {"s": row["seq"]})
        _check_count(row["seq"], "bars", payload.height, row["logged_rows"])
        agree, verify = _bar_checks(row, payload)
        replay.update(guard=_guard(row, at - error, forced, own, agree), verify=verify)
        token = REPLAY.set(replay)
        try:
            if op == "upsert_bars":
                primary.upsert_bars(target, payload, source=row["source"], run_id=row["run_id"])
            else:
                parts = _parts_of(fallback, row["seq"], ("journal", "quarantine"))
                window = (row["window_start"], row["window_end"]) if row["window_start"] is not None else None
                primary.replace_bars(target, payload, source=row["source"], run_id=row["run_id"], window=window,
                                     quarantine=parts["quarantine"], journal=parts["journal"],
                                     selection=_selection(row))
        finally:
            REPLAY.reset(token)
        return
    names = ("frame",) if op != "replace_windows" else tuple(row["target"].split(","))
    parts = _parts_of(fallback, row["seq"], names)
    replay["guard"] = _guard(row, at - error, forced, own)
    if op in _WHOLE_TABLE:
        replay["verify"] = _frame_verify([(target, "TRUE", {}, parts["frame"])])
    elif op == "replace_windows":
        where = "dataset = %(d)s AND ts >= %(s)s AND ts < %(e)s"
        params = {"d": row["dataset"], "s": row["window_start"], "e": row["window_end"]}
        replay["verify"] = _frame_verify([(t, where, params, f) for t, f in parts.items()])
    elif op == "insert_new":
        replay["guard"] = _guard(row, at - error, forced, own, _keys_agree(target, row["key"], parts["frame"]))
    token = REPLAY.set(replay)
    try:
        if op in _WHOLE_TABLE or op in ("append", "append_table"):
            getattr(primary, op)(target, parts["frame"])
        elif op == "replace_windows":
            primary.replace_windows(parts, dataset=row["dataset"], start=row["window_start"], end=row["window_end"])
        elif op == "insert_new":
            key = row["key"].split(",")
            primary.ensure_table(target, dict(parts["frame"].schema), key)
            primary.insert_new(target, parts["frame"], key)
        else:
            raise EmpError(f"no replay for the operation {op!r}")
    finally:
        REPLAY.reset(token)


def _parts_of(fallback, seq: int, names: tuple[str, ...]) -> dict[str, pl.DataFrame]:
    """The frames write ``seq`` logged, by name (each of ``names`` must be there)."""
    listed = fallback.query(f"SELECT * FROM {PARTS_TABLE} WHERE seq = $s", {"s": seq}) \
        if _has(fallback, PARTS_TABLE) else pl.DataFrame(schema={"part": pl.String, "name": pl.String,
                                                                  "nulls": pl.String})
    out = {}
    for listing in listed.iter_rows(named=True):
        frame = fallback.query(f"SELECT * FROM {listing['part']}")
        _check_count(seq, f"{listing['name']} rows", frame.height, listing.get("rows"))  # None: an earlier version's
        nulls = json.loads(listing["nulls"])
        out[listing["name"]] = frame.with_columns([pl.lit(None, pl.Null).alias(c) for c in nulls])
    missing = [n for n in names if n not in out]
    if missing:
        raise EmpError(f"write {seq}: the log holds no {', '.join(missing)} rows for it (logged by an earlier "
                       "version, or dropped)")
    return out


def _check_count(seq: int, what: str, found: int, logged: int | None) -> None:
    """Refuse a replay whose logged rows are not all there (the fallback file altered or partly restored): a
    replace of fewer rows would delete the rest on the primary. (``logged`` None: logged by an earlier version.)"""
    if logged is not None and found != logged:
        raise EmpError(f"write {seq}: the log holds {found} {what} of the {logged} it logged (the fallback file "
                       "was altered); not replayed")


def _mark_done(fallback, seqs, note: str | None = None) -> None:
    """Mark log rows caught up and drop what they logged, in one transaction of the fallback."""
    seqs = list(seqs)
    if not seqs:
        return
    with fallback.connect() as con, _transaction(con):
        parts = [p for (p,) in con.execute(f"SELECT part FROM {PARTS_TABLE} WHERE list_contains($s, seq)",
                                           {"s": seqs}).fetchall()]
        for part in parts:
            con.execute(f"DROP TABLE IF EXISTS {part}")
        con.execute(f"DELETE FROM {PARTS_TABLE} WHERE list_contains($s, seq)", {"s": seqs})
        con.execute(f"DELETE FROM {ROWS_TABLE} WHERE list_contains($s, seq)", {"s": seqs})
        con.execute(f"UPDATE {LOG_TABLE} SET caught_up_at = $t, note = coalesce($n, note) WHERE list_contains($s, seq)",
                    {"t": utcnow(), "s": seqs, "n": note})


def _superseded(row: dict, later: list[dict]) -> bool:
    """Whether a later outage write replaces all of what ``row`` wrote: a whole table's (or a feature window's)
    replace followed by another of the same target. (``later`` leaves out the writes already on the primary:
    one whose acknowledgement was lost may have committed before ``row``, so it is ordered by the guard.)"""
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

"""The outbox (risk-approved orders waiting for the executor), cancel requests, and the execution journal.

One interface, two tiers: a SQLite file in WAL mode under ``$EMP_HOME`` (embedded; no server) or the
``trading`` schema of the institutional PostgreSQL (``sql/postgres/007_trading.sql``, applied by ``emp db
migrate`` or on first use). Writers are the risk path (``submit``) and the operator (``request_cancel``);
the executor reads what is to be sent and journals every report it receives.

**Nothing sent twice, nothing lost.**

- An order's ClOrdID is a function of its ``idem_key`` (what the order is: strategy, symbol, bar,
  decision), so submitting the same approved order again (a re-materialised asset, a retried command) finds
  the entry already there and returns the same ClOrdID. The venue rejects a duplicate ClOrdID, so even a
  second send could never make a second order.
- ``state`` says whether the executor has handed the order to its FIX session. The hand-over and the mark
  are not one transaction (the FIX session's store is not this database): the executor marks after the
  session has stored the message, and on restart marks whatever its session's store holds before sending
  anything (``emp_core.execution.executor``), so a crash between the two never sends an order twice.
- The journal keeps every ExecutionReport and OrderCancelReject once, keyed by the session it came on and
  its ExecID (an OrderCancelReject, which has none, by its cancel's ClOrdID): a report the venue resends
  after a reconnect (PossDupFlag) is not journaled twice. Its ``seq`` is the order reports were received in.

Durability: every write is one transaction. SQLite in WAL mode with ``synchronous`` FULL by default (a
commit survives a crash of the process or of the machine) or NORMAL (``EMP_OUTBOX_SYNC=normal``: the process
only, faster); :func:`sqlite_outbox` says why. The executor journals reports in groups, each with the
journal's high-water mark per FIX session (``journal_cursor``; ``emp_core.execution.executor``). PostgreSQL
as configured (``synchronous_commit`` on by default: a commit is flushed to its WAL).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from emp_core.clock import utcnow
from emp_core.errors import EmpError

SIDES = ("buy", "sell")
ORDER_TYPES = ("market", "limit")
SESSIONS = ("paper", "live")
JOURNAL_COLUMNS = ("session", "exec_id", "order_id", "clordid", "orig_clordid", "order_clordid", "msg_type",
                   "exec_type",
                   "ord_status", "symbol", "side", "order_qty", "last_qty", "last_px", "cum_qty", "leaves_qty",
                   "avg_px", "reject_reason", "text", "transact_time", "received_at")
TERMINAL = ("2", "4", "8", "C")  # OrdStatus: filled, canceled, rejected, expired
JOURNALS = ("executions", "dropcopy")
# A reject for a duplicate ClOrdID (OrdRejReason 6) that answers a second send of an order the venue already
# reported on says nothing of that order; a reason-6 reject of a first send (the counterparty's own duplicate
# check) is the order's own state and counts.
_NOT_A_DUPLICATES_REJECT = ("NOT (COALESCE(x.reject_reason, '') = '6' AND EXISTS (SELECT 1 FROM {p}executions y "
                            "WHERE y.order_clordid = x.order_clordid AND y.msg_type = '8' AND y.seq < x.seq))")
_NUMERIC = ("order_qty", "last_qty", "last_px", "cum_qty", "leaves_qty", "avg_px")


class OutboxError(EmpError):
    """An outbox operation that cannot be done (an unknown order, a bad entry)."""


def clordid_for(idem_key: str) -> str:
    """The ClOrdID of the order ``idem_key`` names: 20 characters, the same on every call and machine."""
    return "E" + hashlib.sha256(idem_key.encode()).hexdigest()[:19].upper()


@dataclass(frozen=True)
class ApprovedOrder:
    """An order the risk policy approved, as the outbox keeps it."""

    idem_key: str
    strategy: str
    symbol: str
    side: str
    qty: int
    ord_type: str = "market"
    limit_price: float | None = None
    stop_price: float | None = None
    session: str = "paper"
    policy_version: str = ""
    decision: Sequence[Mapping] = field(default_factory=tuple)  # the decision's rows (policy.Decision.as_rows())

    def __post_init__(self) -> None:
        problems = []
        if not self.idem_key:
            problems.append("idem_key is empty")
        if self.side not in SIDES:
            problems.append(f"side {self.side!r} is not buy or sell")
        if isinstance(self.qty, bool) or not isinstance(self.qty, int) or self.qty <= 0:
            problems.append(f"qty {self.qty!r} is not a whole number > 0")
        if self.ord_type not in ORDER_TYPES:
            problems.append(f"order type {self.ord_type!r} is not market or limit")
        if (self.ord_type == "limit") != (self.limit_price is not None):
            problems.append("a limit order needs a limit price, and only a limit order has one")
        if self.limit_price is not None and not self.limit_price > 0:
            problems.append(f"limit price {self.limit_price!r} is not > 0")
        if self.session not in SESSIONS:
            problems.append(f"session {self.session!r} is not paper or live")
        if problems:
            raise OutboxError(f"order {self.idem_key!r} for {self.symbol}: {'; '.join(problems)}")

    @property
    def clordid(self) -> str:
        return clordid_for(self.idem_key)


@dataclass(frozen=True)
class Entry:
    """An outbox entry as the executor reads it."""

    entry_id: int
    clordid: str
    symbol: str
    side: str
    qty: int
    ord_type: str
    limit_price: float | None
    session: str
    strategy: str


@dataclass(frozen=True)
class Cancel:
    cancel_id: int
    clordid: str  # the cancel request's own
    orig_clordid: str
    symbol: str
    side: str
    qty: int


_SQLITE_DDL = """
CREATE TABLE IF NOT EXISTS outbox (
    entry_id INTEGER PRIMARY KEY AUTOINCREMENT, clordid TEXT NOT NULL UNIQUE, idem_key TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL, strategy TEXT NOT NULL, symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')), qty INTEGER NOT NULL CHECK (qty > 0),
    ord_type TEXT NOT NULL CHECK (ord_type IN ('market', 'limit')), limit_price REAL, stop_price REAL,
    session TEXT NOT NULL CHECK (session IN ('paper', 'live')), policy_version TEXT NOT NULL, decision TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'approved' CHECK (state IN ('approved', 'sent')), sent_at TEXT,
    CHECK ((ord_type = 'limit') = (limit_price IS NOT NULL)));
CREATE INDEX IF NOT EXISTS outbox_to_send ON outbox (entry_id) WHERE state = 'approved';
CREATE TABLE IF NOT EXISTS cancels (
    cancel_id INTEGER PRIMARY KEY AUTOINCREMENT, clordid TEXT NOT NULL UNIQUE,
    orig_clordid TEXT NOT NULL REFERENCES outbox (clordid), created_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'requested' CHECK (state IN ('requested', 'sent')), sent_at TEXT);
CREATE INDEX IF NOT EXISTS cancels_to_send ON cancels (cancel_id) WHERE state = 'requested';
CREATE TABLE IF NOT EXISTS journal_cursor (
    session TEXT PRIMARY KEY, store_epoch TEXT NOT NULL,
    next_target_seq INTEGER NOT NULL CHECK (next_target_seq >= 1), updated_at TEXT NOT NULL);
"""


_SQLITE_JOURNAL_DDL = """
CREATE TABLE IF NOT EXISTS {name} (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL, exec_id TEXT NOT NULL, order_id TEXT,
    clordid TEXT NOT NULL, orig_clordid TEXT, order_clordid TEXT NOT NULL, msg_type TEXT NOT NULL, exec_type TEXT,
    ord_status TEXT NOT NULL,
    symbol TEXT, side TEXT, order_qty REAL, last_qty REAL, last_px REAL, cum_qty REAL, leaves_qty REAL,
    avg_px REAL, reject_reason TEXT, text TEXT, transact_time TEXT, received_at TEXT NOT NULL,
    UNIQUE (session, exec_id));
CREATE INDEX IF NOT EXISTS {name}_order ON {name} (order_clordid, seq);
"""


class Outbox:
    """The outbox and journal over a DB-API connection (module docstring). Use :func:`open_outbox`."""

    def __init__(self, connect, *, prefix: str, placeholder: str, location: str,
                 serialize_writes: bool = False) -> None:
        self._connect, self._prefix, self._ph, self.location = connect, prefix, placeholder, location
        self._cons: dict[int, object] = {}  # one connection per OS thread
        # SQLite has one writer at a time, and a connection that finds the write lock taken sleeps in SQLite's
        # busy handler (1, 2, 5 ... 100 ms): two threads of one process writing in turn (the executor's sends
        # marked while its journal commits) waited there. Writers of one process queue on this lock instead.
        self._write_lock = threading.Lock() if serialize_writes else contextlib.nullcontext()

    # -- plumbing --------------------------------------------------------------------------------------------
    def _con(self):
        """This thread's connection, kept by OS thread id, not in a ``threading.local``: quickfix calls the
        executor back on its own C++ threads, and Python drops a foreign thread's state (and its thread-locals)
        after every callback, so a thread-local connection was opened anew for every report (the profile of
        ``benchmarks/bench_fix.py``: a seventh of the executor's time)."""
        ident = threading.get_ident()
        con = self._cons.get(ident)
        if con is None:
            con = self._cons[ident] = self._connect()
        return con

    def _sql(self, text: str) -> str:
        return text.replace("{p}", self._prefix).replace("?", self._ph)

    def _run(self, text: str, params: Sequence = (), *, many: Iterable[Sequence] | None = None) -> list[tuple]:
        """Run one statement in its own transaction; its rows (for ``many``: the rows it changed, as [(n,)])."""
        return self._transaction([(text, params, many)])[0]

    def _transaction(self, statements: Sequence[tuple[str, Sequence, Iterable[Sequence] | None]]) -> list:
        """Run (statement, params, many) triples in one transaction; each one's rows, as ``_run`` gives them."""
        con = self._con()
        writes = any(not text.lstrip().upper().startswith("SELECT") for text, _, _ in statements)
        with self._write_lock if writes else contextlib.nullcontext():
            try:
                cur = con.cursor()
                out = []
                for text, params, many in statements:
                    if many is not None:
                        cur.executemany(self._sql(text), list(many))
                        out.append([(cur.rowcount,)])
                    else:
                        cur.execute(self._sql(text), tuple(params))
                        out.append(cur.fetchall() if cur.description else [])
                con.commit()
                return out
            except BaseException:
                con.rollback()
                raise

    def close(self) -> None:
        """Close this thread's connection (SQLite's may be closed only by the thread that opened it)."""
        con = self._cons.pop(threading.get_ident(), None)
        if con is not None:
            con.close()

    def __str__(self) -> str:
        return self.location

    # -- the risk path -----------------------------------------------------------------------------------------
    def submit(self, orders: Sequence[ApprovedOrder]) -> list[tuple[str, bool]]:
        """Add approved orders, all in one transaction; returns (ClOrdID, whether it is new) for each. An order
        whose idem_key is already in the outbox is not added again (the same ClOrdID is returned)."""
        if not orders:
            return []
        now = utcnow().isoformat(sep=" ")
        insert = ("INSERT INTO {p}outbox (clordid, idem_key, created_at, strategy, symbol, side, qty, ord_type, "
                  "limit_price, stop_price, session, policy_version, decision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
                  "?, ?, ?, ?) ON CONFLICT (idem_key) DO NOTHING RETURNING entry_id")
        done = self._transaction([
            (insert, (o.clordid, o.idem_key, now, o.strategy, o.symbol, o.side, o.qty, o.ord_type, o.limit_price,
                      o.stop_price, o.session, o.policy_version, json.dumps(list(o.decision), default=str)), None)
            for o in orders])
        return [(o.clordid, bool(rows)) for o, rows in zip(orders, done, strict=True)]

    def request_cancel(self, clordid: str) -> str:
        """Ask the executor to cancel order ``clordid``; returns the cancel request's ClOrdID."""
        found = self._run("SELECT count(*) FROM {p}outbox WHERE clordid = ?", (clordid,))[0][0]
        if not found:
            raise OutboxError(f"no order {clordid!r} in the outbox at {self.location}")
        done = self._run("SELECT ord_status FROM {p}executions x WHERE order_clordid = ? AND msg_type = '8' "
                         f"AND {_NOT_A_DUPLICATES_REJECT} ORDER BY seq DESC LIMIT 1", (clordid,))
        if done and done[0][0] in TERMINAL:
            raise OutboxError(f"order {clordid} is already done (OrdStatus {done[0][0]}): nothing to cancel")
        n = self._run("SELECT count(*) FROM {p}cancels WHERE orig_clordid = ?", (clordid,))[0][0]
        cancel = f"{clordid}-C{n + 1}"
        self._run("INSERT INTO {p}cancels (clordid, orig_clordid, created_at) VALUES (?, ?, ?)",
                  (cancel, clordid, utcnow().isoformat(sep=" ")))
        return cancel

    # -- the executor ------------------------------------------------------------------------------------------
    def to_send(self, limit: int = 500, *, session: str | None = None) -> list[Entry]:
        """Approved orders not yet handed to a FIX session, oldest first; only those approved for ``session``
        (paper or live) when given."""
        where, params = _for_session(session)
        rows = self._run("SELECT entry_id, clordid, symbol, side, qty, ord_type, limit_price, session, strategy "
                         f"FROM {{p}}outbox WHERE state = 'approved'{where} ORDER BY entry_id LIMIT ?",
                         (*params, limit))
        return [Entry(*r) for r in rows]

    def mark_sent(self, clordids: Sequence[str]) -> int:
        """Mark approved orders sent; returns how many were still approved (the others are left as they are)."""
        now = utcnow().isoformat(sep=" ")
        return self._run("UPDATE {p}outbox SET state = 'sent', sent_at = ? WHERE clordid = ? AND state = "
                         "'approved'", many=[(now, c) for c in clordids])[0][0]

    def cancels_to_send(self, *, session: str | None = None) -> list[Cancel]:
        """Requested cancels not yet sent, oldest first; only those of orders approved for ``session`` (paper or
        live) when given (a cancel goes to the session kind its order went to)."""
        where, params = _for_session(session)
        rows = self._run("SELECT c.cancel_id, c.clordid, c.orig_clordid, o.symbol, o.side, o.qty FROM {p}cancels c "
                         "JOIN {p}outbox o ON o.clordid = c.orig_clordid WHERE c.state = 'requested'"
                         + where.replace("session", "o.session") + " ORDER BY c.cancel_id", params)
        return [Cancel(*r) for r in rows]

    def mark_cancels_sent(self, clordids: Sequence[str]) -> None:
        now = utcnow().isoformat(sep=" ")
        self._run("UPDATE {p}cancels SET state = 'sent', sent_at = ? WHERE clordid = ? AND state = 'requested'",
                  many=[(now, c) for c in clordids])

    def record(self, reports: Sequence[Mapping], *, into: str = "executions",
               cursor: tuple[str, str, int] | None = None) -> int:
        """Journal reports (mappings with :data:`JOURNAL_COLUMNS`; ``received_at`` defaults to now), each once
        by (session, exec_id), in one transaction; returns how many were new. ``into``: ``executions`` (the
        execution journal) or ``dropcopy`` (the venue's drop copy, for reconciliation). ``cursor``: (session,
        store epoch, next expected sequence number), the journal's high-water mark for that FIX session
        (:meth:`cursor`), replaced in the same transaction (one writer per session, in sequence order)."""
        _check_journal(into)
        if not reports and cursor is None:
            return 0
        now = utcnow()
        rows = []
        for given in reports:
            missing = [c for c in ("session", "exec_id", "clordid", "msg_type", "ord_status") if not given.get(c)]
            if missing:
                raise OutboxError(f"a report for {given.get('clordid')!r} lacks {', '.join(missing)}")
            r = {**given, "order_clordid": given.get("orig_clordid") or given["clordid"],
                 "received_at": given.get("received_at") or now}
            rows.append(tuple(_text_time(r.get(c)) for c in JOURNAL_COLUMNS))
        cols = ", ".join(JOURNAL_COLUMNS)
        marks = ", ".join("?" * len(JOURNAL_COLUMNS))
        statements = [(f"INSERT INTO {{p}}{into} ({cols}) VALUES ({marks}) ON CONFLICT (session, exec_id) "
                       "DO NOTHING", (), rows)] if rows else []
        if cursor is not None:
            session, epoch, next_seq = cursor
            if int(next_seq) < 1:
                raise OutboxError(f"journal cursor for {session}: next sequence number {next_seq} < 1")
            statements.append((
                "INSERT INTO {p}journal_cursor (session, store_epoch, next_target_seq, updated_at) VALUES (?, ?, ?, "
                "?) ON CONFLICT (session) DO UPDATE SET store_epoch = excluded.store_epoch, next_target_seq = "
                "excluded.next_target_seq, updated_at = excluded.updated_at",
                (session, str(epoch), int(next_seq), _text_time(now)), None))
        done = self._transaction(statements)
        return done[0][0][0] if rows else 0

    def cursor(self, session: str) -> tuple[str, int] | None:
        """The journal's high-water mark for FIX session ``session`` (``record(cursor=)``): (store epoch, the
        sequence number after the last report journaled in it), or None before the first."""
        rows = self._run("SELECT store_epoch, next_target_seq FROM {p}journal_cursor WHERE session = ?", (session,))
        return (rows[0][0], int(rows[0][1])) if rows else None

    def known(self, session: str, exec_ids: Sequence[str], *, into: str = "executions") -> set[str]:
        """Which of ``exec_ids`` the journal already holds for ``session``."""
        _check_journal(into)
        found: set[str] = set()
        for i in range(0, len(exec_ids), 500):  # SQLite's default limit is 32,766 parameters a statement
            chunk = list(exec_ids[i:i + 500])
            marks = ", ".join("?" * len(chunk))
            found |= {r[0] for r in self._run(f"SELECT exec_id FROM {{p}}{into} WHERE session = ? AND exec_id IN "
                                              f"({marks})", (session, *chunk))}
        return found

    def journal_count(self, session: str, *, into: str = "executions") -> int:
        """How many reports the journal holds for FIX session ``session``."""
        _check_journal(into)
        return self._run(f"SELECT count(*) FROM {{p}}{into} WHERE session = ?", (session,))[0][0]

    # -- what everyone reads -----------------------------------------------------------------------------------
    def depth(self, session: str | None = None) -> int:
        """Approved orders not yet sent (for ``session`` only, when given)."""
        where, params = _for_session(session)
        return self._run(f"SELECT count(*) FROM {{p}}outbox WHERE state = 'approved'{where}", params)[0][0]

    def journal_size(self, which: str = "executions") -> int:
        """Reports in the execution journal (or the drop copy: ``which="dropcopy"``)."""
        if which not in JOURNALS:
            raise OutboxError(f"no journal {which!r}: {', '.join(JOURNALS)}")
        return self._run(f"SELECT count(*) FROM {{p}}{which}")[0][0]

    def last_report_at(self) -> datetime | None:
        value = self._run("SELECT max(received_at) FROM {p}executions")[0][0]
        return datetime.fromisoformat(str(value)) if value is not None else None

    def journal(self, which: str = "executions") -> pl.DataFrame:
        """The execution journal (or the drop copy: ``which="dropcopy"``), in the order received."""
        if which not in JOURNALS:
            raise OutboxError(f"no journal {which!r}: {', '.join(JOURNALS)}")
        rows = self._run(f"SELECT seq, {', '.join(JOURNAL_COLUMNS)} FROM {{p}}{which} ORDER BY seq")
        if not rows:  # typed, so that an empty journal joins and filters like a full one
            return pl.DataFrame(schema={"seq": pl.Int64} | {c: pl.Float64 if c in _NUMERIC else pl.String
                                                            for c in JOURNAL_COLUMNS})
        return pl.DataFrame(rows, schema=["seq", *JOURNAL_COLUMNS], orient="row", infer_schema_length=None)

    def entries(self) -> pl.DataFrame:
        rows = self._run("SELECT entry_id, clordid, idem_key, created_at, strategy, symbol, side, qty, ord_type, "
                         "limit_price, stop_price, session, policy_version, state, sent_at FROM {p}outbox "
                         "ORDER BY entry_id")
        return pl.DataFrame(rows, orient="row", infer_schema_length=None, schema=[
            "entry_id", "clordid", "idem_key", "created_at", "strategy", "symbol", "side", "qty", "ord_type",
            "limit_price", "stop_price", "session", "policy_version", "state", "sent_at"])

    def decisions(self) -> pl.DataFrame:
        """Each order's decision as the outbox keeps it (clordid, decision: the JSON of the decision's rows that
        approved it, risk checks and compliance rules)."""
        rows = self._run("SELECT clordid, decision FROM {p}outbox ORDER BY entry_id")
        return pl.DataFrame(rows, orient="row", schema={"clordid": pl.String, "decision": pl.String})

    def status(self) -> pl.DataFrame:
        """Every outbox entry with its latest execution state (OrdStatus, cumulative and average fill)."""
        rows = self._run(
            "SELECT o.entry_id, o.clordid, o.strategy, o.symbol, o.side, o.qty, o.ord_type, o.limit_price, o.state, "
            "e.ord_status, e.cum_qty, e.avg_px, e.text FROM {p}outbox o LEFT JOIN {p}executions e ON e.seq = "
            "(SELECT max(seq) FROM {p}executions x WHERE x.order_clordid = o.clordid AND x.msg_type = '8' "
            f"AND {_NOT_A_DUPLICATES_REJECT}) "
            "ORDER BY o.entry_id")
        return pl.DataFrame(rows, orient="row", infer_schema_length=None, schema=[
            "entry_id", "clordid", "strategy", "symbol", "side", "qty", "ord_type", "limit_price", "state",
            "ord_status", "cum_qty", "avg_px", "text"])


def _check_journal(into: str) -> None:
    if into not in JOURNALS:
        raise OutboxError(f"no journal {into!r}: {', '.join(JOURNALS)}")


def _for_session(session: str | None) -> tuple[str, tuple]:
    if session is None:
        return "", ()
    if session not in SESSIONS:
        raise OutboxError(f"session {session!r} is not paper or live")
    return " AND session = ?", (session,)


def _text_time(value):
    return value.isoformat(sep=" ") if isinstance(value, datetime) else value


def sqlite_outbox(path: str | Path, *, synchronous: str = "full") -> Outbox:
    """The embedded tier's outbox: a SQLite file in WAL mode (created on first use), with ``synchronous`` FULL
    (the default) or NORMAL (``EMP_OUTBOX_SYNC=normal``).

    FULL syncs the log to disk at every commit: a committed submit, cancel request or journal group survives a
    crash of the process, of the OS, or power loss. NORMAL keeps every commit across a crash of the process
    (SIGKILL included: WAL mode hands the transaction to the OS before the commit returns) but not across an
    OS crash or power loss, which can take the last commits back. The journal recovers from that (a group and
    its high-water mark go together, and the executor asks the venue again for whatever is past the mark); an
    order submitted or a cancel requested in those last moments, and drop-copy rows, are lost. NORMAL saves a
    disk flush per commit (``benchmarks/bench_fix.py --sync``; the journal's group commit already shares one
    flush among many reports)."""
    if synchronous.lower() not in ("normal", "full"):
        raise OutboxError(f"synchronous {synchronous!r}: choose normal or full")
    mode = synchronous.upper()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def connect():
        con = sqlite3.connect(path, timeout=30, isolation_level="DEFERRED", check_same_thread=True)
        _wal(con, path)
        con.execute(f"PRAGMA synchronous={mode}")
        con.execute("PRAGMA foreign_keys=ON")
        return con

    with connect() as con:
        con.executescript(_SQLITE_DDL + "".join(_SQLITE_JOURNAL_DDL.format(name=n) for n in JOURNALS))
    con.close()
    return Outbox(connect, prefix="", placeholder="?", location=str(path), serialize_writes=True)


def _wal(con: sqlite3.Connection, path: Path, timeout: float = 30.0) -> None:
    """Put the file in WAL mode (it stays so). Switching takes an exclusive lock and SQLite does not wait for
    it (no busy timeout): two processes opening a new outbox at once would see "database is locked", so the
    switch is retried until ``timeout``, and skipped when the file is in WAL mode already."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise OutboxError(f"{path}: cannot put the outbox in WAL mode: {exc}") from exc
            time.sleep(0.01)


def postgres_outbox(url: str) -> Outbox:
    """The institutional tier's outbox: the ``trading`` schema (migrated on first use)."""
    import psycopg

    from emp_core.store.migrations import migrate

    migrate(url)

    def connect():
        return psycopg.connect(url, connect_timeout=10)

    return Outbox(connect, prefix="trading.", placeholder="%s", location=url.rsplit("@", 1)[-1])


def open_outbox(cfg=None) -> Outbox:
    """The tier's outbox (``EMP_TIER``): ``$EMP_HOME/outbox.sqlite`` or PostgreSQL's ``trading`` schema."""
    from emp_core.config import settings

    cfg = cfg or settings()
    if cfg.tier == "institutional":
        return postgres_outbox(cfg.pg_url)
    return sqlite_outbox(cfg.home / "outbox.sqlite", synchronous=cfg.outbox_sync)


def as_dict(order: ApprovedOrder) -> dict:
    return {**asdict(order), "clordid": order.clordid}

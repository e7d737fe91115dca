"""``emp executor``: the sidecar that sends risk-approved orders over FIX 4.4 and journals every report.

A long-running process, not a Dagster op. It reads the outbox (:mod:`emp_core.execution.outbox`), sends each
approved order as a NewOrderSingle and each cancel request as an OrderCancelRequest on a quickfix initiator
session (any standard FIX 4.4 acceptor: the session comes from a QuickFIX settings file), and writes every
ExecutionReport and OrderCancelReject it receives to the execution journal.

**Exactly once, across crashes.** The ClOrdID is a function of the outbox entry, and two records decide what
has been sent:

1. quickfix's FileStore: ``Session::send`` stores a message under its sequence number *before* it writes it to
   the socket. A message in the store has been sent, or will be: after a reconnect the venue asks for the
   sequence numbers it missed (ResendRequest) and quickfix sends them again from the store, flagged
   PossDupFlag=Y (the venue then re-reports instead of creating a second order).
2. the outbox's ``state``: marked ``sent`` after quickfix has stored the message.

A crash between 1 and 2 leaves an order stored but not marked. So at start, before its session starts, the
executor reads the session's FileStore and marks every order (and cancel) found there as sent; only the
rest is sent. Only orders approved for the session's kind are sent (``EmpSessionKind`` in the settings:
paper or live; unmarked is live), so an order approved for paper trading never reaches a live counterparty.
An order is therefore handed to quickfix once, whatever the moment of the crash; the venue's
duplicate-ClOrdID check is a second guard, never the first.

**Every report journaled, in group commits.** quickfix advances its expected incoming sequence number when
``fromApp`` returns, and a counterparty resends only what that number says is missing. Committing each report
inside the callback ties the two together, but costs a disk flush per report (the largest cost of a round
trip here, and a bound on throughput well under the floor's message rate: ``benchmarks/bench_fix.py``). So
the journal keeps its own mark instead: ``fromApp`` queues the report with its MsgSeqNum and returns, and one
thread (``JournalWriter``) commits everything queued in one transaction together with the journal's
high-water mark (``journal_cursor``: the sequence number after the last message it accounts for, in the
epoch of quickfix's store). Under load one flush carries many reports; alone, a report waits only for its
own commit. Messages that are not journaled move the mark too, in the same queue: the admin messages quickfix
hands over in sequence (a SequenceReset to its NewSeqNo) and the application messages refused; after a clean
``stop()`` the mark is the store's own number. So every message below the mark is journaled or was refused
on purpose.

At start, on the created session and before it connects (``rewind``), the executor compares the mark with
quickfix's store: when the store is ahead (reports received, acknowledged at the FIX level, not committed
before a crash), it winds the store's expected number back to the mark, so the Logon exchange finds the gap
and the counterparty resends those reports (PossDupFlag=Y), which the journal keeps once (keyed by session
and ExecID). The journal, not quickfix's sequence-number file, decides what is asked for again, so this also
holds when the machine loses power and the two files reach the disk in no order. The epoch is the store's
creation time and the nanosecond modification time of the file that keeps it (rewritten only at a reset): a
mark from another epoch says nothing of this one, and the executor asks from 1; so it does with no mark at
all, unless the journal holds reports of the session from before marks existed (each was committed before
quickfix acknowledged it: the store is right). A mark ahead of the store needs nothing (quickfix asks from its
own number). A settings file with ``ResetOnLogon``, ``ResetOnLogout`` or ``ResetOnDisconnect`` = Y is refused:
a reset would drop what the mark asks for. If the counterparty resets the numbers at the Logon after a
rewind, the reports asked for will not come: a ``journal_gap`` event says so (check those orders with the
venue). Like any FIX client, this relies on the counterparty resending the reports it is asked for with their
ExecIDs unchanged; one that gap-fills over application messages loses them here as it would anywhere.

**Journal failure: fail-stop.** If the journal cannot take a group (the database locked past its timeout, a
full disk, PostgreSQL gone), nothing more is committed (the mark stays before the failed group) and the
executor ends its process (``os._exit``, exit code 70, after the ``journal_failed`` and ``fail_stop`` events);
on restart the rewind asks for the reports again. ``on_journal_failure`` replaces this (a test, or an
embedding process that must not die): if it returns, the writer commits nothing more (a later report raises
``JournalFailed``), the executor stops sending, logs the session out and ``run()`` returns, and ``health()``
shows ``journal_failed``. The reports acknowledged meanwhile are past the mark: the next start asks for them.

**At most ``max_in_flight`` orders unanswered** (256 by default). ``pump`` sends an order only while fewer than
that await their first report, and a report that frees a place wakes ``run()`` at once. Without it a burst (a
rebalance, a backlog after an outage) is written to the venue as fast as the executor can, and when both sides
write faster than the other reads, both block in ``send`` with their receive buffers full; on loopback TCP then
sat in retransmission backoff and the session stalled for tens of seconds (seen in ``benchmarks/bench_fix.py``,
one burst in three: ``ss`` showed both sockets' queues full, bytes retransmitted and a 13 s RTO; gdb showed the
venue's thread blocked in quickfix's ``send``). An order unanswered for ``in_flight_seconds`` (10) stops
counting, with an ``unanswered_order`` event: a venue that lost one does not block the rest.

**Reconnects, with backoff.** quickfix's initiator reconnects every ``ReconnectInterval`` seconds, a fixed
interval with no setter. ``run()`` adds an exponential backoff on top (``Backoff``; ``backoff=None`` keeps the
fixed interval): quickfix keeps its own fixed-interval attempts for the first ``patience`` of an outage (2 x
``ReconnectInterval`` by default), so a short drop reconnects as fast as before. If the session is still down
then, ``run()`` stops the initiator and starts it again after a growing delay (``first``, then x ``factor``
per attempt, at most ``cap`` seconds, each drawn uniformly from [(1 - ``jitter``) d, d]); a started
initiator connects at once, and is given ``attempt_seconds`` (longer while a Logon awaits its answer) before
it is stopped again, less than quickfix's next own attempt. A Logon resets the delay. This keeps the
crash-recovery guarantees: stopping and starting the initiator is what a restart of the process does,
minus the process (the FileStore is closed, then reopened with its sequence numbers and stored messages; no
reset is configured on logout or disconnect), nothing is sent while the session is not logged on (``pump``
checks), and the stop and start happen on ``run()``'s thread between two pumps, never in the middle of a
batch, under a lock ``stop()`` also takes (so no start can follow a ``stop()``). Only ``run()`` backs off: an
executor driven by ``pump()`` alone keeps quickfix's fixed interval.

**Logon refused.** A Logout received after our Logon and before the counterparty's (``sentLogon`` and not
``receivedLogon``: bad credentials, an unknown session, sequence numbers the venue will not accept) is a
refused logon: logged as the JSON event ``logon_rejected`` with the counterparty's Text (any occurrence of
our password in it masked), kept in ``health()["last_logon_error"]`` (with ``logon_rejections``, their
number), and ``logon_rejected`` (an Event) is set; ``emp executor`` stops on it. The executor itself keeps
trying (with its backoff), in case the counterparty is fixed.

**Session-level events.** Also logged: ``resend_request`` (we ask for a gap), ``resend_request_received``,
``sequence_reset`` (a SequenceReset received: GapFill over admin messages or a reset), ``session_reject`` (the
counterparty refused one of our messages at session level, 35=3: it never reached its application),
``reject_sent`` (we refused one of its messages: a report in it is not journaled, and is not asked for again) and
``business_reject`` (35=j). A message that fails FIX44.xml is answered by quickfix with a Reject (35=3); an
application message other than an ExecutionReport or OrderCancelReject with a BusinessMessageReject (35=j); a
garbled frame is dropped; none of them ends the session or reaches the journal.

**Logs and health.** Logs are one JSON object per line; the settings are logged through
``SessionConfig.public()`` (passwords and other secrets masked), and no event carries a Logon's fields. A small
HTTP endpoint on loopback (``--health-port``) answers ``GET /health`` with the session state, the outbox depth,
the number sent and received, the reports journaled and those still queued for the journal
(``journal_pending``), the orders awaiting a first report (``in_flight``), the age of the last report, the
last refused logon and the backoff state.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import quickfix as qf

from emp_core.clock import utcnow
from emp_core.execution.fix import (
    BEGIN_STRING,
    CancelReject,
    CancelRequest,
    ExecReport,
    FixApplication,
    FixError,
    FixMessageError,
    FixSession,
    NewOrder,
    OrdType,
    Side,
    field_view,
    get_field,
    header_flag,
    msg_type,
    parse,
)
from emp_core.execution.outbox import Outbox

log = logging.getLogger("emp.execution.executor")

_SOH = "\x01"
_FIELD = re.compile(r"(?:^|\x01)(\d+)=([^\x01]*)")


def stored_messages(store_dir: Path, sender: str, target: str) -> list[str]:
    """The raw messages quickfix's FileStore holds for the session sender -> target, in sequence order.

    The store is ``<BeginString>-<SenderCompID>-<TargetCompID>.body`` (the messages, back to back) with its
    index ``.header`` ("seq,offset,size " per message). A message cut short by a crash mid-write has no
    complete index entry, or an entry past the body's end: it is left out (it was never on the wire)."""
    stem = f"{BEGIN_STRING}-{sender}-{target}"
    header, body = Path(store_dir) / f"{stem}.header", Path(store_dir) / f"{stem}.body"
    if not header.exists() or not body.exists():
        return []
    data = body.read_bytes()
    out = {}
    for entry in header.read_text().split():
        parts = entry.split(",")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            continue
        seq, offset, size = (int(p) for p in parts)
        if offset + size <= len(data):
            out[seq] = data[offset:offset + size].decode("latin-1")
    return [out[k] for k in sorted(out)]


def fields(raw: str) -> dict[str, str]:
    """A raw FIX message's fields by tag (the first occurrence of each)."""
    found: dict[str, str] = {}
    for tag, value in _FIELD.findall(raw):
        found.setdefault(tag, value)
    return found


def sent_ids(store_dir: Path, sender: str, target: str) -> tuple[set[str], set[str]]:
    """(ClOrdIDs of the NewOrderSingles, ClOrdIDs of the OrderCancelRequests) in the session's store."""
    orders, cancels = set(), set()
    for raw in stored_messages(store_dir, sender, target):
        f = fields(raw)
        if f.get("35") == "D" and "11" in f:
            orders.add(f["11"])
        elif f.get("35") == "F" and "11" in f:
            cancels.add(f["11"])
    return orders, cancels


def journal_row(message, session: str) -> dict:
    """The journal's row for a received ExecutionReport or OrderCancelReject."""
    if isinstance(message, ExecReport):
        return {"session": session, "exec_id": message.exec_id, "order_id": message.order_id,
                "clordid": message.cl_ord_id, "orig_clordid": message.orig_cl_ord_id, "msg_type": "8",
                "exec_type": message.exec_type, "ord_status": message.ord_status, "symbol": message.symbol,
                "side": message.side, "order_qty": message.order_qty, "last_qty": message.last_qty,
                "last_px": message.last_px, "cum_qty": message.cum_qty, "leaves_qty": message.leaves_qty,
                "avg_px": message.avg_px, "text": message.text, "transact_time": message.transact_time,
                "reject_reason": None if message.ord_rej_reason is None else str(message.ord_rej_reason)}
    return {"session": session, "exec_id": f"CXLREJ:{message.cl_ord_id}", "order_id": message.order_id,
            "clordid": message.cl_ord_id, "orig_clordid": message.orig_cl_ord_id, "msg_type": "9",
            "ord_status": message.ord_status, "text": message.text,
            "reject_reason": None if message.cxl_rej_reason is None else str(message.cxl_rej_reason)}


class LogonRejected(FixError):
    """The counterparty refused the executor's Logon; the message names the session and gives its reason."""


@dataclass(frozen=True)
class Backoff:
    """Reconnect backoff for ``Executor.run()`` (module docstring). ``first`` and ``patience`` default to 2 x
    the session's ``ReconnectInterval``."""

    first: float | None = None  # seconds before the first restart
    factor: float = 2.0
    cap: float = 60.0  # no delay is longer
    jitter: float = 0.2  # a delay d is drawn uniformly from [(1 - jitter) d, d]
    patience: float | None = None  # how long quickfix's own fixed-interval attempts are left alone
    attempt_seconds: float = 0.5  # how long a restarted initiator is given to connect (more while logging on)

    def __post_init__(self) -> None:
        if not (self.factor >= 1 and self.cap > 0 and 0 <= self.jitter < 1 and self.attempt_seconds > 0
                and (self.first is None or self.first > 0) and (self.patience is None or self.patience >= 0)):
            raise FixError(f"{self}: needs factor >= 1, cap > 0, 0 <= jitter < 1, attempt_seconds > 0, "
                           "first > 0 and patience >= 0")

    def delay(self, attempt: int, first: float, rng: random.Random) -> float:
        """The wait before restart number ``attempt`` (0 for the first)."""
        nominal = min(self.cap, first * self.factor ** min(attempt, 64))
        return nominal * (1.0 - self.jitter * rng.random())


@dataclass
class Counters:
    sent: int = 0
    cancels_sent: int = 0
    received: int = 0
    journaled: int = 0
    recovered: int = 0
    last_report_monotonic: float | None = None
    errors: list[str] = field(default_factory=list)


class _App(FixApplication):
    def __init__(self, executor: Executor) -> None:
        super().__init__()
        self.executor = executor

    def on_logon(self, session_id):
        ex = self.executor
        epoch = store_epoch(ex.store_dir, ex.sender, ex.target)  # a Logon may have reset the numbers
        if ex.rewound is not None and epoch != ex.store_epoch and not ex._gap_reported:
            ex._gap_reported = True  # the reports asked for again will not come: say so
            ex.event("journal_gap", session=ex.session_name, from_seq=ex.rewound[1], to_seq=ex.rewound[0] - 1,
                     reason="the sequence numbers were reset at logon before the reports past the journal's "
                            "mark were resent; check the orders' state with the venue")
        ex.store_epoch = epoch
        ex._logon_seen.set()
        ex._wake.set()  # send what waits at once
        self.executor.event("logon", session=str(session_id))

    def on_logout(self, session_id):
        self.executor.event("logout", session=str(session_id))

    def to_admin(self, message, session_id):
        kind, f = msg_type(message), fields(message.toString())
        if kind == "2":
            self.executor.event("resend_request", begin_seq=_int(f.get("7")), end_seq=_int(f.get("16")))
        elif kind == "3":  # quickfix refused one of the venue's messages: a report in it is never journaled
            self.executor.event("reject_sent", ref_seq=_int(f.get("45")), ref_msg_type=f.get("372"),
                                ref_tag=_int(f.get("371")), reason=_int(f.get("373")), text=f.get("58"))

    def from_admin(self, message, session_id):
        kind, f = msg_type(message), fields(message.toString())
        ex = self.executor
        if kind == "5":
            session = qf.Session.lookupSession(session_id)
            if session is not None and session.sentLogon() and not session.receivedLogon():
                ex._logon_rejected(f.get("58"))
        elif kind == "2":
            ex.event("resend_request_received", begin_seq=_int(f.get("7")), end_seq=_int(f.get("16")))
        elif kind == "4":
            ex.event("sequence_reset", seq=_int(f.get("34")), new_seq=_int(f.get("36")),
                     gap_fill=f.get("123") == "Y", poss_dup=f.get("43") == "Y")
        elif kind == "3":
            ex.event("session_reject", ref_seq=_int(f.get("45")), ref_msg_type=f.get("372"),
                     ref_tag=_int(f.get("371")), reason=_int(f.get("373")), text=f.get("58"))
        # The mark passes admin messages quickfix hands over in sequence (Heartbeat, TestRequest, ResendRequest,
        # Reject; a SequenceReset moves it to its NewSeqNo), so a clean restart has nothing to ask for again.
        # Not a Logon or a Logout: quickfix hands those over even when their number is ahead of the expected one.
        seq = _int(f.get("34"))
        if kind in ("0", "1", "2", "3") and seq:
            ex.journal.mark(seq + 1, ex.store_epoch)
        elif kind == "4" and _int(f.get("36")):
            ex.journal.mark(_int(f.get("36")), ex.store_epoch)

    def from_app(self, message, session_id):
        message = field_view(message)  # read once from the wire string (quickfix reads it if it holds data)
        ex = self.executor
        header = message.getHeader()
        seq = _int(header.getField(34)) if header.isSetField(34) else None
        kind = msg_type(message)
        if kind == "j":  # logged, never answered (a reject of a reject would not end)
            if seq:  # processed and not journaled: the mark passes it
                ex.journal.mark(seq + 1, ex.store_epoch)
            ref_type, ref_id = get_field(message, 372), get_field(message, 379)
            ex.event("business_reject", ref_seq=_int(get_field(message, 45)), ref_msg_type=ref_type, ref_id=ref_id,
                     reason=_int(get_field(message, 380)), text=get_field(message, 58))
            if ref_type == NewOrder.MSG_TYPE and ref_id:  # an order refused: no report will come
                ex._answered(ref_id)
            return
        try:
            row = self._journal_row(message, kind)
        except qf.FIXException:  # refused (quickfix answers it and advances): the mark passes it too
            if seq:
                ex.journal.mark(seq + 1, ex.store_epoch)
            raise
        ex.journal.add(row, seq, ex.store_epoch, header_flag(message, 43))  # committed in a group
        with ex.lock:
            ex.counters.received += 1
            ex.counters.last_report_monotonic = time.monotonic()
        ex._answered(row["orig_clordid"] or row["clordid"])


    def _journal_row(self, message, kind: str) -> dict:
        """The journal's row for a report; a message it cannot be is refused with quickfix's own exception."""
        ex = self.executor
        if kind not in (ExecReport.MSG_TYPE, CancelReject.MSG_TYPE):
            raise qf.UnsupportedMessageType()  # quickfix answers with a BusinessMessageReject (35=j)
        try:
            parsed = parse(message)
        except FixMessageError as exc:  # never swallowed (quickfix would advance past it): rejected, visibly
            ex.event("unparseable_report", error=str(exc), tag=exc.tag)
            raise qf.IncorrectTagValue(exc.tag or 0) from None
        row = journal_row(parsed, ex.session_name)
        for tag, column in ((17, "exec_id"), (11, "clordid"), (39, "ord_status")):
            if not row.get(column):  # a report the journal cannot key: refused visibly, never swallowed
                ex.event("unjournalable_report", missing=tag)
                raise qf.FieldNotFound(tag)
        return row


class JournalWriter:
    """The journal's group commit (module docstring, "Every report journaled"): ``add`` queues a report with
    its sequence number and store epoch, ``mark`` a message that is not journaled (an admin message, a report
    refused) so the high-water mark passes it too; both return at once. One thread commits everything queued
    in one transaction, with the mark after the last entry (``Outbox.record(cursor=)``), then takes what
    queued meanwhile: under load a commit carries many reports; alone, a report waits only for its own commit.
    Entries are committed in the order quickfix processed their messages, so every message below the mark has
    been journaled (or deliberately not).

    A commit that fails is the end: ``on_failure`` is called (fail-stop by default), and if it returns nothing
    more is committed (``add`` raises ``JournalFailed``), so the mark never passes a report the journal does
    not hold. ``max_pending`` bounds the queue: ``add`` waits while it is full."""

    def __init__(self, outbox: Outbox, session: str, *, on_failure, on_commit=None, event=None,
                 max_pending: int = 50_000) -> None:
        self.outbox, self.session, self.on_failure = outbox, session, on_failure
        self.on_commit = on_commit or (lambda new, duplicates: None)
        self.event = event or (lambda name, **values: None)
        self.max_pending = max_pending
        self._queue: list[tuple[dict | None, int, str, bool]] = []  # (report or None, mark after it, epoch, dup)
        self._cond = threading.Condition()
        self._added = self._committed = 0
        self._closing = False
        self.failed: BaseException | None = None
        self.commits = 0
        self._thread = threading.Thread(target=self._loop, name="executor-journal", daemon=True)
        self._thread.start()

    def add(self, row: dict, seq: int | None, epoch: str, poss_dup: bool = False) -> None:
        """Queue report ``row``, received as message ``seq`` of ``epoch`` (the mark after it: ``seq + 1``; a
        report without a number leaves the mark where it is)."""
        self._put(row, seq + 1 if seq else 0, epoch, poss_dup)

    def mark(self, next_seq: int, epoch: str) -> None:
        """Queue a move of the mark to ``next_seq`` (a message processed and not journaled)."""
        self._put(None, next_seq, epoch, False)

    def _put(self, row: dict | None, next_seq: int, epoch: str, poss_dup: bool) -> None:
        with self._cond:
            while len(self._queue) >= self.max_pending and self.failed is None and not self._closing:
                self._cond.wait()
            if self.failed is not None or self._closing:
                what = f"report {row.get('exec_id')}" if row else f"mark {next_seq}"
                why = f"failed earlier ({self.failed})" if self.failed is not None else "is closed"
                raise JournalFailed(f"the journal {why}: {what} not journaled")
            self._queue.append((row, next_seq, epoch, poss_dup))
            self._added += 1
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def pending(self) -> int:
        """Entries queued or being committed."""
        with self._cond:
            return self._added - self._committed

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every entry added so far is committed (or the journal failed); whether they were."""
        with self._cond:
            target = self._added
            self._cond.wait_for(lambda: self._committed >= target or self.failed is not None, timeout)
            return self._committed >= target and self.failed is None

    def close(self, timeout: float = 30.0) -> bool:
        """Commit what is queued, then end the thread; whether everything queued was committed."""
        done = self.flush(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        return done

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
                self._cond.notify_all()  # room in the queue
            try:
                new, duplicates = self._commit(batch)
            except Exception as exc:  # nothing more is committed: the mark stays before this batch
                with self._cond:
                    self.failed = exc
                    self._cond.notify_all()
                first = next((b[0] for b in batch if b[0] is not None), {})
                self.event("journal_failed", entries=len(batch), clordid=first.get("clordid"),
                           exec_id=first.get("exec_id"), error=f"{type(exc).__name__}: {exc}")
                self.on_failure(exc)
                return
            try:
                self.on_commit(new, duplicates)
            except Exception:  # counters and events only: the commit stands, the thread goes on
                log.exception("journal: on_commit failed")
            with self._cond:
                self._committed += len(batch)
                self.commits += 1
                self._cond.notify_all()

    def _commit(self, batch: list[tuple[dict | None, int, str, bool]]) -> tuple[int, list[dict]]:
        """One transaction: the batch's reports and the mark after its last entry; (how many were new, the
        resent reports (PossDupFlag) the journal held already)."""
        rows = [b[0] for b in batch if b[0] is not None]
        resent = [b[0] for b in batch if b[0] is not None and b[3]]
        held = self.outbox.known(self.session, [r["exec_id"] for r in resent]) if resent else set()
        last = next((b for b in reversed(batch) if b[1] >= 1), None)
        new = self.outbox.record(rows, cursor=(self.session, last[2], last[1]) if last else None)
        return new, [r for r in resent if r["exec_id"] in held]


class JournalFailed(FixError):
    """The journal could not commit a report; nothing after it is journaled (``JournalWriter``)."""


def _store_file(store_dir: Path, sender: str, target: str, suffix: str) -> Path:
    return Path(store_dir) / f"{BEGIN_STRING}-{sender}-{target}.{suffix}"


def store_epoch(store_dir: Path, sender: str, target: str) -> str:
    """The epoch quickfix's FileStore counts the session's sequence numbers in: the creation time it keeps (its
    ``.session`` file, to the second) and that file's modification time in nanoseconds (it is rewritten only
    when the store is created or reset: a ResetSeqNumFlag, a daily session's end). "" before the store
    exists. A store copied elsewhere gets a new epoch (the executor then asks for the whole epoch again)."""
    path = _store_file(store_dir, sender, target, "session")
    try:
        return f"{path.read_text().strip()}@{path.stat().st_mtime_ns}"
    except FileNotFoundError:
        return ""


def store_next_target(store_dir: Path, sender: str, target: str) -> int | None:
    """The incoming sequence number quickfix's FileStore expects next (its ``.seqnums`` file: "sender :
    target"), or None when there is none."""
    try:
        text = _store_file(store_dir, sender, target, "seqnums").read_text()
    except FileNotFoundError:
        return None
    parts = text.split(":")
    return int(parts[1]) if len(parts) == 2 and parts[1].strip().isdigit() else None


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


JOURNAL_FAILURE_EXIT = 70  # EX_SOFTWARE


def fail_stop(exc: BaseException) -> None:
    """End the process at once (exit 70): the journal could not commit a group, and the mark stays before it, so
    the next start asks the venue for those reports again (module docstring, "Journal failure")."""
    log.critical(json.dumps({"event": "fail_stop", "at": utcnow().isoformat(), "exit": JOURNAL_FAILURE_EXIT,
                             "error": f"{type(exc).__name__}: {exc}"}))
    logging.shutdown()
    os._exit(JOURNAL_FAILURE_EXIT)


class Executor:
    """Send the outbox over one FIX initiator session and journal what comes back (module docstring).
    ``backoff``: the reconnect backoff ``run()`` applies (None: quickfix's fixed ``ReconnectInterval`` only)."""

    def __init__(self, settings: Path | str, outbox: Outbox, *, batch: int = 200, poll_seconds: float = 0.02,
                 health_port: int | None = None, backoff: Backoff | None = Backoff(),
                 on_journal_failure=None, max_in_flight: int = 256, in_flight_seconds: float = 10.0) -> None:
        self.outbox = outbox
        self.on_journal_failure = on_journal_failure or fail_stop
        self.app = _App(self)
        self.fix = FixSession(settings, self.app, role="initiator")
        config = self.fix.settings.sessions[0]
        self.sender, self.target = config.sender, config.target
        self.session_name = f"{self.sender}->{self.target}"
        self.kind = config.session_kind  # paper or live: only orders approved for this kind are sent
        self.store_dir = Path(config.get("FileStorePath") or ".")
        self.batch, self.poll_seconds, self.health_port = batch, poll_seconds, health_port
        if max_in_flight < 1 or in_flight_seconds <= 0:
            raise FixError(f"max_in_flight={max_in_flight}, in_flight_seconds={in_flight_seconds}: need >= 1 and > 0")
        self.max_in_flight, self.in_flight_seconds = max_in_flight, in_flight_seconds
        self._in_flight: dict[str, float] = {}  # ClOrdID -> when sent, until its first report (module docstring)
        self._window_full = False
        self._wake = threading.Event()  # run() waits on it between pumps: a report freeing the window, stop()
        self.counters = Counters()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._health: ThreadingHTTPServer | None = None
        self._password = config.password  # masked in any text the counterparty sends back
        self.logon_rejected = threading.Event()  # set by the first refused logon (module docstring)
        self.last_logon_error: dict | None = None
        self.logon_rejections = 0
        # reconnect backoff, driven by run() (module docstring)
        self.backoff = backoff
        interval = float(config.get("ReconnectInterval") or 30)
        self._first_delay = backoff.first if backoff and backoff.first is not None else 2.0 * interval
        self._patience = backoff.patience if backoff and backoff.patience is not None else 2.0 * interval
        self._rng = random.Random()
        self._engine_lock = threading.Lock()  # the backoff's stop/start against stop()
        self._logon_seen = threading.Event()
        self._down_since: float | None = None
        self._restart_at: float | None = None
        self._attempt = 0  # restarts since the last logon
        for key in ("ResetOnLogon", "ResetOnLogout", "ResetOnDisconnect"):
            if (config.get(key) or "N").upper() == "Y":
                raise FixError(f"{self.fix.settings.path}: {key}=Y: the executor needs its sequence numbers "
                               "kept (a reset would drop reports the journal has not committed yet); set N")
        self.store_epoch = store_epoch(self.store_dir, self.sender, self.target)
        self.journal = self._new_journal()
        self.journal_error: str | None = None
        self.rewound: tuple[int, int] | None = None  # (quickfix's expected number, the journal's) at start
        self._gap_reported = False

    # -- logging ----------------------------------------------------------------------------------------------
    def event(self, name: str, **values) -> None:
        log.info(json.dumps({"event": name, "at": utcnow().isoformat(), **values}, default=str))

    def _logon_rejected(self, text: str | None) -> None:
        reason = " ".join((text or "no reason given (a Logout without Text)").split())
        if self._password:
            reason = reason.replace(self._password, "***")
        with self.lock:
            self.logon_rejections += 1
            self.last_logon_error = {"at": utcnow().isoformat(), "reason": reason}
        self.event("logon_rejected", session=self.session_name, reason=reason)
        self.logon_rejected.set()

    def logon_error(self) -> LogonRejected | None:
        """The last refused logon as an error naming the session and the counterparty's reason, or None."""
        with self.lock:
            last = self.last_logon_error
        if last is None:
            return None
        return LogonRejected(f"session {self.session_name}: logon rejected by {self.target}: {last['reason']}")

    def _new_journal(self) -> JournalWriter:
        return JournalWriter(self.outbox, self.session_name, on_failure=self._journal_failed,
                             on_commit=self._committed, event=self.event)

    def _committed(self, new: int, duplicates: list[dict]) -> None:
        with self.lock:
            self.counters.journaled += new
        for r in duplicates:
            self.event("duplicate_report", exec_id=r.get("exec_id"), clordid=r.get("clordid"))

    # -- the steps --------------------------------------------------------------------------------------------
    def recover(self) -> int:
        """Mark as sent every order and cancel the session's FileStore holds (module docstring); returns how
        many orders were marked. Runs before the session starts, so nothing is sent meanwhile."""
        orders, cancels = sent_ids(self.store_dir, self.sender, self.target)
        marked = self.outbox.mark_sent(sorted(orders))  # only those still approved change
        self.outbox.mark_cancels_sent(sorted(cancels))
        self.counters.recovered = marked
        self.event("recovered", stored_orders=len(orders), marked=marked, stored_cancels=len(cancels))
        return marked

    def rewind(self) -> tuple[int, int] | None:
        """Wind quickfix's expected incoming sequence number back to the journal's high-water mark when the
        store is ahead of it (module docstring, "Every report journaled"): reports received but not committed
        before a crash are then asked for again at logon. Runs on the created session, before it connects;
        returns (store's number, journal's) when it wound back.

        The mark of the store's epoch decides. A mark of another epoch says nothing of this one: ask from 1.
        No mark at all: from 1 too, unless the journal already holds reports of this session (written before
        the mark existed, each committed before quickfix acknowledged it: the store is right). A mark ahead of
        the store (a commit that landed just before quickfix advanced, a store file that lagged on a power
        loss) needs nothing: quickfix asks from its own, lower, number."""
        session = self.fix.session()
        self.store_epoch = store_epoch(self.store_dir, self.sender, self.target)
        mark = self.outbox.cursor(self.session_name)
        store_next = session.getExpectedTargetNum()
        if mark is not None and mark[0] == self.store_epoch:
            journal_next = mark[1]
        elif mark is None and self.outbox.journal_count(self.session_name):
            journal_next = store_next
        else:
            journal_next = 1
        if store_next <= journal_next:
            return None
        session.setNextTargetMsgSeqNum(journal_next)
        self.rewound = (store_next, journal_next)
        self.event("journal_rewind", session=self.session_name, store_next_seq=store_next,
                   journal_next_seq=journal_next, store_epoch=self.store_epoch)
        return self.rewound

    def _answered(self, clordid: str | None) -> None:
        """Order ``clordid`` has its first answer: its place in the window is free (module docstring)."""
        with self.lock:
            freed = self._in_flight.pop(clordid, None) is not None if clordid else False
        if freed and self._window_full:
            self._wake.set()

    def _journal_failed(self, exc: BaseException) -> None:
        """The journal failed (module docstring): ``on_journal_failure`` (fail-stop) and, if it returns, stop
        sending and log the session out, so that as few reports as possible are acknowledged unjournaled (the
        mark stays before them: a restart asks for them again)."""
        self.on_journal_failure(exc)
        self.journal_error = f"{type(exc).__name__}: {exc}"
        self._stop.set()
        self._wake.set()
        threading.Thread(target=self.fix.stop, kwargs={"logout_timeout": 1.0}, name="executor-journal-failed",
                         daemon=True).start()

    def pump(self) -> int:
        """Send a batch of approved orders and requested cancels; returns how many messages were sent. Nothing
        is sent before the session is logged on: quickfix would store it under a number after the Logon's, and
        the venue would notice the gap only at the next message it receives (a heartbeat: up to HeartBtInt
        later). A session lost in the middle of a batch is different: the next Logon carries the next number,
        so the venue asks for the stored ones at once."""
        if not self.fix.logged_on() or self.journal_error is not None:
            return 0
        room = self._room()
        entries = self.outbox.to_send(limit=min(self.batch, room), session=self.kind) if room else []
        self._window_full = len(entries) >= room
        for e in entries:
            with self.lock:
                self._in_flight[e.clordid] = time.monotonic()  # before the send: its report may come at once
            self.fix.send(NewOrder(cl_ord_id=e.clordid, symbol=e.symbol, side=Side.BUY if e.side == "buy" else
                                   Side.SELL, qty=float(e.qty), ord_type=OrdType.LIMIT if e.ord_type == "limit"
                                   else OrdType.MARKET, price=e.limit_price))
        self.outbox.mark_sent([e.clordid for e in entries])  # all stored by quickfix: a crash before this
        # commit is caught by recover()
        cancels = self.outbox.cancels_to_send(session=self.kind)
        for c in cancels:
            self.fix.send(CancelRequest(orig_cl_ord_id=c.orig_clordid, cl_ord_id=c.clordid, symbol=c.symbol,
                                        side=Side.BUY if c.side == "buy" else Side.SELL, qty=float(c.qty)))
        self.outbox.mark_cancels_sent([c.clordid for c in cancels])
        with self.lock:
            self.counters.sent += len(entries)
            self.counters.cancels_sent += len(cancels)
        return len(entries) + len(cancels)

    def _room(self) -> int:
        """How many more orders may be sent now (``max_in_flight`` less those awaiting their first report); an
        order unanswered for ``in_flight_seconds`` stops counting, with an ``unanswered_order`` event."""
        now = time.monotonic()
        with self.lock:
            stale = [c for c, at in self._in_flight.items() if now - at > self.in_flight_seconds]
            for c in stale:
                del self._in_flight[c]
            room = self.max_in_flight - len(self._in_flight)
        for c in stale:
            self.event("unanswered_order", clordid=c, seconds=self.in_flight_seconds)
        return max(0, room)

    def health(self) -> dict:
        with self.lock:
            c = self.counters
            age = None if c.last_report_monotonic is None else round(time.monotonic() - c.last_report_monotonic, 3)
            counts = {"sent": c.sent, "cancels_sent": c.cancels_sent, "received": c.received,
                      "journaled": c.journaled, "recovered": c.recovered}
            logon = {"last_logon_error": self.last_logon_error, "logon_rejections": self.logon_rejections}
        counts["journal_pending"] = self.journal.pending
        counts["in_flight"] = len(self._in_flight)
        counts["journal_failed"] = self.journal_error
        restart_at = self._restart_at
        backoff = {"restarts_since_logon": self._attempt,
                   "next_attempt_in_seconds": None if restart_at is None
                   else round(max(0.0, restart_at - time.monotonic()), 3)}
        return {"session": self.session_name, "session_kind": self.kind, "logged_on": self.fix.logged_on(),
                "outbox_depth": self.outbox.depth(self.kind),
                "last_report_age_seconds": age, **counts, **logon, "reconnect": backoff,
                "callback_errors": list(self.app.errors)}

    # -- running ------------------------------------------------------------------------------------------------
    def start(self) -> Executor:
        other = "live" if self.kind == "paper" else "paper"
        self.event("start", settings=self.fix.settings.sessions[0].public(), outbox=str(self.outbox),
                   session_kind=self.kind, waiting_for_other_kind={other: self.outbox.depth(other)})
        if self.journal.closed:  # started again after stop()
            self.journal = self._new_journal()
        self.recover()
        self.fix.start(before=self.rewind)
        if self.health_port is not None:
            self._serve_health()
        return self

    def run(self, *, until=None, max_seconds: float | None = None) -> None:
        """Pump until stopped (``stop()``, or ``until()`` true, or ``max_seconds`` elapsed), backing off
        between reconnects (module docstring)."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        while not self._stop.is_set():
            if until is not None and until():
                break
            if deadline is not None and time.monotonic() > deadline:
                break
            self.supervise()
            self._wake.clear()  # before the pump: a report freeing the window meanwhile is not missed
            if not self.pump():
                self._wake.wait(self.poll_seconds)

    def supervise(self) -> None:
        """One step of the reconnect backoff (``run()`` calls it between pumps; module docstring). Stopping the
        initiator takes up to a second (its thread sleeps in one-second steps), on this thread."""
        if self.backoff is None:
            return
        now = time.monotonic()
        with self._engine_lock:
            if self._stop.is_set():
                return
            if self._logon_seen.is_set():  # a logon since the last look, however short: start afresh
                self._logon_seen.clear()
                self._attempt, self._down_since = 0, None
            if self.fix.running:
                session = qf.Session.lookupSession(self.fix.session_ids[0])
                if session is None or session.isLoggedOn():
                    self._down_since = None
                    return
                if self._down_since is None:
                    self._down_since = now
                    return
                window = self._patience if self._attempt == 0 else self.backoff.attempt_seconds
                if session.sentLogon() or now - self._down_since < window:
                    return  # quickfix's own attempts, or ours, still have time; a Logon is awaiting its answer
                delay = self.backoff.delay(self._attempt, self._first_delay, self._rng)
                down = round(now - self._down_since, 3)
                self._attempt += 1
                self.fix.stop(logout_timeout=0)
                self._restart_at = time.monotonic() + delay
                self.event("reconnect_backoff", session=self.session_name, restart=self._attempt,
                           delay_seconds=round(delay, 3), down_seconds=down)
            elif self._restart_at is not None and now >= self._restart_at:
                self._restart_at = None
                self.fix.start()
                self._down_since = time.monotonic()
                self.event("reconnect_attempt", session=self.session_name, restart=self._attempt)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._health is not None:
            self._health.shutdown()
            self._health.server_close()
            self._health = None
        with self._engine_lock:  # no backoff restart after this
            self._restart_at = None
            self.fix.stop()
        if self.journal.close() and self.journal.failed is None:
            self._mark_clean_stop()
        self.event("stop", **{k: v for k, v in self.health().items() if k != "logged_on"})

    def _mark_clean_stop(self) -> None:
        """After a clean stop every message quickfix acknowledged went through the callbacks and is committed
        (or was refused on purpose): the mark may be the store's own number, so the next start asks for
        nothing again (a Logout, which the callbacks do not mark, is the usual last message)."""
        store_next = store_next_target(self.store_dir, self.sender, self.target)
        epoch = store_epoch(self.store_dir, self.sender, self.target)
        if store_next and epoch:
            try:
                self.outbox.record([], cursor=(self.session_name, epoch, store_next))
            except Exception as exc:  # the mark stays where the last group left it: a restart asks a little more
                self.event("journal_mark_failed", error=f"{type(exc).__name__}: {exc}")

    def __enter__(self) -> Executor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve_health(self) -> None:
        executor = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # the http.server API's name
                if self.path.rstrip("/") != "/health":
                    self.send_error(404, "only /health is served")
                    return
                body = json.dumps(executor.health()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # the executor's own log says what matters
                return

        self._health = ThreadingHTTPServer(("127.0.0.1", self.health_port), Handler)
        threading.Thread(target=self._health.serve_forever, name="executor-health", daemon=True).start()

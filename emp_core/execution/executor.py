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
rest is sent. An order is therefore handed to quickfix once, whatever the moment of the crash; the venue's
duplicate-ClOrdID check is a second guard, never the first.

**Every report journaled.** A report is journaled inside quickfix's ``fromApp`` callback, before it returns.
quickfix advances the incoming sequence number only after the callback returns, so a crash before the
journal's commit leaves the report unacknowledged at the FIX level and the venue sends it again after the
restart; a crash after the commit but before quickfix's advance makes the venue resend it too, and the
journal keeps it once (keyed by session and ExecID).

**Session.** Reconnects are quickfix's (``ReconnectInterval``); the executor itself backs off between start
attempts when the settings or the store cannot be opened. Logs are one JSON object per line; the settings
are logged through ``SessionConfig.public()`` (passwords and other secrets masked). A small HTTP endpoint on
loopback (``--health-port``) answers ``GET /health`` with the session state, the outbox depth, the number sent
and received, and the age of the last report.
"""

from __future__ import annotations

import json
import logging
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
    FixSession,
    NewOrder,
    OrdType,
    Side,
    header_flag,
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
        self.executor.event("logon", session=str(session_id))

    def on_logout(self, session_id):
        self.executor.event("logout", session=str(session_id))

    def from_app(self, message, session_id):
        parsed = parse(message)
        if not isinstance(parsed, ExecReport | CancelReject):
            raise qf.UnsupportedMessageType()
        ex = self.executor
        new = ex.outbox.record([journal_row(parsed, ex.session_name)])  # before quickfix advances its seq num
        with ex.lock:
            ex.counters.received += 1
            ex.counters.journaled += new
            ex.counters.last_report_monotonic = time.monotonic()
        if header_flag(message, 43) and not new:
            ex.event("duplicate_report", exec_id=getattr(parsed, "exec_id", None), clordid=parsed.cl_ord_id)


class Executor:
    """Send the outbox over one FIX initiator session and journal what comes back (module docstring)."""

    def __init__(self, settings: Path | str, outbox: Outbox, *, batch: int = 200, poll_seconds: float = 0.02,
                 health_port: int | None = None) -> None:
        self.outbox = outbox
        self.app = _App(self)
        self.fix = FixSession(settings, self.app, role="initiator")
        config = self.fix.settings.sessions[0]
        self.sender, self.target = config.sender, config.target
        self.session_name = f"{self.sender}->{self.target}"
        self.store_dir = Path(config.get("FileStorePath") or ".")
        self.batch, self.poll_seconds, self.health_port = batch, poll_seconds, health_port
        self.counters = Counters()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._health: ThreadingHTTPServer | None = None

    # -- logging ----------------------------------------------------------------------------------------------
    def event(self, name: str, **values) -> None:
        log.info(json.dumps({"event": name, "at": utcnow().isoformat(), **values}, default=str))

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

    def pump(self) -> int:
        """Send a batch of approved orders and requested cancels; returns how many messages were sent. Nothing
        is sent before the session is logged on: quickfix would store it under a number after the Logon's, and
        the venue would notice the gap only at the next message it receives (a heartbeat: up to HeartBtInt
        later). A session lost in the middle of a batch is different: the next Logon carries the next number,
        so the venue asks for the stored ones at once."""
        if not self.fix.logged_on():
            return 0
        entries = self.outbox.to_send(limit=self.batch)
        for e in entries:
            self.fix.send(NewOrder(cl_ord_id=e.clordid, symbol=e.symbol, side=Side.BUY if e.side == "buy" else
                                   Side.SELL, qty=float(e.qty), ord_type=OrdType.LIMIT if e.ord_type == "limit"
                                   else OrdType.MARKET, price=e.limit_price))
        self.outbox.mark_sent([e.clordid for e in entries])  # all stored by quickfix: a crash before this
        # commit is caught by recover()
        cancels = self.outbox.cancels_to_send()
        for c in cancels:
            self.fix.send(CancelRequest(orig_cl_ord_id=c.orig_clordid, cl_ord_id=c.clordid, symbol=c.symbol,
                                        side=Side.BUY if c.side == "buy" else Side.SELL, qty=float(c.qty)))
        self.outbox.mark_cancels_sent([c.clordid for c in cancels])
        with self.lock:
            self.counters.sent += len(entries)
            self.counters.cancels_sent += len(cancels)
        return len(entries) + len(cancels)

    def health(self) -> dict:
        with self.lock:
            c = self.counters
            age = None if c.last_report_monotonic is None else round(time.monotonic() - c.last_report_monotonic, 3)
            counts = {"sent": c.sent, "cancels_sent": c.cancels_sent, "received": c.received,
                      "journaled": c.journaled, "recovered": c.recovered}
        return {"session": self.session_name, "logged_on": self.fix.logged_on(), "outbox_depth": self.outbox.depth(),
                "last_report_age_seconds": age, **counts, "callback_errors": list(self.app.errors)}

    # -- running ------------------------------------------------------------------------------------------------
    def start(self) -> Executor:
        self.event("start", settings=self.fix.settings.sessions[0].public(), outbox=str(self.outbox))
        self.recover()
        self.fix.start()
        if self.health_port is not None:
            self._serve_health()
        return self

    def run(self, *, until=None, max_seconds: float | None = None) -> None:
        """Pump until stopped (``stop()``, or ``until()`` true, or ``max_seconds`` elapsed)."""
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        while not self._stop.is_set():
            if until is not None and until():
                break
            if deadline is not None and time.monotonic() > deadline:
                break
            if not self.pump():
                self._stop.wait(self.poll_seconds)

    def stop(self) -> None:
        self._stop.set()
        if self._health is not None:
            self._health.shutdown()
            self._health.server_close()
            self._health = None
        self.fix.stop()
        self.event("stop", **{k: v for k, v in self.health().items() if k != "logged_on"})

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

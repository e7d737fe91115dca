"""A minimal real quickfix initiator for tests: logs on to a FIX 4.4 acceptor on loopback, sends orders and
cancels, and collects what comes back (application and admin messages, raw as on the wire) for
``wait_for``. The same class is the drop-copy client (it then only listens).

``Relay`` is a TCP relay to put between an initiator and its acceptor: it forwards the bytes both ways, keeps
a copy of each direction (a wire tap, split into FIX frames by ``frames``) and injects raw bytes (a garbled
frame) into either direction. ``frame`` writes a raw FIX message with a correct or a broken checksum."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import quickfix as qf

from emp_core.execution.fix import (
    ORIG_SENDING_TIME,
    POSS_DUP_FLAG,
    POSS_RESEND,
    CancelReject,
    CancelRequest,
    ExecReport,
    FixApplication,
    FixSession,
    NewOrder,
    Received,
    format_time,
    header_flag,
    msg_type,
    now,
    parse,
    write_settings,
)


@dataclass(frozen=True)
class Other:
    """An application message the client does not parse (a BusinessMessageReject, say)."""

    msg_type: str


class Inbox:
    """Thread-safe, append-only list of received items with ``wait_for(predicate, timeout)``."""

    def __init__(self) -> None:
        self._items: list = []
        self._cond = threading.Condition()

    def put(self, item) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def items(self) -> list:
        with self._cond:
            return list(self._items)

    def wait_for(self, predicate: Callable[[list], object], timeout: float):
        """Wait until ``predicate(items)`` is truthy and return its value; AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate(list(self._items))
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout}s; received {len(self._items)} item(s): "
                                         f"{self._items[-5:]!r}")
                self._cond.wait(min(left, 0.2))


class _ClientApp(FixApplication):
    def __init__(self, client: FixClient) -> None:
        super().__init__()
        self.client = client

    def to_app(self, message, session_id):
        # quickfix's Session.send strips PossDupFlag/OrigSendingTime; a resend the test asks for is flagged here
        cl = message.getField(11) if message.isSetField(11) else None
        if cl is not None and cl in self.client.flag_poss_dup:
            header = message.getHeader()
            header.setField(qf.BoolField(POSS_DUP_FLAG, True))
            header.setField(ORIG_SENDING_TIME, format_time(now()))

    def from_app(self, message, session_id):
        raw = message.toString()
        kind = msg_type(message)
        parsed = parse(message) if kind in ("8", "9", "D", "F") else Other(kind)
        self.client.app.put(Received(parsed, raw, str(session_id), header_flag(message, POSS_DUP_FLAG),
                                     header_flag(message, POSS_RESEND), int(message.getHeader().getField(34))))

    def from_admin(self, message, session_id):
        self.client.admin.put((msg_type(message), message.toString()))

    def to_admin(self, message, session_id):
        self.client.sent_admin.put((msg_type(message), message.toString()))


class FixClient:
    """``FixClient(tmp_path / "client", port)`` then ``with client: ...`` (or start/stop).

    ``app`` holds ``Received`` items (parsed ExecReport / CancelReject / other app messages with the raw
    string and header flags), ``admin`` (MsgType, raw) for admin messages received, ``sent_admin`` for admin
    messages sent."""

    def __init__(self, directory: Path, port: int, *, sender: str = "EXECUTOR", target: str = "VENUE",
                 heartbeat: int = 30, credentials: tuple[str, str] | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        logins = {(sender, target): credentials} if credentials else None  # sent in the Logon (553/554)
        self.settings = write_settings(directory / "client.cfg", role="initiator", sessions=[(sender, target)],
                                       port=port, store_dir=directory / "store", log_dir=directory / "log",
                                       heartbeat=heartbeat, reconnect_interval=1, credentials=logins)
        self.app = Inbox()
        self.admin = Inbox()
        self.sent_admin = Inbox()
        self.flag_poss_dup: set[str] = set()
        self.fix = FixSession(self.settings, _ClientApp(self), role="initiator")
        self.session_id = self.fix.session_ids[0]

    def start(self, timeout: float = 10.0) -> FixClient:
        self.fix.start()
        if not self.fix.wait_logged_on(timeout):
            self.fix.stop(logout_timeout=0)
            raise AssertionError(f"{self.session_id} did not log on within {timeout}s")
        return self

    def stop(self) -> None:
        self.fix.stop(logout_timeout=3.0)

    def __enter__(self) -> FixClient:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def errors(self) -> list[str]:
        return self.fix.application.errors

    def send(self, message: NewOrder | CancelRequest | qf.Message, *, poss_dup: bool = False) -> None:
        if poss_dup:
            self.flag_poss_dup.add(message.cl_ord_id)
        assert self.fix.send(message, self.session_id)

    # waiting -------------------------------------------------------------------------------------------
    def reports(self) -> list[ExecReport]:
        """ExecutionReports received, in order, without application-level re-sends (PossResend=Y, the same
        ExecID again); session-level resends (PossDupFlag=Y, a first delivery after a gap) are included."""
        return [r.message for r in self.app.items() if isinstance(r.message, ExecReport) and not r.poss_resend]

    def wait_reports(self, predicate: Callable[[ExecReport], bool], count: int = 1,
                     timeout: float = 10.0) -> list[ExecReport]:
        """Wait until ``count`` ExecutionReports (as ``reports()`` lists them) satisfy ``predicate``; return
        them in arrival order."""
        def enough(items):
            hits = [r.message for r in items if isinstance(r.message, ExecReport) and not r.poss_resend
                    and predicate(r.message)]
            return hits if len(hits) >= count else None
        return self.app.wait_for(enough, timeout)

    def wait_report(self, cl_ord_id: str, exec_type: str, timeout: float = 10.0) -> ExecReport:
        return self.wait_reports(lambda r: r.cl_ord_id == cl_ord_id and r.exec_type == exec_type,
                                 timeout=timeout)[0]

    def wait_cancel_reject(self, cl_ord_id: str, timeout: float = 10.0) -> CancelReject:
        def hit(items):
            found = [r.message for r in items if isinstance(r.message, CancelReject)
                     and r.message.cl_ord_id == cl_ord_id]
            return found[0] if found else None
        return self.app.wait_for(hit, timeout)

    def wait_admin(self, kind: str, count: int = 1, timeout: float = 10.0,
                   where: Callable[[str], bool] = lambda raw: True) -> list[str]:
        def enough(items):
            hits = [raw for t, raw in items if t == kind and where(raw)]
            return hits if len(hits) >= count else None
        return self.admin.wait_for(enough, timeout)


# ------------------------------------------------------------------------------------------------ raw wire

SOH = "\x01"
_FRAME = re.compile(rb"8=FIX\.4\.4\x019=\d+\x01.*?\x0110=\d{3}\x01", re.DOTALL)


def frame(fields: list[tuple[int, str]], *, checksum: int | None = None) -> bytes:
    """A raw FIX 4.4 message: BeginString, a correct BodyLength, ``fields`` in order, then CheckSum (the correct
    one unless ``checksum`` is given)."""
    body = "".join(f"{tag}={value}{SOH}" for tag, value in fields)
    head = f"8=FIX.4.4{SOH}9={len(body.encode('latin-1'))}{SOH}"
    total = sum((head + body).encode("latin-1")) % 256
    return (head + body + f"10={total if checksum is None else checksum:03d}{SOH}").encode("latin-1")


def fix_fields(raw: str | bytes) -> dict[int, str]:
    """A raw FIX message's fields by tag (the first occurrence of each)."""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    found: dict[int, str] = {}
    for part in text.split(SOH):
        tag, sep, value = part.partition("=")
        if sep and tag.isdigit():
            found.setdefault(int(tag), value)
    return found


class Relay:
    """``Relay(acceptor_port)`` listens on 127.0.0.1:``port`` (a free one by default); each connection it
    accepts is joined to a new connection to the acceptor. ``tap["to_acceptor"]`` / ``tap["to_initiator"]``
    hold every byte the two ends sent (injected bytes are not in the tap); ``inject(data, to=...)`` writes
    raw bytes into the current connection, between whole messages of the real sender."""

    DIRECTIONS = ("to_acceptor", "to_initiator")

    def __init__(self, acceptor_port: int, port: int = 0) -> None:
        self.acceptor_port = acceptor_port
        self._server = socket.create_server(("127.0.0.1", port))
        self._server.settimeout(0.1)
        self.port = self._server.getsockname()[1]
        self.tap = {d: bytearray() for d in self.DIRECTIONS}
        self.connections = 0
        self._lock = threading.Lock()
        self._current: dict[str, socket.socket] = {}
        self._sockets: list[socket.socket] = [self._server]
        self._send_locks = {d: threading.Lock() for d in self.DIRECTIONS}
        self._closed = threading.Event()
        self._threads = [threading.Thread(target=self._accept, name="relay-accept", daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                initiator, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                acceptor = socket.create_connection(("127.0.0.1", self.acceptor_port), timeout=5)
            except OSError:
                initiator.close()
                continue
            acceptor.settimeout(None)
            with self._lock:
                self.connections += 1
                self._current = {"to_acceptor": acceptor, "to_initiator": initiator}
                self._sockets += [initiator, acceptor]
            for source, sink, direction in ((initiator, acceptor, "to_acceptor"),
                                            (acceptor, initiator, "to_initiator")):
                t = threading.Thread(target=self._pump, args=(source, sink, direction), daemon=True)
                self._threads.append(t)
                t.start()

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                with self._send_locks[direction]:
                    self.tap[direction] += data
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def inject(self, data: bytes, *, to: str) -> None:
        if to not in self.DIRECTIONS:
            raise ValueError(f"to={to!r}: one of {self.DIRECTIONS}")
        with self._lock:
            sink = self._current.get(to)
        assert sink is not None, "no connection through the relay yet"
        with self._send_locks[to]:
            sink.sendall(data)

    def frames(self, direction: str) -> list[str]:
        """The complete FIX messages sent in ``direction`` so far, as raw strings."""
        with self._send_locks[direction]:
            data = bytes(self.tap[direction])
        return [m.decode("latin-1") for m in _FRAME.findall(data)]

    def close(self) -> None:
        self._closed.set()
        self._threads[0].join(timeout=5)
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in self._threads[1:]:
            t.join(timeout=5)

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

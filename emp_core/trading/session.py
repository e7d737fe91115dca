"""A short paper-trading session with the documented processes: ``emp venue`` (the paper venue, FIX acceptor),
``emp executor`` (the sidecar that sends the outbox) and ``emp dropcopy`` (records the venue's drop copy),
each its own process, talking FIX 4.4 over loopback. ``emp demo`` runs one after the research graph.

It is a **replay**: the venue's clock starts at the bar the orders are planned on (``start``) and stands
still until the first order arrives, then advances ``bars`` bars, so market orders fill at the next bar's
open exactly as the backtests assume. Settings, FIX stores and the three processes' logs are under
``<home>/paper/`` (the stores persist, so sequence numbers continue from one session to the next, as they
would with a real counterparty).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import polars as pl

from emp_core.config import child_environment
from emp_core.errors import EmpError
from emp_core.execution.fix import write_settings
from emp_core.trading.book import FINAL_STATUSES

log = logging.getLogger("emp.trading")

VENUE, EXECUTOR, DROPCOPY = "VENUE", "EMP", "DROPCOPY"
STARTUP_SECONDS = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _emp() -> str:
    exe = Path(sys.executable).with_name("emp")
    return str(exe) if exe.exists() else "emp"


def _reports(outbox, which: str) -> set[str]:
    """The ExecIDs of the ExecutionReports (35=8) in the journal or the drop copy."""
    return set(outbox.journal(which).filter(pl.col("msg_type") == "8")["exec_id"].to_list())


class PaperSession:
    """``with PaperSession(home, start=bar) as session: ... session.wait_settled(clordids)`` (module docstring)."""

    def __init__(self, home: Path, *, start: datetime, bars: int = 1, bar_seconds: float = 1.0) -> None:
        self.dir = Path(home) / "paper"
        self.start, self.bars, self.bar_seconds = start, bars, bar_seconds
        self.procs: dict[str, subprocess.Popen] = {}
        self.health_port = free_port()

    # -- processes ------------------------------------------------------------------------------------------
    def _spawn(self, name: str, *args: str) -> None:
        out = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 (the child process writes it)
        self.procs[name] = subprocess.Popen([_emp(), name, *args], stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True,
                                            env={**child_environment(), "EMP_PARENT_PID": str(os.getpid())})
        out.close()

    def _log_has(self, name: str, event: str, since: int) -> bool:
        path = self.dir / f"{name}.log"
        return path.exists() and f'"event": "{event}"' in path.read_text(errors="replace")[since:]

    def _wait(self, what: str, ready, timeout: float = STARTUP_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                raise EmpError(f"paper session: emp {dead[0]} exited with {self.procs[dead[0]].returncode} while "
                               f"waiting for {what}; see {self.dir / (dead[0] + '.log')}")
            if ready():
                return
            time.sleep(0.2)
        raise EmpError(f"paper session: no {what} after {timeout:.0f} s; see the logs in {self.dir}")

    def health(self) -> dict:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/health", timeout=2) as r:
                return json.loads(r.read())
        except OSError:
            return {}

    def __enter__(self) -> PaperSession:
        self.dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        common = {"port": port, "reconnect_interval": 1, "heartbeat": 5, "session_kind": "paper"}
        venue = write_settings(self.dir / "venue.cfg", role="acceptor", sessions=[(VENUE, EXECUTOR), (VENUE, DROPCOPY)],
                               store_dir=self.dir / "venue_store", **common)
        executor = write_settings(self.dir / "executor.cfg", role="initiator", sessions=[(EXECUTOR, VENUE)],
                                  store_dir=self.dir / "executor_store", **common)
        dropcopy = write_settings(self.dir / "dropcopy.cfg", role="initiator", sessions=[(DROPCOPY, VENUE)],
                                  store_dir=self.dir / "dropcopy_store", **common)
        marks = {n: (self.dir / f"{n}.log").stat().st_size if (self.dir / f"{n}.log").exists() else 0
                 for n in ("venue", "executor", "dropcopy")}
        try:
            self._spawn("venue", "--settings", str(venue), "--start", self.start.isoformat(), "--wait-for-orders",
                        "--max-bars", str(self.bars), "--bar-seconds", str(self.bar_seconds))
            # the venue reads its bars from the store once, at start: wait for it before anyone writes there
            self._wait("venue start", lambda: self._log_has("venue", "venue_started", marks["venue"]))
            self._spawn("dropcopy", "--settings", str(dropcopy))
            self._spawn("executor", "--settings", str(executor), "--health-port", str(self.health_port))
            self._wait("executor logon", lambda: self.health().get("logged_on") is True)
            self._wait("drop-copy listener", lambda: self._log_has("dropcopy", "dropcopy_started", marks["dropcopy"]))
        except BaseException:
            self.stop()
            raise
        log.info("paper session: venue on 127.0.0.1:%d from bar %s, executor logged on (health on port %d); "
                 "logs in %s", port, self.start, self.health_port, self.dir)
        return self

    def wait_settled(self, outbox, clordids: Sequence[str], timeout: float = 60.0) -> dict[str, str]:
        """Wait until each order has a final OrdStatus in the journal (filled, cancelled, rejected, ...); returns
        ClOrdID -> its last OrdStatus (None for one still open at the timeout)."""
        deadline = time.monotonic() + timeout
        wanted = set(clordids)
        while True:
            status = outbox.status()
            last = {c: s for c, s in status.select("clordid", "ord_status").rows() if c in wanted}
            if all(last.get(c) in FINAL_STATUSES for c in wanted) or time.monotonic() > deadline:
                return last
            time.sleep(0.3)

    def wait_mirrored(self, outbox, timeout: float = 30.0) -> bool:
        """Wait until every ExecutionReport in the journal is in the drop copy too (the venue mirrors each one
        right after sending it), by ExecID; True when it is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _reports(outbox, "executions") <= _reports(outbox, "dropcopy"):  # every report mirrored
                return True
            time.sleep(0.3)
        return False

    def stop(self) -> dict[str, int]:
        """SIGTERM each process (dropcopy last: it records the reports the others send on their way out)."""
        codes = {}
        for name in ("executor", "venue", "dropcopy"):
            proc = self.procs.get(name)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                codes[name] = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[name] = proc.wait()
        self.procs.clear()
        return codes

    def __exit__(self, *exc) -> None:
        self.stop()

"""The demo's paper session as processes: `emp venue`, `emp executor` and `emp dropcopy` started, an order sent,
filled at the next bar and mirrored, every process stopped cleanly; and none outlives a parent killed with
SIGKILL."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta

from emp_core.execution.outbox import ApprovedOrder, open_outbox
from emp_core.trading.session import PaperSession


def test_a_paper_session_fills_an_order_at_the_next_bar_and_stops_every_process(trading_home):
    start = datetime(2024, 1, 2) + timedelta(days=10)
    box = open_outbox()
    with PaperSession(trading_home, start=start, bars=1, bar_seconds=0.5) as session:
        assert session.health()["logged_on"] is True and session.health()["session_kind"] == "paper"
        order = ApprovedOrder(idem_key="k", strategy="manual", symbol="AAA", side="buy", qty=10)
        box.submit([order])
        states = session.wait_settled(box, [order.clordid], timeout=60)
        assert session.wait_mirrored(box)
        codes = session.stop()
    assert states == {order.clordid: "2"} and codes == {"executor": 0, "venue": 0, "dropcopy": 0}
    fill = box.journal().filter(box.journal()["exec_type"] == "F").row(0, named=True)
    assert fill["last_qty"] == 10 and fill["last_px"] >= 100.0  # the next bar's open (100) plus slippage
    venue_log = (trading_home / "paper" / "venue.log").read_text()
    assert '"waiting_for_orders": true' in venue_log and '"advanced": 1' in venue_log


PARENT = textwrap.dedent("""
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.argv[1], "dropcopy", "--settings", sys.argv[2]],
                             env={**os.environ, "EMP_PARENT_PID": str(os.getpid())},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(child.pid, flush=True)
    time.sleep(600)
""")


def test_a_long_running_command_stops_when_the_process_that_started_it_dies(trading_home):
    from emp_core.execution.fix import write_settings
    from tests.support import free_port

    cfg = write_settings(trading_home / "dc.cfg", role="initiator", sessions=[("DROPCOPY", "VENUE")],
                         port=free_port(), store_dir=trading_home / "dc_store")
    emp = os.path.join(os.path.dirname(sys.executable), "emp")
    parent = subprocess.Popen([sys.executable, "-c", PARENT, emp, str(cfg)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(3)  # the child is up (its import and the prctl take a moment)
    os.kill(child, 0)  # alive while its parent is
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{child}/stat") as f:
            if f.read().split(") ")[1].startswith("Z"):  # exited; only its zombie waits for init
                return
        time.sleep(0.2)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the child outlived its parent by 30 s")

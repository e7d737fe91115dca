"""The FIX executor against the paper venue over real quickfix sessions on loopback: orders sent once and
journaled with every report, recovery from its own FileStore, the health endpoint, and a crash test that
kills it with SIGKILL at random moments while it sends 1,000 orders."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta

import polars as pl

from emp_core.execution.executor import Executor, sent_ids, stored_messages
from emp_core.execution.fix import FixApplication, FixSession, write_settings
from emp_core.execution.outbox import ApprovedOrder, sqlite_outbox
from emp_core.execution.venue import PaperVenue, VenueConfig
from tests.support import free_port
from tests.test_venue import no_hang  # noqa: F401 - the alarm and hard watchdog for every test here

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def bars(n: int = 40, symbols=("AAA", "BBB")) -> pl.DataFrame:
    return pl.DataFrame([{"symbol": s, "ts": T0 + timedelta(days=i), "open": 100.0 + i, "high": 101.0 + i,
                          "low": 99.0 + i, "close": 100.5 + i, "volume": 1e7} for s in symbols for i in range(n)])


def settings(tmp_path, port: int):
    venue = write_settings(tmp_path / "venue.cfg", role="acceptor", port=port, store_dir=tmp_path / "venue_store",
                           sessions=[("VENUE", "EXECUTOR"), ("VENUE", "DROPCOPY")])
    executor = write_settings(tmp_path / "executor.cfg", role="initiator", port=port, reconnect_interval=1,
                              store_dir=tmp_path / "executor_store", sessions=[("EXECUTOR", "VENUE")])
    return venue, executor


def orders(n: int, prefix: str = "o") -> list[ApprovedOrder]:
    return [ApprovedOrder(idem_key=f"{prefix}{i}", strategy="manual", symbol="AAA" if i % 2 else "BBB",
                          side="buy" if i % 3 else "sell", qty=1 + i % 5) for i in range(n)]


def eventually(check, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
        time.sleep(0.02)


def test_orders_go_out_once_fill_and_every_report_is_journaled(tmp_path):
    port = free_port()
    venue_cfg, executor_cfg = settings(tmp_path, port)
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    box.submit(orders(6))
    venue = PaperVenue(bars(), venue_cfg, VenueConfig(volume_share=1.0), id_prefix="V-").start()
    health_port = free_port()
    executor = Executor(executor_cfg, box, health_port=health_port)
    try:
        executor.start()
        runner = threading.Thread(target=executor.run, daemon=True)
        runner.start()
        eventually(lambda: len(venue.received()) == 6, what="six orders at the venue")
        venue.advance()  # the next bar: every market order fills at its open
        eventually(lambda: box.journal().filter(pl.col("ord_status") == "2").height == 6, what="six fills")
        def fetch():
            return json.load(urllib.request.urlopen(f"http://127.0.0.1:{health_port}/health", timeout=5))

        health = eventually(lambda: (h := fetch())["journaled"] == 12 and h, what="12 journaled")  # its commit
        assert health["logged_on"] and health["outbox_depth"] == 0 and health["sent"] == 6
        assert health["received"] == 12  # New, then Filled, for each
        assert health["journal_pending"] == 0 and health["in_flight"] == 0
        assert health["last_report_age_seconds"] is not None and health["callback_errors"] == []
    finally:
        executor.stop()
        venue.stop()
    assert venue.received() == {o.clordid: 1 for o in orders(6)}
    journal = box.journal()
    assert sorted(journal["exec_id"].to_list()) == sorted(r.exec_id for r in venue.reports())
    fills = journal.filter(pl.col("ord_status") == "2").sort("clordid")
    expected = sorted((o.clordid, float(o.qty), 101.0 * (1 + 5e-4) if o.side == "buy" else 101.0 * (1 - 5e-4))
                      for o in orders(6))
    assert [(c, q) for c, q, _ in expected] == fills.select("clordid", "cum_qty").rows()
    assert all(abs(a - e) < 1e-9 for a, (_, _, e) in zip(fills["avg_px"], expected, strict=True))
    assert box.status()["ord_status"].to_list() == ["2"] * 6


def test_a_restart_marks_what_its_session_stored_and_never_sends_it_again(tmp_path):
    """The executor hands orders to quickfix, then dies before marking them sent (simulated: the mark fails).
    Restarted, it finds them in its FileStore and marks them; the venue gets each once."""
    port = free_port()
    venue_cfg, executor_cfg = settings(tmp_path, port)
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    box.submit(orders(4))
    venue = PaperVenue(bars(), venue_cfg, VenueConfig(volume_share=1.0), id_prefix="V-").start()
    try:
        first = Executor(executor_cfg, box).start()
        try:
            assert first.fix.wait_logged_on(10)
            first.outbox = type("Dies", (), {"to_send": box.to_send, "mark_sent": staticmethod(_die),
                                             "cancels_to_send": box.cancels_to_send, "depth": box.depth,
                                             "record": box.record})()
            with contextlib.suppress(RuntimeError):
                first.pump()
            eventually(lambda: len(venue.received()) == 4, what="four orders at the venue")
        finally:
            first.stop()
        assert box.depth() == 4  # not marked
        stored, _ = sent_ids(tmp_path / "executor_store", "EXECUTOR", "VENUE")
        assert stored == {o.clordid for o in orders(4)}
        second = Executor(executor_cfg, box).start()
        try:
            assert second.counters.recovered == 4 and box.depth() == 0
            box.submit(orders(5))  # one more, new
            second.run(until=lambda: box.depth() == 0, max_seconds=30)
            eventually(lambda: len(venue.received()) == 5, what="the fifth order")
            time.sleep(0.5)
        finally:
            second.stop()
    finally:
        venue.stop()
    assert venue.received() == {o.clordid: 1 for o in orders(5)} and venue.seen() == venue.received()


def _die(clordids):
    raise RuntimeError("killed before the mark")


def test_the_store_reader_skips_a_message_cut_short(tmp_path):
    """A crash in the middle of quickfix's write leaves an index entry past the body's end, or half an entry:
    neither is read as a sent message."""
    store = tmp_path / "store"
    store.mkdir()
    messages = ["8=FIX.4.4\x019=5\x0135=D\x0111=A1\x0110=000\x01", "8=FIX.4.4\x019=5\x0135=F\x0111=A1-C1\x01"
                "41=A1\x0110=000\x01", "8=FIX.4.4\x019=5\x0135=D\x0111=A2\x0110=000\x01"]
    body = "".join(messages)
    offsets = [0, len(messages[0]), len(messages[0]) + len(messages[1])]
    (store / "FIX.4.4-S-T.body").write_text(body[:-5])  # the third message cut short
    (store / "FIX.4.4-S-T.header").write_text(" ".join(f"{i + 1},{o},{len(m)}" for i, (o, m) in
                                                         enumerate(zip(offsets, messages, strict=True))) + " 4,9")
    assert stored_messages(store, "S", "T") == messages[:2]
    assert sent_ids(store, "S", "T") == ({"A1"}, {"A1-C1"})
    assert stored_messages(store, "S", "OTHER") == []


CHILD = textwrap.dedent("""
    import sys, time
    from emp_core.execution.executor import Executor
    from emp_core.execution.outbox import sqlite_outbox
    executor = Executor(sys.argv[1], sqlite_outbox(sys.argv[2]), batch=int(sys.argv[3]))
    executor.start()
    print("started", flush=True)
    executor.run()
""")


def _spawn(executor_cfg, outbox_path, batch: int = 20) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, str(executor_cfg), str(outbox_path), str(batch)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})


def test_killed_at_random_moments_while_sending_1000_orders_nothing_is_lost_or_sent_twice(tmp_path):
    """The executor runs as its own process and is killed with SIGKILL at random moments (at least 10 times)
    while 1,000 approved orders go out, the venue filling them bar by bar; it is restarted after each kill.
    At the end the venue has received every order exactly once (no ClOrdID twice, not even as a rejected
    duplicate), and the journal holds every report the venue sent, so every fill."""
    port = free_port()
    venue_cfg, executor_cfg = settings(tmp_path, port)
    outbox_path = tmp_path / "outbox.sqlite"
    box = sqlite_outbox(outbox_path)
    approved = orders(1000)
    box.submit(approved)
    venue = PaperVenue(bars(200), venue_cfg, VenueConfig(volume_share=1.0), id_prefix="V-").start()
    rng = random.Random(20261127)
    kills = 0
    try:
        for _ in range(10):  # killed at a random moment, each time after it started sending
            child = _spawn(executor_cfg, outbox_path)
            try:
                assert child.stdout.readline().strip() == "started"
                time.sleep(rng.uniform(0.05, 0.6))
                if venue.bar_index + 1 < venue.bar_count:
                    venue.advance()  # fills arrive while it works
            finally:
                child.send_signal(signal.SIGKILL)
                child.wait(30)
            kills += 1
        child = _spawn(executor_cfg, outbox_path)  # the last start: it finishes the work
        try:
            assert child.stdout.readline().strip() == "started"
            eventually(lambda: box.depth() == 0 and len(venue.received()) == 1000, timeout=120,
                       what="every order at the venue")
            venue.advance()
            eventually(lambda: sum(o.status == "2" for o in venue.orders().values()) == 1000, timeout=60,
                       what="every order filled at the venue")
            eventually(lambda: set(box.journal()["exec_id"]) >= {r.exec_id for r in venue.reports()},
                       timeout=60, what="every report in the journal")
        finally:
            child.send_signal(signal.SIGTERM)
            child.wait(30)
    finally:
        venue.stop()
    assert kills >= 10
    assert venue.received() == {o.clordid: 1 for o in approved}  # each once
    assert venue.seen() == venue.received()  # no second NewOrderSingle arrived, not even a rejected duplicate
    journal = box.journal()
    assert journal.height == journal.select("session", "exec_id").n_unique()  # journaled once
    assert set(journal["exec_id"]) == {r.exec_id for r in venue.reports()}
    filled = journal.filter(pl.col("ord_status") == "2")
    assert sorted(filled["clordid"]) == sorted(o.clordid for o in approved)
    assert dict(filled.select("clordid", "cum_qty").rows()) == {o.clordid: float(o.qty) for o in approved}


def test_the_journal_reconciles_with_the_drop_copy_and_every_discrepancy_is_named(tmp_path):
    """Orders sent and filled with a drop-copy listener on: the journal and the drop copy agree. Then a journal
    row deleted, one altered and one invented are each found, by kind."""
    import sqlite3

    from emp_core.execution.reconcile import DropCopyListener, reconcile

    port = free_port()
    venue_cfg, executor_cfg = settings(tmp_path, port)
    copy_cfg = write_settings(tmp_path / "dropcopy.cfg", role="initiator", port=port, reconnect_interval=1,
                              store_dir=tmp_path / "dropcopy_store", sessions=[("DROPCOPY", "VENUE")])
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    box.submit(orders(4))
    venue = PaperVenue(bars(), venue_cfg, VenueConfig(volume_share=1.0), id_prefix="V-").start()
    listener = DropCopyListener(copy_cfg, box).start()
    executor = Executor(executor_cfg, box)
    try:
        executor.start()
        threading.Thread(target=executor.run, daemon=True).start()
        eventually(lambda: len(venue.received()) == 4, what="four orders at the venue")
        venue.advance()
        eventually(lambda: box.journal().height == 8 and box.journal("dropcopy").height == 8, what="8 + 8 reports")
    finally:
        executor.stop()
        listener.stop()
        venue.stop()
    assert reconcile(box).is_empty()
    con = sqlite3.connect(tmp_path / "outbox.sqlite")
    with con:
        gone = con.execute("SELECT exec_id FROM executions ORDER BY seq LIMIT 1").fetchone()[0]
        con.execute("DELETE FROM executions WHERE exec_id = ?", (gone,))
        altered = con.execute("SELECT exec_id FROM executions WHERE ord_status = '2' LIMIT 1").fetchone()[0]
        con.execute("UPDATE executions SET cum_qty = cum_qty + 1 WHERE exec_id = ?", (altered,))
        con.execute("INSERT INTO executions (session, exec_id, clordid, order_clordid, msg_type, ord_status, "
                    "received_at) VALUES ('x', 'INVENTED', 'C', 'C', '8', '2', '2026-01-01')")
    con.close()
    findings = reconcile(box)
    assert sorted(findings.select("kind", "exec_id", "field").rows()) == sorted([
        ("missing", gone, None), ("mismatched", altered, "cum_qty"), ("extra", "INVENTED", None)])


def test_a_venue_disconnect_mid_stream_loses_and_doubles_nothing(tmp_path):
    """The venue drops the session three times while 300 orders go out: the executor logs on again (quickfix's
    reconnect), the sequence gaps are closed by resends, and the venue has each order once, the journal
    every report."""
    port = free_port()
    venue_cfg, executor_cfg = settings(tmp_path, port)
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    approved = orders(300)
    venue = PaperVenue(bars(), venue_cfg, VenueConfig(volume_share=1.0), id_prefix="V-").start()
    executor = Executor(executor_cfg, box, batch=10)
    drops = 0
    try:
        executor.start()
        threading.Thread(target=executor.run, daemon=True).start()
        for chunk in range(3):
            box.submit(approved[chunk * 100:(chunk + 1) * 100])
            eventually(lambda c=chunk: len(venue.received()) > c * 100 + 20, what="orders flowing")
            venue.fix.session(venue.order_sessions[0]).disconnect()  # the venue drops the connection
            drops += 1
            eventually(executor.fix.logged_on, what="logged on again")
        eventually(lambda: box.depth() == 0 and len(venue.received()) == 300, timeout=60, what="all 300 orders")
        venue.advance()
        eventually(lambda: set(box.journal()["exec_id"]) >= {r.exec_id for r in venue.reports()}
                   and len(venue.reports()) == 600, timeout=60, what="every report journaled")
    finally:
        executor.stop()
        venue.stop()
    assert drops == 3
    assert venue.received() == {o.clordid: 1 for o in approved} and venue.seen() == venue.received()
    assert box.journal().height == 600 and box.journal().select("session", "exec_id").n_unique() == 600


def test_an_order_the_risk_policy_refused_never_reaches_the_venue(trading_home):
    """Through `emp orders submit`: a refused order (no stop, which the default policy requires) is never in
    the outbox, so the executor never sends it; the approved one arrives."""
    from emp_core.cli import main

    tmp_path = trading_home
    base = ["orders", "submit", "--symbol", "AAA", "--side", "buy", "--qty", "10", "--type", "market"]
    assert main([*base, "--key", "refused"]) == 1
    assert main([*base, "--stop", "95", "--key", "approved"]) == 0
    port = free_port()
    venue_cfg, executor_cfg = settings(tmp_path, port)
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    venue = PaperVenue(bars(), venue_cfg, VenueConfig(volume_share=1.0), id_prefix="V-").start()
    executor = Executor(executor_cfg, box)
    try:
        executor.start()
        executor.fix.wait_logged_on(10)
        executor.run(until=lambda: len(venue.received()) >= 1, max_seconds=30)
        time.sleep(0.5)
    finally:
        executor.stop()
        venue.stop()
    from emp_core.execution.outbox import clordid_for

    assert venue.seen() == {clordid_for("approved"): 1}


def test_a_live_session_never_receives_an_order_approved_for_paper(tmp_path):
    """The executor sends only the orders approved for its session's kind (EmpSessionKind; unmarked is live):
    a paper-only strategy's order, approved for paper, waits in the outbox while a live session runs and goes
    out on a paper one."""
    port = free_port()
    venue_cfg, paper_cfg = settings(tmp_path, port)
    text = paper_cfg.read_text()
    assert "EmpSessionKind=paper" in text
    live_cfg = tmp_path / "live.cfg"
    live_cfg.write_text(text.replace("EmpSessionKind=paper\n", ""))  # unmarked: live
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    paper_order = ApprovedOrder(idem_key="paper", strategy="catalogue/trend", symbol="AAA", side="buy", qty=1)
    live_order = ApprovedOrder(idem_key="live", strategy="manual", symbol="AAA", side="buy", qty=2, session="live")
    box.submit([paper_order, live_order])
    venue = PaperVenue(bars(), venue_cfg, id_prefix="V-").start()
    try:
        executor = Executor(live_cfg, box)
        assert executor.kind == "live"
        with executor:
            executor.fix.wait_logged_on(10)
            executor.run(until=lambda: len(venue.received()) >= 1, max_seconds=30)
            time.sleep(0.5)
            executor.pump()
            assert executor.health()["outbox_depth"] == 0 and box.depth() == 1  # the paper order waits
        assert venue.seen() == {live_order.clordid: 1}
        with Executor(paper_cfg, box) as executor:
            executor.fix.wait_logged_on(10)
            executor.run(until=lambda: len(venue.received()) >= 2, max_seconds=30)
    finally:
        venue.stop()
    assert venue.seen() == {live_order.clordid: 1, paper_order.clordid: 1} and box.depth() == 0


FAILING_CHILD = textwrap.dedent("""
    import sys, time
    from emp_core.execution.executor import Executor
    from emp_core.execution.outbox import sqlite_outbox
    box = sqlite_outbox(sys.argv[2])
    def record(*args, **kw):
        time.sleep(0.3)  # quickfix has acknowledged the report by now
        raise RuntimeError("database is locked")
    box.record = record
    executor = Executor(sys.argv[1], box)
    executor.start()
    print("started", flush=True)
    executor.run(max_seconds=60)
""")


def test_a_report_the_journal_cannot_take_is_asked_for_again_after_the_fail_stop(tmp_path):
    """The journal fails to commit a report that quickfix has already acknowledged (its expected number moved
    past it): the executor ends its process (exit 70) with the journal's mark still before the report;
    restarted with a working journal, it winds quickfix back to the mark, the venue sends the report again,
    and the journal holds it once. (Trusting quickfix's number would lose it: the venue never resends it.)"""
    port = free_port()
    venue_cfg, executor_cfg = settings(tmp_path, port)
    outbox_path = tmp_path / "outbox.sqlite"
    box = sqlite_outbox(outbox_path)
    (order,) = orders(1)
    box.submit([order])
    venue = PaperVenue(bars(), venue_cfg, VenueConfig(volume_share=1.0), id_prefix="V-").start()
    try:
        child = subprocess.Popen([sys.executable, "-c", FAILING_CHILD, str(executor_cfg), str(outbox_path)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": os.getcwd()})
        assert child.stdout.readline().strip() == "started"
        assert child.wait(60) == 70
        assert '"event": "fail_stop"' in child.stderr.read()
        assert venue.received() == {order.clordid: 1} and box.journal().is_empty()
        seqnums = (tmp_path / "executor_store" / "FIX.4.4-EXECUTOR-VENUE.seqnums").read_text()
        assert int(seqnums.split(":")[1]) == 3  # the venue's Logon (1) and its report (2) acknowledged
        child = _spawn(executor_cfg, outbox_path)
        try:
            assert child.stdout.readline().strip() == "started"
            eventually(lambda: box.journal().height >= 1, what="the report journaled after the restart")
            time.sleep(0.5)
        finally:
            child.send_signal(signal.SIGTERM)
            child.wait(30)
    finally:
        venue.stop()
    journal = box.journal()
    assert journal["exec_id"].to_list() == [venue.reports()[0].exec_id]  # the venue's one report, once
    assert venue.received() == {order.clordid: 1}  # and the order was not sent twice


class _SilentVenue(FixApplication):
    """An acceptor that takes orders and never answers (a venue that stopped reporting)."""

    def __init__(self) -> None:
        super().__init__()
        self.orders: list[str] = []

    def from_app(self, message, session_id):
        self.orders.append(message.getField(11))


def test_no_more_than_max_in_flight_orders_await_a_first_report_and_an_unanswered_one_stops_counting(tmp_path):
    """The executor keeps at most ``max_in_flight`` orders sent and not yet answered (so a burst cannot flood a
    venue, or the loopback socket both sides block writing to); an order unanswered for ``in_flight_seconds``
    is reported (``unanswered_order``) and frees its place."""
    from tests.test_fix_sessions import Events

    port = free_port()
    venue_cfg = write_settings(tmp_path / "venue.cfg", role="acceptor", port=port, store_dir=tmp_path / "vs",
                               sessions=[("VENUE", "EXECUTOR")])
    _, executor_cfg = settings(tmp_path, port)
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    box.submit(orders(7))
    silent = _SilentVenue()
    executor = Executor(executor_cfg, box, max_in_flight=3, in_flight_seconds=2.0, poll_seconds=0.01)
    with FixSession(venue_cfg, silent, role="acceptor"), Events() as events:
        try:
            executor.start()
            runner = threading.Thread(target=executor.run, daemon=True)
            runner.start()
            eventually(lambda: len(silent.orders) == 3, what="three orders at the venue")
            time.sleep(0.5)
            assert len(silent.orders) == 3 and executor.health()["in_flight"] == 3  # the window is full
            eventually(lambda: len(silent.orders) == 6, what="three more after the first expired")
            eventually(lambda: len(silent.orders) == 7, what="the last one")
        finally:
            executor.stop()
    unanswered = [e["clordid"] for e in events.named("unanswered_order")]
    assert unanswered[:3] == silent.orders[:3] and len(set(unanswered)) == len(unanswered)
    assert silent.orders == [o.clordid for o in orders(7)]  # in outbox order, each once


def test_a_window_of_one_still_sends_everything_once_and_journals_every_report(tmp_path):
    port = free_port()
    venue_cfg, executor_cfg = settings(tmp_path, port)
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    box.submit(orders(30))
    venue = PaperVenue(bars(), venue_cfg, VenueConfig(volume_share=1.0), id_prefix="V-").start()
    executor = Executor(executor_cfg, box, max_in_flight=1, poll_seconds=5.0)  # a report must wake the loop:
    try:  # polling alone would send four of the 30 in the 20 s given
        executor.start()
        executor.run(until=lambda: box.journal().height >= 30, max_seconds=20)
    finally:
        executor.stop()
        venue.stop()
    assert venue.received() == {o.clordid: 1 for o in orders(30)}
    assert sorted(box.journal()["exec_id"]) == sorted(r.exec_id for r in venue.reports())

"""The execution journal's group commit (emp_core/execution/executor.py, "Every report journaled"): reports are
queued by quickfix's callback and committed in groups with the journal's high-water mark; at start the
executor winds quickfix's expected number back to that mark, so a report received but not committed when the
process died is asked for again. Real quickfix sessions on loopback and SQLite (the mark on PostgreSQL:
tests/test_outbox.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from emp_core.execution.executor import Executor, JournalFailed, JournalWriter, store_epoch
from emp_core.execution.fix import FixApplication, FixError, FixSession, write_settings
from emp_core.execution.outbox import sqlite_outbox
from emp_core.execution.venue import PaperVenue, VenueConfig
from tests.support import free_port
from tests.test_executor import bars, eventually, orders, settings
from tests.test_venue import no_hang  # noqa: F401 - the alarm and hard watchdog for every test here


def report(i: int, session: str = "EXECUTOR->VENUE") -> dict:
    return {"session": session, "exec_id": f"X{i}", "clordid": f"C{i}", "msg_type": "8", "ord_status": "0",
            "exec_type": "0", "symbol": "AAA", "side": "1"}


# ----------------------------------------------------------------------------------------- the outbox's mark


def test_the_mark_and_the_reports_commit_together_or_not_at_all(tmp_path):
    """A group whose mark cannot be written leaves no report behind either (one transaction)."""
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    con = box._con()
    con.execute("CREATE TRIGGER no_mark BEFORE INSERT ON journal_cursor BEGIN SELECT RAISE(ABORT, 'disk full'); "
                "END")
    con.commit()
    with pytest.raises(Exception, match="disk full"):
        box.record([report(1, "S")], cursor=("S", "E1", 5))
    assert box.journal().is_empty() and box.cursor("S") is None


# ------------------------------------------------------------------------------------------- the writer


def test_reports_queued_during_a_commit_go_in_the_next_one_each_once_with_the_last_mark(tmp_path):
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    gate, real = threading.Event(), box.record
    calls = []

    def slow_record(rows, **kw):
        calls.append(len(rows))
        gate.wait(10)  # the first commit is slow: everything after it queues
        return real(rows, **kw)

    box.record = slow_record
    writer = JournalWriter(box, "S", on_failure=lambda exc: pytest.fail(f"journal failed: {exc}"))
    for i in range(1, 1001):
        writer.add(report(i, "S"), seq=i + 1, epoch="E")
    assert writer.pending == 1000
    gate.set()
    assert writer.flush(10)
    writer.close()
    assert sum(calls) == 1000 and len(calls) <= 3 and writer.commits == len(calls)  # grouped, not 1000 commits
    assert sorted(box.journal()["exec_id"]) == sorted(f"X{i}" for i in range(1, 1001))
    assert box.cursor("S") == ("E", 1002) and writer.pending == 0


def test_after_a_failed_commit_nothing_more_is_committed_and_the_mark_stays_before_it(tmp_path):
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    real, failures = box.record, []

    def record(rows, **kw):
        if any(r["exec_id"] == "X3" for r in rows):
            raise OSError("disk full")
        return real(rows, **kw)

    box.record = record
    writer = JournalWriter(box, "S", on_failure=failures.append)
    writer.add(report(1, "S"), seq=5, epoch="E")
    writer.add(report(2, "S"), seq=6, epoch="E")
    assert writer.flush(10)
    writer.add(report(3, "S"), seq=7, epoch="E")
    assert not writer.flush(10)
    assert [str(f) for f in failures] == ["disk full"]
    with pytest.raises(JournalFailed, match="X4"):
        writer.add(report(4, "S"), seq=8, epoch="E")
    writer.close()
    assert sorted(box.journal()["exec_id"]) == ["X1", "X2"] and box.cursor("S") == ("E", 7)


def test_a_group_spanning_a_reset_marks_the_new_epoch(tmp_path):
    """The mark is the last report's epoch and number: reports of the old epoch in the same group are held."""
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    writer = JournalWriter(box, "S", on_failure=lambda exc: pytest.fail(str(exc)))
    gate, real = threading.Event(), box.record
    box.record = lambda rows, **kw: (gate.wait(10), real(rows, **kw))[1]
    writer.add(report(1, "S"), seq=40, epoch="E1")
    writer.add(report(2, "S"), seq=41, epoch="E1")
    writer.add(report(3, "S"), seq=2, epoch="E2")
    gate.set()
    writer.close()
    assert box.cursor("S") == ("E2", 3) and box.journal().height == 3


# -------------------------------------------------------------------------------------------- the rewind


def _store_at(tmp_path, target_seq: int):
    """An executor settings file whose session store expects incoming number ``target_seq``."""
    cfg = write_settings(tmp_path / "e.cfg", role="initiator", sessions=[("EXECUTOR", "VENUE")], port=9,
                         store_dir=tmp_path / "store")
    fix = FixSession(cfg, FixApplication(), role="initiator")
    fix.start(before=lambda: fix.session().setNextTargetMsgSeqNum(target_seq))
    fix.stop(0)
    return cfg


@pytest.mark.parametrize(("mark", "expected"), [
    ("same:3", (8, 3)),  # reports 3..7 received, not committed: asked for again
    ("same:8", None),  # the journal holds everything the store acknowledged
    ("same:20", None),  # the mark ahead of the store (a commit before quickfix advanced): quickfix asks itself
    ("other:3", (8, 1)),  # a mark from an earlier epoch says nothing of this one
    (None, (8, 1)),  # nothing journaled in this epoch
    ("legacy", None),  # reports journaled before marks existed, each before quickfix acknowledged it
])
def test_at_start_the_store_is_wound_back_to_the_journals_mark(tmp_path, mark, expected):
    cfg = _store_at(tmp_path, 8)
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    epoch = store_epoch(tmp_path / "store", "EXECUTOR", "VENUE")
    assert epoch  # quickfix wrote its creation time
    if mark == "legacy":
        box.record([report(1)])
    elif mark is not None:
        which, seq = mark.split(":")
        box.record([], cursor=("EXECUTOR->VENUE", epoch if which == "same" else "19990101-00:00:00", int(seq)))
    executor = Executor(cfg, box)
    seen = []
    executor.fix.start(before=lambda: seen.append((executor.rewind(), executor.fix.session().getExpectedTargetNum())))
    executor.fix.stop(0)
    executor.journal.close()
    assert seen == [(expected, expected[1] if expected else 8)]
    again = FixSession(cfg, FixApplication(), role="initiator")  # the store keeps the wound-back number
    again.start(before=lambda: seen.append(again.session().getExpectedTargetNum()))
    again.stop(0)
    assert seen[-1] == (expected[1] if expected else 8)


def test_a_fresh_store_is_not_wound_back(tmp_path):
    cfg = write_settings(tmp_path / "e.cfg", role="initiator", sessions=[("EXECUTOR", "VENUE")], port=9,
                         store_dir=tmp_path / "store")
    executor = Executor(cfg, sqlite_outbox(tmp_path / "outbox.sqlite"))
    seen = []
    executor.fix.start(before=lambda: seen.append(executor.rewind()))
    executor.fix.stop(0)
    executor.journal.close()
    assert seen == [None]


# ----------------------------------------------------------------- a crash between receipt and commit, for real

STALLED_CHILD = textwrap.dedent("""
    import sys, threading
    from emp_core.execution.executor import Executor
    from emp_core.execution.outbox import sqlite_outbox
    box = sqlite_outbox(sys.argv[2])
    stall = threading.Event()
    def record(*args, **kw):  # the journal's commit never finishes: reports are received, none is committed
        stall.wait()
    box.record = record
    executor = Executor(sys.argv[1], box)
    executor.start()
    print("started", flush=True)
    executor.run()
""")


RUNNING_CHILD = textwrap.dedent("""
    import sys, logging
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    from emp_core.execution.executor import Executor
    from emp_core.execution.outbox import sqlite_outbox
    executor = Executor(sys.argv[1], sqlite_outbox(sys.argv[2]))
    executor.start()
    executor.run(max_seconds=60)
""")


def _events(out: str, name: str) -> list[dict]:
    return [e for e in (json.loads(line) for line in out.splitlines() if line.startswith("{")) if e["event"] == name]


def _restart_until_journaled(executor_cfg, outbox_path, box, reports: int) -> str:
    """Run the executor in its own process until the journal holds ``reports`` reports; its log."""
    child = subprocess.Popen([sys.executable, "-c", RUNNING_CHILD, str(executor_cfg), str(outbox_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                             env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        eventually(lambda: box.journal().height >= reports, what=f"{reports} reports journaled after the restart")
        time.sleep(0.3)
    finally:
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=30)
    return out


def test_a_clean_restart_asks_for_nothing_again(tmp_path):
    """Stopped cleanly, the executor leaves the mark at quickfix's own number (admin messages pass it too): the
    next start winds nothing back and sends no ResendRequest."""
    from tests.test_fix_sessions import Events

    port = free_port()
    venue_cfg, executor_cfg = settings(tmp_path, port)
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    box.submit(orders(3))
    venue = PaperVenue(bars(), venue_cfg, VenueConfig(volume_share=1.0), id_prefix="V-").start()
    try:
        with Events() as events:
            for _ in range(2):
                executor = Executor(executor_cfg, box)
                executor.start()
                try:
                    executor.run(until=lambda: box.journal().height >= 3, max_seconds=30)
                    time.sleep(0.3)
                finally:
                    executor.stop()
    finally:
        venue.stop()
    store_next = int((tmp_path / "executor_store" / "FIX.4.4-EXECUTOR-VENUE.seqnums").read_text().split(":")[1])
    assert box.cursor("EXECUTOR->VENUE")[1] == store_next
    assert events.named("journal_rewind") == [] and events.named("resend_request") == []
    assert box.journal().height == 3


def test_a_crash_after_commits_winds_back_to_the_mark_not_to_one(tmp_path):
    """Reports 1..n committed (a mark past them), then more received but not committed when the executor is
    killed: the restart asks from the mark, not from 1, and the journal ends with every report once."""
    port = free_port()
    venue_cfg, executor_cfg = settings(tmp_path, port)
    outbox_path = tmp_path / "outbox.sqlite"
    box = sqlite_outbox(outbox_path)
    box.submit(orders(3))
    venue = PaperVenue(bars(), venue_cfg, VenueConfig(volume_share=1.0), id_prefix="V-").start()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    try:
        executor = Executor(executor_cfg, box).start()
        try:
            executor.run(until=lambda: box.journal().height >= 3, max_seconds=30)
            time.sleep(0.3)
        finally:
            executor.stop()
        committed_mark = box.cursor("EXECUTOR->VENUE")[1]
        assert committed_mark > 3
        box.submit(orders(6))  # three more, to a process whose journal never commits
        child = subprocess.Popen([sys.executable, "-c", STALLED_CHILD, str(executor_cfg), str(outbox_path)],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            assert child.stdout.readline().strip() == "started"
            eventually(lambda: len(venue.received()) == 6, what="six orders at the venue")
            venue.advance()
            eventually(lambda: len(venue.reports()) == 12, what="twelve reports sent")
            seqnums = tmp_path / "executor_store" / "FIX.4.4-EXECUTOR-VENUE.seqnums"
            eventually(lambda: int(seqnums.read_text().split(":")[1]) > committed_mark + 8, what="acknowledged")
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(30)
        assert box.journal().height == 3 and box.cursor("EXECUTOR->VENUE")[1] == committed_mark
        out = _restart_until_journaled(executor_cfg, outbox_path, box, 12)
    finally:
        venue.stop()
    (rewind,) = _events(out, "journal_rewind")
    assert rewind["journal_next_seq"] == committed_mark and rewind["store_next_seq"] > committed_mark + 8
    first_request = _events(out, "resend_request")[0]
    assert (first_request["begin_seq"], first_request["end_seq"]) == (committed_mark, 0)
    assert sorted(box.journal()["exec_id"]) == sorted(r.exec_id for r in venue.reports())
    assert venue.received() == {o.clordid: 1 for o in orders(6)}


def test_an_embedded_executor_whose_journal_fails_stops_sending_and_a_restart_recovers_the_reports(tmp_path):
    """``on_journal_failure`` returns (an embedding process that must not die): the executor stops sending,
    logs out and ``run()`` returns, with ``journal_failed`` in its health; what was acknowledged meanwhile is
    past the mark, and a restart with a working journal asks for it and journals it."""
    port = free_port()
    venue_cfg, executor_cfg = settings(tmp_path, port)
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    box.submit(orders(3))
    venue = PaperVenue(bars(), venue_cfg, VenueConfig(volume_share=1.0), id_prefix="V-").start()
    real, failures = box.record, []

    def broken(*args, **kw):
        raise OSError("disk full")

    box.record = broken
    try:
        executor = Executor(executor_cfg, box, on_journal_failure=failures.append).start()
        try:
            executor.run(max_seconds=30)  # returns when the journal fails
            eventually(lambda: not executor.fix.logged_on(), what="logged out")
            health = executor.health()
            box.submit(orders(5))
            assert executor.pump() == 0  # nothing more goes out
        finally:
            executor.stop()
        assert [str(f) for f in failures] == ["disk full"] and health["journal_failed"] == "OSError: disk full"
        assert box.cursor("EXECUTOR->VENUE") is None and set(venue.received()) <= {o.clordid for o in orders(3)}
        box.record = real
        again = Executor(executor_cfg, box).start()
        try:
            again.run(until=lambda: box.journal().height >= 5 and box.depth() == 0, max_seconds=30)
            time.sleep(0.3)
        finally:
            again.stop()
    finally:
        venue.stop()
    assert sorted(box.journal()["exec_id"]) == sorted(r.exec_id for r in venue.reports())
    assert venue.received() == {o.clordid: 1 for o in orders(5)}


def test_an_executor_refuses_settings_that_reset_its_sequence_numbers(tmp_path):
    _, executor_cfg = settings(tmp_path, 9)
    bad = tmp_path / "reset.cfg"
    bad.write_text(executor_cfg.read_text().replace("ResetOnLogon=N", "ResetOnLogon=Y"))
    with pytest.raises(FixError, match=r"reset\.cfg: ResetOnLogon=Y: the executor needs its sequence numbers kept"):
        Executor(bad, sqlite_outbox(tmp_path / "outbox.sqlite"))


def test_reports_received_but_not_committed_when_the_executor_dies_are_asked_for_again_and_journaled(tmp_path):
    """The executor receives the venue's reports (quickfix acknowledges them: its expected number moves past
    them) but dies (SIGKILL) before the journal commits any. Restarted, it winds the store back to the
    journal's mark, the venue resends the reports (PossDupFlag=Y), and the journal ends holding every report
    the venue sent, once; no order reached the venue twice."""
    port = free_port()
    venue_cfg, executor_cfg = settings(tmp_path, port)
    outbox_path = tmp_path / "outbox.sqlite"
    box = sqlite_outbox(outbox_path)
    box.submit(orders(5))
    venue = PaperVenue(bars(), venue_cfg, VenueConfig(volume_share=1.0), id_prefix="V-").start()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    try:
        child = subprocess.Popen([sys.executable, "-c", STALLED_CHILD, str(executor_cfg), str(outbox_path)],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            assert child.stdout.readline().strip() == "started"
            eventually(lambda: len(venue.received()) == 5, what="five orders at the venue")
            venue.advance()  # five fills follow the five New reports
            eventually(lambda: len(venue.reports()) == 10, what="ten reports sent")
            seqnums = tmp_path / "executor_store" / "FIX.4.4-EXECUTOR-VENUE.seqnums"
            eventually(lambda: int(seqnums.read_text().split(":")[1]) >= 12, what="the ten acknowledged")
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(30)
        assert box.journal().is_empty()  # received, acknowledged at the FIX level, and not journaled
        out = _restart_until_journaled(executor_cfg, outbox_path, box, 10)
    finally:
        venue.stop()
    rewinds = _events(out, "journal_rewind")
    assert len(rewinds) == 1 and rewinds[0]["journal_next_seq"] == 1 and rewinds[0]["store_next_seq"] >= 12
    journal = box.journal()
    assert sorted(journal["exec_id"]) == sorted(r.exec_id for r in venue.reports())  # every report, once
    assert venue.received() == {o.clordid: 1 for o in orders(5)}
    assert journal.filter(journal["ord_status"] == "2").height == 5

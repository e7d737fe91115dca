"""The failover catch-up against review 8's cases: writes whose transaction ran on past an outage write (their
stamp re-taken just before COMMIT), a fallback file restored from a backup (sequence numbers reused), and a
whole-table replace superseded in the log by a write that committed on the primary before it."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import timedelta

from emp_core.store import failover as fo
from emp_core.store.failover import LOG_TABLE, FailoverStore, catch_up, pending
from emp_core.store.postgres_store import StoreUnavailableError
from tests.test_failover_mutants import notes
from tests.test_failover_review6 import LostAck, universe
from tests.test_postgres_store_mutants import bars, closes, journal, put


class StalledCommit:
    """A primary whose ``replace_bars`` takes its stamp and lock, then runs on (a long COPY, a COMMIT held up on
    the network) until released; commits; and, with ``lost_ack``, loses the acknowledgement."""

    def __init__(self, real, lost_ack: bool):
        self.real, self.lost_ack = real, lost_ack
        self.stamped, self.go = threading.Event(), threading.Event()

    def __getattr__(self, name):
        target = getattr(self.real, name)
        if name != "replace_bars":
            return target

        def stall_then_commit(*args, **kwargs):
            def last_statement(cur):  # PostgresStore._verify: the write's last statement before COMMIT
                self.stamped.set()
                assert self.go.wait(30)

            self.real._verify = last_statement
            try:
                target(*args, **kwargs)
            finally:
                del self.real._verify
            if self.lost_ack:
                raise StoreUnavailableError(f"{self.real}: lost the connection to PostgreSQL at commit")

        return stall_then_commit


def _stalled(outage, monkeypatch, lost_ack: bool):
    """Write X (A = 2.0) takes its lock on the primary and runs on for 3 s; meanwhile another step, whose
    connection failed, writes A = 1.0 on the fallback (seq 1); X commits 0.5 s after that. Commit order, and
    with ``lost_ack`` the log's order and the fallback's rows, all end with A = 2.0. (The clock's margin is
    shrunk from 60 s to 1 s so that this takes seconds.)"""
    monkeypatch.setattr(fo, "MARGIN", timedelta(seconds=1))
    primary, down, fallback = outage
    stalled = StalledCommit(primary, lost_ack)
    store_x, errors = FailoverStore(stalled, fallback), []

    def write_x():
        try:
            put(store_x, bars("A", 5, 2.0), "x", selection=["A"])
        except Exception as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=write_x)
    thread.start()
    try:
        assert stalled.stamped.wait(30)
        time.sleep(3)
        put(down(), bars("A", 5, 1.0), "step1", selection=["A"])
        time.sleep(0.5)
    finally:
        stalled.go.set()
        thread.join(30)
    assert not errors, errors
    return primary, fallback, store_x


def test_an_own_write_that_committed_after_an_outage_write_is_later_though_it_locked_before(outage, monkeypatch):
    primary, fallback, store_x = _stalled(outage, monkeypatch, lost_ack=True)
    assert store_x.reason and pending(fallback)["run_id"].to_list() == ["step1", "x"]
    report = catch_up(primary, fallback)
    assert "CONFLICT" in notes(report)[0] and "this log's write 2, committed" in notes(report)[0], report.replayed
    assert closes(primary, "A") == [2.0] * 5
    assert catch_up(primary, fallback, keep_primary=[1]).parity and closes(primary, "A") == [2.0] * 5


def test_another_writers_write_that_committed_after_an_outage_write_is_not_overwritten(outage, monkeypatch):
    primary, fallback, _ = _stalled(outage, monkeypatch, lost_ack=False)
    assert pending(fallback)["run_id"].to_list() == ["step1"]
    report = catch_up(primary, fallback)
    assert "CONFLICT" in notes(report)[0] and "run x" in notes(report)[0], report.replayed
    assert closes(primary, "A") == [2.0] * 5


def test_a_stamp_carries_the_time_its_write_committed(outage, monkeypatch):
    """Measured directly: the stamp of a write held 3 s between its lock and its COMMIT is within the last
    second before the commit returned, not 3 s before it."""
    primary, _, fallback = outage
    stalled = StalledCommit(primary, lost_ack=False)
    thread = threading.Thread(target=put, args=(FailoverStore(stalled, fallback), bars("A", 1, 2.0), "x"))
    thread.start()
    assert stalled.stamped.wait(30)
    time.sleep(3)
    stalled.go.set()
    thread.join(30)
    lag = primary.query("SELECT extract(epoch FROM clock_timestamp() - committed_at) AS s FROM ops.write_log").item()
    assert 0 <= lag < 1.0, lag


def test_a_fallback_restored_from_a_backup_orders_an_earlier_eras_replays_by_time(outage, tmp_path):
    """The fallback file restored from a backup keeps its id but its sequence goes back: the replays of the
    earlier era's writes 2 and 3 (no longer in the log) are ordered by their time, not by numbers that a new
    write 2 now reuses, so the new write, made days after, is applied."""
    primary, down, fallback = outage
    down().append("market.ingest_journal", journal("j"))
    backup = tmp_path / "backup.duckdb"
    shutil.copy(fallback.path, backup)
    put(down(), bars("A", 5, 1.0), "old2", selection=["A"])
    put(down(), bars("A", 5, 1.5), "old3", selection=["A"])
    assert catch_up(primary, fallback).parity
    primary.query("UPDATE ops.write_log SET original_at = original_at - interval '3 days', "
                  "committed_at = committed_at - interval '3 days'")
    shutil.copy(backup, fallback.path)
    put(down(), bars("A", 5, 3.0), "new", selection=["A"])
    assert pending(fallback)["run_id"].to_list() == ["j", "new"]
    report = catch_up(primary, fallback)
    assert report.parity, report.replayed
    assert closes(primary, "A") == [3.0] * 5


def _shift_log(fallback, run_id: str, seconds: float) -> None:
    fallback.query(f"UPDATE {LOG_TABLE} SET written_at = written_at - to_seconds($s), mono_ns = mono_ns - $n "
                   "WHERE run_id = $r", {"s": seconds, "n": int(seconds * 1e9), "r": run_id})


def test_a_replace_is_not_superseded_by_a_later_logged_write_that_committed_before_it(outage):
    """Seq 1 replaced the universe (OUT) on the fallback 700 s ago; write 2 (NEW) committed on the primary 800 s
    ago, its acknowledgement lost until now (so it is logged after seq 1). Seq 1 came after: it is applied."""
    primary, down, fallback = outage
    down().replace_table("market.universe", universe("OUT"))
    fallback.query(f"UPDATE {LOG_TABLE} SET run_id = 'step1'")
    _shift_log(fallback, "step1", 700)
    FailoverStore(LostAck(primary, "replace_table"), fallback).replace_table("market.universe", universe("NEW"))
    primary.query("UPDATE ops.write_log SET committed_at = committed_at - interval '800 seconds'")
    report = catch_up(primary, fallback)
    assert report.parity and notes(report)[1].startswith("already applied"), report.replayed
    assert primary.query("SELECT symbol FROM market.universe").rows() == [("OUT",)]

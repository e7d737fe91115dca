"""The failover catch-up against review 9's cases: every write path's stamp carries the time the server
processed its COMMIT (also when the COMMIT itself was held up on the way), a catch-up interrupted after a
superseding replay converges on its retry, and a restored fallback's earlier-era replay made after a new
outage write is a conflict."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import timedelta

import polars as pl
import psycopg
import pytest

from emp_core.store import failover as fo
from emp_core.store.duckdb_store import DuckDBStore
from emp_core.store.failover import catch_up, pending
from emp_core.store.postgres_store import StoreUnavailableError
from tests.test_failover_mutants import feature, notes
from tests.test_failover_review6 import universe
from tests.test_postgres_store_mutants import WINDOW, bars, closes, journal, put


def _held_commit(monkeypatch):
    """Hold the COMMIT of writes made on the thread ``hold["thread"]`` (after their last statement, before the
    server sees the COMMIT: a COMMIT held up on the network) until ``go`` is set."""
    real = psycopg.Connection.commit
    hold, ready, go = {}, threading.Event(), threading.Event()

    def commit(self):
        if threading.current_thread() is hold.get("thread"):
            ready.set()
            assert go.wait(30)
        return real(self)

    monkeypatch.setattr(psycopg.Connection, "commit", commit)
    return hold, ready, go


def _in_thread(fn) -> tuple[threading.Thread, list]:
    errors: list = []

    def run():
        try:
            fn()
        except Exception as exc:  # reported by the caller
            errors.append(exc)

    thread = threading.Thread(target=run)
    return thread, errors


def _commit_after_an_outage_write(primary, down, monkeypatch) -> None:
    """Another writer's replace of A (2.0) runs its last statement; its COMMIT reaches the server 3.5 s later,
    0.5 s after an outage write of the same window (1.0) was made. The clock's margin is shrunk to 1 s."""
    monkeypatch.setattr(fo, "MARGIN", timedelta(seconds=1))
    hold, ready, go = _held_commit(monkeypatch)
    thread, errors = _in_thread(lambda: put(primary, bars("A", 5, 2.0), "x", selection=["A"]))
    hold["thread"] = thread
    thread.start()
    try:
        assert ready.wait(30)
        time.sleep(3)
        put(down(), bars("A", 5, 1.0), "step1", selection=["A"])
        time.sleep(0.5)
    finally:
        go.set()
        thread.join(30)
    assert not errors, errors


WRITES = {
    "replace_bars": lambda p: put(p, bars("A", 1, 2.0), "x"),
    "upsert_bars": lambda p: p.upsert_bars("bars_1d", bars("A", 1, 2.0), source="s", run_id="x"),
    "append": lambda p: p.append("market.ingest_journal", journal("x")),
    "replace_table": lambda p: p.replace_table("market.universe", universe("X")),
    "replace_windows": lambda p: p.replace_windows({"sensory.extra": feature(2.0)}, dataset="bars_1d",
                                                   start=WINDOW[0], end=WINDOW[1]),
    "append_table": lambda p: p.append_table("macro.t", pl.DataFrame({"k": ["a"]})),
    "overwrite_table": lambda p: p.overwrite_table("macro.t", pl.DataFrame({"k": ["a"]})),
    "insert_new": lambda p: (p.ensure_table("evolution.keyed", {"k": pl.String}, ("k",)),
                             p.insert_new("evolution.keyed", pl.DataFrame({"k": ["a"]}), ("k",))),
}


@pytest.mark.parametrize("operation", sorted(WRITES))
def test_every_write_is_stamped_with_the_time_the_server_processed_its_commit(outage, monkeypatch, operation):
    """A write whose COMMIT is held 3 s after its last statement is stamped within a second of when the COMMIT
    went through, on every write path."""
    primary, _, _ = outage
    if operation == "insert_new":
        primary.ensure_table("evolution.keyed", {"k": pl.String}, ("k",))
    primary.query("DELETE FROM ops.write_log")
    hold, ready, go = _held_commit(monkeypatch)
    thread, errors = _in_thread(lambda: WRITES[operation](primary))
    hold["thread"] = thread
    thread.start()
    try:
        assert ready.wait(30)
        time.sleep(3)
    finally:
        go.set()
        thread.join(30)
    assert not errors, errors
    lags = primary.query("SELECT extract(epoch FROM clock_timestamp() - committed_at) AS s FROM ops.write_log "
                         "WHERE operation = $o", {"o": operation})["s"].to_list()
    assert lags and all(0 <= float(lag) < 1.0 for lag in lags), (operation, lags)


def test_a_write_whose_commit_reached_the_server_after_an_outage_write_is_later(outage, monkeypatch):
    """Another writer's replace took its lock and ran its last statement before an outage write of the same
    window, but its COMMIT reached the server 0.5 s after it: it is later, a conflict (clock margin 1 s)."""
    primary, down, fallback = outage
    primary.tables()  # migrated before the hold (the hold is of the write's COMMIT)
    _commit_after_an_outage_write(primary, down, monkeypatch)
    report = catch_up(primary, fallback)
    assert "CONFLICT" in notes(report)[0] and "run x" in notes(report)[0], report.replayed
    assert closes(primary, "A") == [2.0] * 5


def test_a_catch_up_interrupted_after_a_superseding_replay_converges_on_its_retry(outage, monkeypatch):
    """Seq 1 and seq 2 replace the universe on the fallback. The first catch-up skips 1 (superseded by 2) and
    replays 2, whose acknowledgement is lost (nothing is marked). The retry still skips 1 and finds 2
    applied: the primary holds TWO, nothing pending."""
    primary, down, fallback = outage
    store = down()
    store.replace_table("market.universe", universe("ONE"))
    store.replace_table("market.universe", universe("TWO"))
    real = primary.replace_table

    def lost(*args, **kwargs):
        real(*args, **kwargs)
        raise StoreUnavailableError("lost the connection to PostgreSQL at commit")

    monkeypatch.setattr(primary, "replace_table", lost)
    with pytest.raises(StoreUnavailableError):
        catch_up(primary, fallback)
    monkeypatch.setattr(primary, "replace_table", real)
    assert pending(fallback).height == 2
    report = catch_up(primary, fallback)
    assert report.parity, report.replayed
    assert notes(report)[0].startswith("superseded") and notes(report)[1].startswith("already applied")
    assert primary.query("SELECT symbol FROM market.universe").rows() == [("TWO",)]


def test_a_replay_of_a_write_the_restored_log_no_longer_holds_is_ordered_by_its_time(outage, tmp_path):
    """The restored file's log no longer holds the earlier era's writes: their replays, tagged with this
    fallback's id, count as another writer's, ordered by their time (a replay of an own write would be ordered
    by seq, whatever its time). Here one is dated after the new outage write (a constructed history: it shows
    the rule, by which a replay after the write is a conflict and one before it, as in review 8's test, is
    not)."""
    primary, down, fallback = outage
    down().append("market.ingest_journal", journal("j"))
    backup = tmp_path / "backup.duckdb"
    shutil.copy(fallback.path, backup)
    put(down(), bars("A", 5, 1.5), "old2", selection=["A"])
    shutil.copy(fallback.path, tmp_path / "era1.duckdb")
    shutil.copy(backup, fallback.path)
    put(down(), bars("A", 5, 3.0), "new", selection=["A"])  # the new era's seq 2
    era1 = DuckDBStore(tmp_path / "era1.duckdb")  # the earlier era's file, as it was before the restore
    assert catch_up(primary, era1).parity  # the earlier era's write 2 replayed now, after the new write
    primary.query("UPDATE ops.write_log SET original_at = clock_timestamp()")  # ... and made after it too
    report = catch_up(primary, fallback)
    assert notes(report)[0].startswith("already applied") and "CONFLICT" in notes(report)[1], report.replayed
    assert closes(primary, "A") == [1.5] * 5


@pytest.mark.parametrize("step_ms", [0, 50])
def test_a_write_stamped_after_a_small_backward_clock_step_still_counts_from_its_commit(outage, monkeypatch,
                                                                                       step_ms):
    """The server's clock steps back ``step_ms`` between a write's BEGIN and its stamp (ntpd steps at 128 ms; a
    VM's clock corrected after a resume), modelled by the stamp's default reading that much early. The stamp
    is still taken at COMMIT: the write, whose COMMIT reached the server after an outage write, is later."""
    primary, down, fallback = outage
    primary.tables()
    primary.query(f"ALTER TABLE ops.write_log ALTER COLUMN committed_at SET DEFAULT clock_timestamp() "
                  f"- interval '{step_ms} milliseconds'")
    _commit_after_an_outage_write(primary, down, monkeypatch)
    report = catch_up(primary, fallback)
    assert "CONFLICT" in notes(report)[0] and closes(primary, "A") == [2.0] * 5, report.replayed


@pytest.mark.parametrize(("minutes", "kept"), [(59, False), (61, True)])
def test_a_row_keeps_its_own_time_only_when_dated_an_hour_before_its_transaction(outage, minutes, kept):
    """A hand-made (or data-only restored) stamp keeps the time it was given when that is at least an hour
    before its transaction; a later one is taken at COMMIT like any stamp."""
    primary, _, _ = outage
    primary.tables()
    primary.query("INSERT INTO ops.write_log (committed_at, operation, target) VALUES "
                  f"(clock_timestamp() - interval '{minutes} minutes', 'append', 'market.universe')")
    age = float(primary.query("SELECT extract(epoch FROM clock_timestamp() - committed_at) AS s "
                              "FROM ops.write_log").item())
    assert (age > 58 * 60) == kept, age

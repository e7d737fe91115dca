"""The failover catch-up against review 6's cases: this log's own writes whose primary commit lost its
acknowledgement (so they are on the primary *and* logged), an earlier version's log rows without a sequence
number, logged rows that are no longer all there, a fallback held by another process during a catch-up,
``insert_new`` against another writer's insert of the same key, and two processes failing over onto one file."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta

import polars as pl
import pytest

from emp_core.store.duckdb_store import DuckDBStore, StoreLockedError
from emp_core.store.failover import LOG_TABLE, FailoverStore, catch_up, pending
from emp_core.store.postgres_store import StoreUnavailableError
from tests.support import free_port
from tests.test_failover_mutants import age_stamps, notes
from tests.test_postgres_store_mutants import T, bars, closes, journal, put


class LostAck:
    """A primary that commits a write, then loses the connection before the acknowledgement arrives."""

    def __init__(self, real, *operations: str):
        self.real, self.operations = real, operations

    def __getattr__(self, name):
        target = getattr(self.real, name)
        if name not in self.operations:
            return target

        def commit_then_fail(*args, **kwargs):
            target(*args, **kwargs)
            raise StoreUnavailableError(f"{self.real}: lost the connection to PostgreSQL at commit")

        return commit_then_fail


def universe(*symbols: str) -> pl.DataFrame:
    return pl.DataFrame({"dataset": "d", "symbol": list(symbols)})


# -- this log's own writes on the primary, by their acknowledgement lost -----------------------------------------

def _ab(price: float) -> pl.DataFrame:
    return pl.concat([bars("A", 5, price), bars("B", 5, price)])


def _journal_rows(store, run_id: str) -> int:
    return store.query("SELECT count(*) AS n FROM market.ingest_journal WHERE run_id = $r", {"r": run_id}).item()


def test_an_own_later_write_already_on_the_primary_is_a_conflict_forcing_cannot_override(outage):
    """Step 1 wrote the window on the fallback (seq 1); step 2 then wrote it on the primary, lost the
    acknowledgement and wrote it on the fallback too (seq 2). Write order is 1 then 2, and the primary holds 2
    already: replaying 1 would put its older rows over 2's. It is a conflict that names write 2, forcing
    does not override it, and keeping the primary's rows leaves exactly write 2 there, once."""
    primary, down, fallback = outage
    put(down(), bars("A", 5, 1.0), "step1", selection=["A"])
    step2 = FailoverStore(LostAck(primary, "replace_bars"), fallback)
    put(step2, bars("A", 5, 2.0), "step2", selection=["A"])
    assert step2.reason and pending(fallback)["run_id"].to_list() == ["step1", "step2"]
    for force in ([], [1]):
        report = catch_up(primary, fallback, force=force)
        assert "CONFLICT" in notes(report)[0] and "this log's write 2, committed" in notes(report)[0], \
            report.replayed
        assert "--keep-primary 1` (the primary holds this log's later write; keeping it drops this whole write" \
            in notes(report)[0] and "--replay" not in notes(report)[0]
        assert notes(report)[1] == "waits for write 1 of the same table"
        assert closes(primary, "A") == [2.0] * 5
    report = catch_up(primary, fallback, keep_primary=[1])
    assert report.parity and notes(report)[0].startswith("already applied"), report.replayed
    assert closes(primary, "A") == closes(fallback, "A") == [2.0] * 5
    assert _journal_rows(primary, "step2") == 1 and pending(fallback).height == 0


def test_a_stream_write_after_an_own_lost_acknowledgement_commit_is_never_reverted(outage):
    """Write order: seq 1 (A), then write 2 (A and B, on the primary, acknowledgement lost), then the stream's
    bar of B. The primary already holds that order's state; the catch-up must not put seq 1's older A back."""
    primary, down, fallback = outage
    put(down(), bars("A", 5, 1.0), "step1", selection=["A"])
    put(FailoverStore(LostAck(primary, "replace_bars"), fallback), _ab(2.0), "step2", selection=["A", "B"])
    primary.upsert_bars("bars_1d", bars("B", 1, 9.0, start=T + timedelta(days=2)), source="stream", run_id="z")
    report = catch_up(primary, fallback)
    assert "CONFLICT" in notes(report)[0], report.replayed
    assert catch_up(primary, fallback, keep_primary=[1]).parity
    assert closes(primary, "A") == [2.0] * 5 and closes(primary, "B") == [2.0, 2.0, 9.0, 2.0, 2.0]


def _shift_log(fallback, run_id: str, seconds: float) -> None:
    """Move a logged write's clocks back, as if it was written ``seconds`` earlier."""
    fallback.query(f"UPDATE {LOG_TABLE} SET written_at = written_at - to_seconds($s), mono_ns = mono_ns - $n "
                   "WHERE run_id = $r", {"s": seconds, "n": int(seconds * 1e9), "r": run_id})


def _shift_stamps(primary, run_id: str, seconds: float) -> None:
    primary.query("UPDATE ops.write_log SET committed_at = committed_at - make_interval(secs => $s) "
                  "WHERE run_id = $r", {"s": seconds, "r": run_id})


@pytest.mark.parametrize("committed", [600, 800])
def test_an_own_lost_acknowledgement_commit_is_ordered_by_its_commit_time(outage, committed):
    """Seq 1 (A) logged 700 s ago; write 2 (A and B) committed on the primary ``committed`` s ago, its
    acknowledgement lost until now (so logged after seq 1); another writer replaced B's window 590 s ago,
    after write 2's commit. Committed after seq 1 (600 s ago), write 2 is later: a conflict, and the primary
    keeps 2's A and the other writer's B. Committed before it (800 s ago, beyond the error bound), seq 1 came
    after: it is applied over write 2's A, and B stays the other writer's."""
    primary, down, fallback = outage
    put(down(), bars("A", 5, 1.0), "step1", selection=["A"])
    _shift_log(fallback, "step1", 700)
    put(FailoverStore(LostAck(primary, "replace_bars"), fallback), _ab(2.0), "step2", selection=["A", "B"])
    put(primary, bars("B", 5, 9.0), "z", selection=["B"])
    _shift_stamps(primary, "step2", committed)
    _shift_stamps(primary, "z", 590)
    report = catch_up(primary, fallback)
    if committed == 600:
        assert "CONFLICT" in notes(report)[0] and closes(primary, "A") == [2.0] * 5, report.replayed
    else:
        assert report.parity and notes(report)[1].startswith("already applied"), report.replayed
        assert closes(primary, "A") == [1.0] * 5
    assert closes(primary, "B") == [9.0] * 5


def test_an_own_earlier_write_already_on_the_primary_is_not_a_later_conflict(outage):
    """The other way round: seq 1 is on the primary (acknowledgement lost) and logged; seq 2, another step's
    outage write of the same window seconds later, is after it in this log, whatever the clocks say."""
    primary, down, fallback = outage
    put(FailoverStore(LostAck(primary, "replace_bars"), fallback), bars("A", 5, 1.0), "step1", selection=["A"])
    put(down(), bars("A", 5, 2.0), "step2", selection=["A"])
    report = catch_up(primary, fallback)
    assert notes(report)[0].startswith("already applied") and report.parity, report.replayed
    assert closes(primary, "A") == [2.0] * 5


def test_an_own_later_append_on_the_primary_is_a_conflict_for_an_earlier_replace_of_its_table(outage):
    """An append cannot be applied again without doubling it, so an earlier replace of its table, whose replay
    would wipe it, is not replayed: a conflict, reported, nothing lost."""
    primary, down, fallback = outage
    down().replace_table("market.universe", universe("OUT"))
    FailoverStore(LostAck(primary, "append"), fallback).append("market.universe", universe("ADDED"))
    report = catch_up(primary, fallback)
    assert "CONFLICT" in notes(report)[0] and "this log's write 2" in notes(report)[0], report.replayed
    assert primary.query("SELECT symbol FROM market.universe").rows() == [("ADDED",)]


def test_forcing_never_overrides_an_own_later_replay(outage):
    """Seq 2 was replayed (and caught up) while seq 1 stayed pending: forcing seq 1 would undo seq 2's replay,
    which would then have to be applied again; it stays a conflict, and the primary keeps seq 2's rows. Against
    another writer's identical stamp, forcing does replay."""
    primary, down, fallback = outage
    put(down(), bars("A", 5, 1.0), "step1", selection=["A"])
    put(down(), bars("A", 5, 2.0), "step2", selection=["A"])
    # seq 1 held aside: renumbered, its logged bars (kept by seq) are not found, so its replay fails its count
    fallback.query(f"UPDATE {LOG_TABLE} SET seq = 99 WHERE run_id = 'step1'")
    assert catch_up(primary, fallback, force=[2]).replayed[0]["seq"] == 2  # ... while seq 2 is replayed
    fallback.query(f"UPDATE {LOG_TABLE} SET seq = 1 WHERE run_id = 'step1'")
    report = catch_up(primary, fallback, force=[1])
    assert "CONFLICT" in notes(report)[0] and "the replay of this log's write 2" in notes(report)[0], \
        report.replayed
    assert closes(primary, "A") == [2.0] * 5
    primary.query("UPDATE ops.write_log SET replay_of = NULL, write_id = 'someone else'")
    assert catch_up(primary, fallback, force=[1]).parity and closes(primary, "A") == [1.0] * 5


# -- an earlier version's rows ----------------------------------------------------------------------------------

def test_a_log_row_without_a_seq_is_reported_and_holds_back_its_table(outage):
    primary, down, fallback = outage
    store = down()
    store.append("market.ingest_journal", journal("legacy"))
    store.append("market.ingest_journal", journal("newer"))
    fallback.query(f"UPDATE {LOG_TABLE} SET seq = NULL WHERE run_id = 'legacy'")
    report = catch_up(primary, fallback)
    assert [r["parity"] for r in report.replayed] == [False, False], report.replayed
    assert "earlier version" in notes(report)[0] and "caught_up_at" in notes(report)[0]
    assert notes(report)[1] == "waits for write None of the same table"
    assert primary.query("SELECT count(*) AS n FROM market.ingest_journal").item() == 0
    assert pending(fallback).height == 2


def test_a_log_without_write_ids_is_reported_not_a_crash(outage):
    """A log kept by a version before write ids (no such column at all): its rows are reported for a replay by
    hand, and nothing is applied."""
    primary, down, fallback = outage
    put(down(), bars("A", 5, 1.0), "old", selection=["A"])
    fallback.query(f"ALTER TABLE {LOG_TABLE} DROP COLUMN write_id")
    report = catch_up(primary, fallback)
    assert "earlier version" in notes(report)[0] and not report.parity, report.replayed
    assert closes(primary, "A") == []


def test_parts_logged_before_row_counts_were_kept_still_replay(outage):
    primary, down, fallback = outage
    put(down(), bars("A", 5, 1.0), "old", selection=["A"])
    fallback.query("ALTER TABLE ops.failover_parts DROP COLUMN rows")
    fallback.query(f"ALTER TABLE {LOG_TABLE} DROP COLUMN logged_rows")
    assert catch_up(primary, fallback).parity
    assert closes(primary, "A") == [1.0] * 5 and _journal_rows(primary, "old") == 1


# -- the logged rows must all be there ---------------------------------------------------------------------------

@pytest.mark.parametrize("kept", [0, 4])
def test_a_replace_whose_logged_bars_are_not_all_there_is_refused_and_the_primary_untouched(outage, kept):
    primary, down, fallback = outage
    put(primary, bars("A", 10, 1.0), "before", selection=["A"])
    age_stamps(primary)
    put(down(), bars("A", 10, 2.0), "outage", selection=["A"])
    fallback.query("DELETE FROM ops.failover_rows WHERE ts >= $t", {"t": T + timedelta(days=kept)})
    report = catch_up(primary, fallback)
    assert notes(report)[0].startswith("FAILED") and f"holds {kept} bars of the 10" in notes(report)[0], \
        report.replayed
    assert closes(primary, "A") == [1.0] * 10 and pending(fallback).height == 1


def test_an_upsert_whose_logged_bars_are_gone_is_refused(outage):
    primary, down, fallback = outage
    down().upsert_bars("bars_1d", bars("A", 3, 2.0), source="stream", run_id="s")
    fallback.query("DELETE FROM ops.failover_rows")
    report = catch_up(primary, fallback)
    assert notes(report)[0].startswith("FAILED") and "holds 0 bars of the 3" in notes(report)[0], report.replayed
    assert pending(fallback).height == 1


def test_a_table_write_whose_logged_rows_are_not_all_there_is_refused(outage):
    primary, down, fallback = outage
    primary.replace_table("market.universe", universe("OLD"))
    age_stamps(primary)
    down().replace_table("market.universe", universe("A", "B", "C"))
    part = fallback.query("SELECT part FROM ops.failover_parts").item()
    fallback.query(f"DELETE FROM {part} WHERE symbol = 'B'")
    report = catch_up(primary, fallback)
    assert "holds 2 frame rows of the 3" in notes(report)[0], report.replayed
    assert primary.query("SELECT symbol FROM market.universe").rows() == [("OLD",)]


# -- the fallback held by another process -------------------------------------------------------------------------

def test_a_fallback_held_by_another_process_stops_the_catch_up_for_a_retry(outage, monkeypatch):
    """A failed-over step still writing holds the file past the lock timeout: the catch-up stops with that
    error (its run fails, and the recovery sensor retries it), marking nothing, instead of reporting the write
    FAILED and holding its table back for an operator."""
    primary, down, fallback = outage
    put(down(), bars("A", 5, 1.0), "w1", selection=["A"])
    real = DuckDBStore.query

    def busy(self, sql, params=None):
        if "ops.failover_rows" in sql:
            raise StoreLockedError(f"{self.path}: held by another process for over 60 s")
        return real(self, sql, params)

    monkeypatch.setattr(DuckDBStore, "query", busy)
    with pytest.raises(StoreLockedError):
        catch_up(primary, fallback)
    monkeypatch.setattr(DuckDBStore, "query", real)
    assert pending(fallback).height == 1 and closes(primary, "A") == []
    assert catch_up(primary, fallback).parity and closes(primary, "A") == [1.0] * 5


# -- insert_new: the first insert of a key wins ------------------------------------------------------------------

def _trials(value: float, *keys: str) -> pl.DataFrame:
    return pl.DataFrame({"k": list(keys), "v": [value] * len(keys)})


def _outage_insert(down, frame: pl.DataFrame) -> None:
    """A step that failed over on an ingest write (insert_new alone waits for the primary), then inserts."""
    store = down()
    store.append("market.ingest_journal", journal("ingest"))
    store.ensure_table("evolution.keyed", {"k": pl.String, "v": pl.Float64}, ("k",))
    store.insert_new("evolution.keyed", frame, ("k",))


@pytest.mark.parametrize("theirs", [1.0, 9.0])
def test_a_later_insert_of_an_outage_key_with_other_values_is_a_conflict(outage, theirs):
    """The outage inserted k1 and k2 first; another writer inserted k1 later. With the same values the order
    does not matter (applied); with others, the primary's row would stand where the outage's came first."""
    primary, down, fallback = outage
    primary.ensure_table("evolution.keyed", {"k": pl.String, "v": pl.Float64}, ("k",))
    age_stamps(primary)
    _outage_insert(down, _trials(1.0, "k1", "k2"))
    primary.insert_new("evolution.keyed", _trials(theirs, "k1"), ("k",))
    report = catch_up(primary, fallback)
    rows = primary.query("SELECT k, v FROM evolution.keyed ORDER BY k").rows()
    if theirs == 1.0:
        assert report.parity and rows == [("k1", 1.0), ("k2", 1.0)], report.replayed
    else:
        assert "CONFLICT" in notes(report)[1] and rows == [("k1", 9.0)], report.replayed


def test_an_earlier_insert_of_an_outage_key_stands_without_a_conflict(outage):
    """A key the primary held before the outage write keeps its row (the first insert wins): no conflict."""
    primary, down, fallback = outage
    primary.ensure_table("evolution.keyed", {"k": pl.String, "v": pl.Float64}, ("k",))
    primary.insert_new("evolution.keyed", _trials(9.0, "k1"), ("k",))
    age_stamps(primary)
    _outage_insert(down, _trials(1.0, "k1", "k2"))
    report = catch_up(primary, fallback)
    assert report.parity, report.replayed
    assert primary.query("SELECT k, v FROM evolution.keyed ORDER BY k").rows() == [("k1", 9.0), ("k2", 1.0)]


# -- two processes failing over onto one file --------------------------------------------------------------------

WRITER = textwrap.dedent('''
    import sys
    from datetime import datetime, timedelta
    import polars as pl
    from emp_core.store import DuckDBStore
    from emp_core.store.failover import FailoverStore
    from emp_core.store.postgres_store import PostgresStore

    path, down, tag, n, timeout, rows = sys.argv[1:]
    tag, n, timeout, rows = int(tag), int(n), float(timeout), int(rows)
    t0 = datetime(2020, 3, 2)
    store = FailoverStore(PostgresStore(down, connect_timeout=2), DuckDBStore(path, lock_timeout=timeout))
    nothing = pl.DataFrame(schema={"run_id": pl.String})
    for i in range(n):
        price = float(tag * 1000 + i)
        frame = pl.DataFrame({"symbol": "A", "ts": [t0 + timedelta(hours=h) for h in range(rows)], "open": price,
                              "high": price, "low": price, "close": price, "volume": 1.0})
        try:
            store.replace_bars("bars_1h", frame, source="feed", run_id=f"p{tag}-{i}",
                               window=(t0, t0 + timedelta(days=30)), quarantine=nothing, journal=nothing,
                               selection=["A"])
            print(f"p{tag}-{i} ok", flush=True)
        except Exception as exc:
            print(f"p{tag}-{i} {type(exc).__name__}", flush=True)
''')


def _two_writers(tmp_path, fallback, n: int, timeout: float, rows: int) -> dict[str, str]:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    down = f"postgresql://127.0.0.1:{free_port()}/emp"
    procs = [subprocess.Popen([sys.executable, str(script), str(fallback.path), down, str(tag), str(n), str(timeout),
                               str(rows)], stdout=subprocess.PIPE, text=True) for tag in (1, 2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    return dict(line.split(" ", 1) for out in outs for line in out.splitlines())


def test_two_processes_failing_over_onto_one_file_log_every_acknowledged_write_in_commit_order(outage, tmp_path):
    """Two steps fail over at once onto one fallback file (DuckDB admits one writing process: each waits for
    the file). Every acknowledged write is logged, sequence order is the order they were applied (the
    fallback ends with the last seq's rows), and the catch-up leaves the primary as the fallback."""
    primary, _, fallback = outage
    acked = _two_writers(tmp_path, fallback, 10, 60.0, 200)
    assert len(acked) == 20 and set(acked.values()) == {"ok"}, acked
    log = pending(fallback).sort("seq")
    assert sorted(log["run_id"]) == sorted(acked) and log["mono_ns"].is_sorted()
    last = log["run_id"][-1]
    assert fallback.query("SELECT DISTINCT run_id FROM market.bars_1h")["run_id"].to_list() == [last]
    assert catch_up(primary, fallback).parity
    assert primary.query("SELECT DISTINCT run_id FROM market.bars_1h")["run_id"].to_list() == [last]


def test_a_process_that_cannot_get_the_fallback_fails_loudly_and_logs_nothing(outage, tmp_path):
    _, _, fallback = outage
    acked = _two_writers(tmp_path, fallback, 3, 0.05, 200_000)
    refused = {run for run, result in acked.items() if result != "ok"}
    assert refused and {acked[r] for r in refused} == {"StoreLockedError"}, acked
    assert set(pending(fallback)["run_id"]) == set(acked) - refused

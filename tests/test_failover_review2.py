"""The second fresh-context review of the failover catch-up (after its write-ahead-log redesign): each test is a
sequence of events the review built that broke a guarantee of emp_core/store/failover.py, kept as a regression
test of the fix."""
import time
from datetime import datetime, timedelta

import polars as pl

from emp_core.clock import utcnow
from emp_core.market_data.ingest import journal_failure
from emp_core.market_data.pipeline import ingest_window
from emp_core.store import failover
from emp_core.store.failover import FailoverStore, catch_up, pending
from emp_core.store.postgres_store import PostgresStore, StoreUnavailableError
from tests.test_failover import YEAR, hourly, synthetic

NOW = datetime(2026, 1, 1)


def at(primary, symbol, day):
    return primary.query("SELECT close FROM market.bars_1d WHERE symbol = $s AND ts = $t",
                         {"s": symbol, "t": day}).item()


def bar(symbol, day, price):
    return hourly(symbol, [0], price).with_columns(pl.lit(day).alias("ts"))


# -- R1: a commit whose acknowledgement was lost is done again on the fallback, then replayed: doubled ---------

class AckLost(PostgresStore):
    """PostgreSQL commits the write, then the connection drops before the client hears it: what
    PostgresStore.begin() turns into StoreUnavailableError("lost the connection ... at commit")."""

    def append(self, table, frame):
        super().append(table, frame)
        raise StoreUnavailableError(f"{self}: lost the connection to PostgreSQL at commit: server closed")

    def replace_bars(self, table, bars, **kw):
        super().replace_bars(table, bars, **kw)
        raise StoreUnavailableError(f"{self}: lost the connection to PostgreSQL at commit: server closed")


def test_R1a_append_committed_on_primary_but_ack_lost_is_doubled_by_the_catch_up(outage, pg_url):
    primary, _, fallback = outage
    store = FailoverStore(AckLost(pg_url), fallback)
    journal_failure(store, run_id="R", dataset_name="bars_1d", source="synthetic", partitions=YEAR, error="boom")
    assert store.reason  # failed over after the commit
    report = catch_up(primary, fallback)
    n = primary.query("SELECT count(*) AS n FROM market.ingest_journal WHERE run_id = 'R'").item()
    assert n == 1, (n, report.replayed)


def test_R1b_ingest_committed_on_primary_but_ack_lost_doubles_its_journal(outage, pg_url):
    primary, _, fallback = outage
    store = FailoverStore(AckLost(pg_url), fallback)
    ingest_window(store, synthetic(2, 1), "bars_1d", YEAR, run_id="R", now=NOW, max_gap_ratio=1.0)
    assert store.reason
    report = catch_up(primary, fallback)
    n = primary.query("SELECT count(*) AS n FROM market.ingest_journal WHERE run_id = 'R'").item()
    assert report.parity and n == 1, (n, report.replayed)


# -- R2: appends never overlap, yet every later append to the same table is a CONFLICT --------------------------

def test_R2_an_outage_append_conflicts_with_any_later_append_and_keep_primary_loses_it(outage):
    primary, down, fallback = outage
    journal_failure(down(), run_id="outage-run", dataset_name="bars_1d", source="synthetic", partitions=YEAR,
                    error="source timed out")
    journal_failure(primary, run_id="other-run", dataset_name="bars_1h", source="synthetic", partitions=YEAR,
                    error="another failure, later, on the primary")
    report = catch_up(primary, fallback)
    assert report.parity, report.replayed  # fails: "CONFLICT ... append by run other-run"


# -- R3: --replay N (force) skips every later stamp, including the later outage writes already replayed --------

def test_R3_forcing_an_earlier_outage_write_clobbers_a_later_outage_write(outage, pg_url):
    primary, down, fallback = outage
    store = down()
    ingest_window(store, synthetic(2, 1, price=10.0), "bars_1d", YEAR, run_id="O1", symbols=["SYN0000"], now=NOW,
                  max_gap_ratio=1.0)                                       # O1: SYN0000's 2020 at 10
    time.sleep(0.05)
    other = PostgresStore(pg_url)                                         # another host reaches the primary
    other.upsert_bars("bars_1d", bar("SYN0000", datetime(2020, 6, 1), 99.0), source="stream", run_id="P")
    other.dispose()
    time.sleep(0.05)
    store.upsert_bars("bars_1d", bar("SYN0000", datetime(2020, 3, 2), 77.0), source="stream", run_id="O2")
    first = catch_up(primary, fallback)                                   # O1: CONFLICT with P; O2 waits for O1
    o1 = [e["seq"] for e in first.replayed if "CONFLICT" in (e.get("note") or "")]
    assert len(o1) == 1 and first.replayed[1]["note"].startswith("waits for write"), first.replayed
    forced = catch_up(primary, fallback, force=o1)                        # the operator: O1's rows over P's
    assert forced.parity and pending(fallback).height == 0, forced.replayed
    assert at(primary, "SYN0000", datetime(2020, 3, 2)) == 77.0           # O2 is later than O1: it must stand
    assert at(primary, "SYN0000", datetime(2020, 6, 1)) == 10.0           # O1 over P, as the operator chose


# -- R4: the monotonic clock does not count a suspend (nor is it free of NTP slewing) --------------------------

def test_R4_a_host_suspended_after_its_outage_write_places_it_after_a_later_primary_write(outage, monkeypatch):
    """The host writes at T, is suspended 5 s (CLOCK_MONOTONIC stops; the wall clock and the server go on);
    meanwhile another host writes the same window on the primary at T+0.5 s. Simulated by making the
    monotonic clock read 5 s less elapsed after the write than really elapsed."""
    primary, down, fallback = outage
    real = time.monotonic_ns
    monkeypatch.setattr(failover, "_monotonic_ns", lambda: real() + 5_000_000_000)
    ingest_window(down(), synthetic(2, 1, price=10.0), "bars_1d", YEAR, run_id="stale", now=NOW, max_gap_ratio=1.0)
    monkeypatch.setattr(failover, "_monotonic_ns", real)                  # resumed: 5 s of monotonic time missing
    time.sleep(0.5)
    ingest_window(primary, synthetic(2, 1, price=30.0), "bars_1d", YEAR, run_id="newer", now=NOW, max_gap_ratio=1.0)
    report = catch_up(primary, fallback)
    assert (primary.read_bars("bars_1d")["close"] == 30.0).all(), report.replayed


# -- R5: the fallback's own earlier writes, once replayed, count as "later" within the error bound -------------

def test_R5_two_outage_writes_seconds_apart_conflict_with_each_other_when_caught_up_hours_later(outage,
                                                                                                  monkeypatch):
    """A catch-up two days after the outage's writes: the drift allowance is 100 ppm x 172800 s = 17.3 s
    (modelled by the margin). The stream consumer rewrote a bar 1 s after the ingest's window replace; the
    fallback's seq orders them exactly, yet the replay of the first counted as later than the second: CONFLICT,
    and the primary kept the older value."""
    primary, down, fallback = outage
    store = down()
    ingest_window(store, synthetic(2, 1, price=10.0), "bars_1d", YEAR, run_id="j", now=NOW, max_gap_ratio=1.0)
    time.sleep(1.0)
    store.upsert_bars("bars_1d", bar("SYN0000", datetime(2020, 6, 1), 77.0), source="stream", run_id="k")
    monkeypatch.setattr(failover, "MARGIN", timedelta(seconds=17.3))
    report = catch_up(primary, fallback)
    assert report.parity and at(primary, "SYN0000", datetime(2020, 6, 1)) == 77.0, report.replayed


# -- R6: stamps are pruned by the outage write's time, not by when they were committed -------------------------

def test_R6_a_replay_of_an_old_outage_write_loses_its_stamp_to_the_nightly_prune_and_is_applied_twice(
        outage, monkeypatch):
    """An outage write 100 days old (the recovery sensor is STOPPED by default; or a conflict waited for the
    operator). The nightly prune pruned by the write's original time, so a replay committed minutes earlier lost
    its stamp, and a catch-up after a crash appended it again. Now: an outage write older than the stamps kept
    is not replayed on its own (later writes may no longer show); forced, it is applied once, and the prune
    (by commit time) keeps the replay's stamp."""
    primary, down, fallback = outage
    monkeypatch.setattr(failover, "utcnow", lambda: utcnow() - timedelta(days=100))
    monkeypatch.setattr(failover, "_boot_id", lambda: "a boot 100 days ago")
    journal_failure(down(), run_id="R", dataset_name="bars_1d", source="synthetic", partitions=YEAR, error="boom")
    monkeypatch.setattr(failover, "utcnow", utcnow)
    monkeypatch.setattr(failover, "_boot_id", lambda: "this boot")
    first = catch_up(primary, fallback)
    assert "older than the write log's retention" in first.replayed[0]["note"]
    seq = first.replayed[0]["seq"]
    with monkeypatch.context() as m:
        m.setattr(failover, "_mark_done", lambda *a, **k: None)          # dies before marking
        catch_up(primary, fallback, force=[seq])
    primary.prune_write_log(90)                                           # the nightly backup (default 90 days)
    again = catch_up(primary, fallback, force=[seq])
    assert again.replayed[0]["note"].startswith("already applied")
    n = primary.query("SELECT count(*) AS n FROM market.ingest_journal WHERE run_id = 'R'").item()
    assert n == 1, n


def test_R6b_a_conflict_older_than_the_retention_disappears_and_the_stale_write_overwrites(outage, monkeypatch):
    primary, down, fallback = outage
    monkeypatch.setattr(failover, "utcnow", lambda: utcnow() - timedelta(days=100))
    monkeypatch.setattr(failover, "_boot_id", lambda: "a boot 100 days ago")
    ingest_window(down(), synthetic(2, 1, price=10.0), "bars_1d", YEAR, run_id="stale", now=NOW, max_gap_ratio=1.0)
    monkeypatch.setattr(failover, "utcnow", utcnow)
    monkeypatch.setattr(failover, "_boot_id", lambda: "this boot")
    ingest_window(primary, synthetic(2, 1, price=30.0), "bars_1d", YEAR, run_id="newer", now=NOW, max_gap_ratio=1.0)
    with primary.cursor() as cur:  # 'newer' ran 95 days ago, after the outage write
        cur.execute("UPDATE ops.write_log SET committed_at = clock_timestamp() - interval '95 days'")
    first = catch_up(primary, fallback)
    assert "CONFLICT" in first.replayed[0]["note"]                        # waits for the operator...
    primary.prune_write_log(90)                                           # ...past the retention
    catch_up(primary, fallback)
    assert (primary.read_bars("bars_1d")["close"] == 30.0).all()



# -- R8: two catch-ups at once: the first marks and drops the logged parts while the second replays ------------

def test_R8_a_concurrent_catch_up_that_finished_first_makes_the_other_report_failures(outage, monkeypatch, pg_url):
    primary, down, fallback = outage
    ingest_window(down(), synthetic(2, 1), "bars_1d", YEAR, run_id="R", now=NOW, max_gap_ratio=1.0)
    real = failover.pending

    def pending_then_the_other_catch_up_finishes(fb):
        todo = real(fb)
        other = PostgresStore(pg_url)
        with monkeypatch.context() as m:
            m.setattr(failover, "pending", real)
            assert catch_up(other, fb).parity  # the sensor's run finishes and marks, while this one starts
        other.dispose()
        return todo

    monkeypatch.setattr(failover, "pending", pending_then_the_other_catch_up_finishes)
    report = catch_up(primary, fallback)   # the operator's `emp db catch-up`, started at the same moment
    assert report.parity, [e.get("note") for e in report.replayed]


# -- R9: a catch-up that found a conflict FAILS its run (blocking check), so the sensor retries it 4 more times -

def test_R9_the_recovery_sensor_retries_a_catch_up_that_ran_and_found_a_conflict(outage, pg_url, tmp_path,
                                                                                   monkeypatch):
    import dagster as dg

    from emp_dagster.defs.platform import assets as platform
    from emp_dagster.defs.platform.sensors import failover_recovery

    primary, down, fallback = outage
    monkeypatch.setenv("EMP_HOME", str(fallback.path.parent))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("EMP_TIER", "institutional")
    monkeypatch.setenv("EMP_PG_URL", pg_url)
    monkeypatch.setenv("EMP_REDIS_URL", "off")
    ingest_window(down(), synthetic(2, 1, price=10.0), "bars_1d", YEAR, run_id="stale", now=NOW, max_gap_ratio=1.0)
    ingest_window(primary, synthetic(2, 1, price=30.0), "bars_1d", YEAR, run_id="newer", now=NOW, max_gap_ratio=1.0)
    with dg.instance_for_test() as instance:
        request = failover_recovery(dg.build_sensor_context(instance=instance))
        ran = dg.materialize([platform.failover_catch_up], instance=instance,
                             tags={"dagster/run_key": request.run_key}, raise_on_error=False)
        again = failover_recovery(dg.build_sensor_context(instance=instance))
        print("RUN", ran.success, type(again).__name__, getattr(again, "run_key", None) or again.skip_message)
        assert isinstance(again, dg.SkipReason), again  # "a conflict waits for the operator"


# -- R10: replace_windows stamps no dataset: the other dataset's window of the same table is a CONFLICT ---------

def test_R10_feature_windows_of_another_dataset_are_a_false_conflict(outage):
    primary, down, fallback = outage
    store = down()
    store.upsert_bars("bars_1h", hourly("X", [1], 1.0), source="s", run_id="trigger")  # fails over

    def feat(dataset, v):
        return pl.DataFrame({"dataset": dataset, "symbol": "X", "ts": [datetime(2020, 3, 2)], "x": [v],
                             "run_id": "r"})

    store.replace_windows({"sensory.f": feat("bars_1d", 1.0)}, dataset="bars_1d", start=datetime(2020, 1, 1),
                          end=datetime(2021, 1, 1))
    primary.replace_windows({"sensory.f": feat("bars_1h", 2.0)}, dataset="bars_1h", start=datetime(2020, 1, 1),
                            end=datetime(2021, 1, 1))
    report = catch_up(primary, fallback)
    assert report.parity, [e.get("note") for e in report.replayed]


# -- R12: the replay tag is '<fallback id>:<seq>': a fallback file restored from a snapshot reuses tags ----------

def test_R12_a_fallback_restored_from_a_snapshot_reuses_seqs_and_a_new_outage_write_is_dropped(outage, tmp_path):
    import shutil

    primary, down, fallback = outage
    store = down()
    store.upsert_bars("bars_1d", bar("SYN0000", datetime(2020, 3, 2), 1.0), source="stream", run_id="c")  # seq 1
    snap = tmp_path / "snapshot.duckdb"
    shutil.copy(fallback.path, snap)                                        # the host's nightly disk snapshot
    store.upsert_bars("bars_1d", bar("SYN0000", datetime(2020, 3, 3), 2.0), source="stream", run_id="c")  # seq 2
    assert catch_up(primary, fallback).parity                               # tags id:1, id:2 on the primary
    shutil.copy(snap, fallback.path)                                        # the host is restored from it
    down().upsert_bars("bars_1d", bar("SYN0001", datetime(2020, 5, 5), 3.0), source="stream", run_id="c")  # seq 2 again
    report = catch_up(primary, fallback)
    print("R12", [(e["seq"], e.get("note")) for e in report.replayed])
    assert primary.query("SELECT count(*) AS n FROM market.bars_1d WHERE symbol = 'SYN0001'").item() == 1


# -- R13: the catch-up goes on past a write that failed; the later overlapping write it applies then makes the
#         failed one a permanent CONFLICT with the fallback's own replay -------------------------------------

def test_R13_a_transient_failure_of_one_replay_turns_into_a_permanent_conflict_with_its_own_successor(
        outage, monkeypatch):
    import psycopg

    primary, down, fallback = outage
    store = down()
    ingest_window(store, synthetic(2, 1, price=10.0), "bars_1d", YEAR, run_id="j", now=NOW, max_gap_ratio=1.0)
    store.upsert_bars("bars_1d", bar("SYN0000", datetime(2020, 6, 1), 77.0), source="stream", run_id="k")
    real = PostgresStore.replace_bars
    calls = []

    def once(self, *a, **kw):  # e.g. lock_timeout while an ingest held the table's write lock
        calls.append(1)
        if len(calls) == 1:
            raise psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")
        return real(self, *a, **kw)

    monkeypatch.setattr(PostgresStore, "replace_bars", once)
    first = catch_up(primary, fallback)
    assert [e["parity"] for e in first.replayed] == [False, False]          # j failed; k waits for it
    assert first.replayed[1]["note"] == f"waits for write {first.replayed[0]['seq']} of the same table"
    second = catch_up(primary, fallback)
    assert second.parity and at(primary, "SYN0000", datetime(2020, 6, 1)) == 77.0


# -- R4b: across a reboot the wall clock is trusted with no error allowance (F3 again) ------------------------

def test_R4b_a_wall_clock_corrected_across_a_reboot_reorders_writes(outage, monkeypatch):
    primary, down, fallback = outage
    monkeypatch.setattr(failover, "_boot_id", lambda: "the boot of the outage")
    monkeypatch.setattr(failover, "utcnow", lambda: utcnow() + timedelta(seconds=5))   # NTP unreachable
    ingest_window(down(), synthetic(2, 1, price=10.0), "bars_1d", YEAR, run_id="stale", now=NOW, max_gap_ratio=1.0)
    monkeypatch.setattr(failover, "utcnow", utcnow)
    monkeypatch.setattr(failover, "_boot_id", lambda: "after the reboot")            # rebooted, clock synced
    time.sleep(0.5)
    ingest_window(primary, synthetic(2, 1, price=30.0), "bars_1d", YEAR, run_id="newer", now=NOW, max_gap_ratio=1.0)
    catch_up(primary, fallback)
    assert (primary.read_bars("bars_1d")["close"] == 30.0).all()

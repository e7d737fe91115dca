"""The fresh-context review's cases (F1-F11) of the failover catch-up: each test is a sequence of events the
review built that broke a guarantee of emp_core/store/failover.py (its module docstring), kept as a regression
test. Outages are simulated by an unreachable address (the ``outage`` fixture of tests/test_failover.py)."""
import threading
import time
from datetime import datetime, timedelta

import polars as pl
import pytest

from emp_core.clock import utcnow
from emp_core.market_data.ingest import Partition, journal_failure
from emp_core.market_data.pipeline import ingest_window
from emp_core.market_data.sources import SyntheticSource
from emp_core.store.failover import catch_up, pending
from emp_core.store.postgres_store import PostgresStore
from tests.test_failover import YEAR, hourly, settle, synthetic

NOW = datetime(2026, 1, 1)
Y2019 = [Partition("2019", datetime(2019, 1, 1), datetime(2020, 1, 1))]


def two_years():
    return SyntheticSource(2, datetime(2019, 1, 1), datetime(2021, 1, 1), seed=1)


def test_F1_run_whose_first_write_committed_on_primary_loses_outage_journal(outage):
    """Dagster: one run (one run_id) materialises two assets/windows; the first commits on the primary, the
    primary dies, the second fails over. The catch-up sees 'the primary holds this run's journal' and drops
    the second write's journal and quarantine, yet reports parity and marks it caught up."""
    primary, down, fallback = outage
    src = two_years()
    ingest_window(primary, src, "bars_1d", Y2019, run_id="R", now=NOW, max_gap_ratio=1.0)
    ingest_window(down(), src, "bars_1d", YEAR, run_id="R", now=NOW, max_gap_ratio=1.0)
    fb = fallback.query("SELECT partition_key FROM market.ingest_journal WHERE run_id='R'")["partition_key"].to_list()
    report = catch_up(primary, fallback)
    assert report.parity and pending(fallback).height == 0        # claims success
    pk = primary.query("SELECT partition_key FROM market.ingest_journal WHERE run_id='R' ORDER BY 1")
    assert sorted(pk["partition_key"].to_list()) == sorted(["2019", *fb]), pk


def test_F2_failure_journal_of_a_run_started_on_primary_never_converges(outage):
    """Same run: window 2019 committed on the primary; during the outage its next step fails and
    journal_failure appends a 'failed' row (append fails over). Replay of the append is skipped because the
    primary has rows of the run; parity (all the run's rows) can never hold: stuck forever, row never copied."""
    primary, down, fallback = outage
    ingest_window(primary, two_years(), "bars_1d", Y2019, run_id="R", now=NOW, max_gap_ratio=1.0)
    journal_failure(down(), run_id="R", dataset_name="bars_1d", source="synthetic", partitions=YEAR,
                    error="boom")
    r1 = catch_up(primary, fallback)
    r2 = catch_up(primary, fallback)
    failed = primary.query("SELECT count(*) AS n FROM market.ingest_journal WHERE run_id='R' AND status='failed'")
    assert r2.parity and failed.item() == 1, (r1.replayed, r2.replayed)


def test_F3_host_clock_corrected_after_outage_lets_stale_write_overwrite(outage, monkeypatch):
    """The offset is measured at catch-up time and applied to writes made hours earlier. A host whose clock
    ran 5 s fast during the outage (NTP unreachable, same partition) and was corrected before the catch-up:
    a later primary write (from another host, 1 s after the outage write) is not seen as later."""
    from emp_core.store import failover

    primary, down, fallback = outage
    monkeypatch.setattr(failover, "utcnow", lambda: utcnow() + timedelta(seconds=5))
    ingest_window(down(), synthetic(2, 1, price=10.0), "bars_1d", YEAR, run_id="stale", now=NOW, max_gap_ratio=1.0)
    monkeypatch.setattr(failover, "utcnow", utcnow)  # NTP fixed the host's clock
    time.sleep(0.5)
    ingest_window(primary, synthetic(2, 1, price=30.0), "bars_1d", YEAR, run_id="newer", now=NOW, max_gap_ratio=1.0)
    report = catch_up(primary, fallback)
    assert "CONFLICT" in report.replayed[0]["note"]
    assert (primary.read_bars("bars_1d")["close"] == 30.0).all()


def _jk(down):
    """j: an outage window replace of SYN0000 (2020); k: a later outage stream upsert of SYN0000@06-01 and
    SYN0001@06-03."""
    store = down()
    ingest_window(store, synthetic(2, 1, price=10.0), "bars_1d", YEAR, run_id="j", symbols=["SYN0000"], now=NOW,
                  max_gap_ratio=1.0)
    k = pl.concat([hourly("SYN0000", [0], 77.0).with_columns(pl.lit(datetime(2020, 6, 1)).alias("ts")),
                   hourly("SYN0001", [0], 77.0).with_columns(pl.lit(datetime(2020, 6, 3)).alias("ts"))])
    store.upsert_bars("bars_1d", k, source="stream", run_id="k")
    return pending(fallback_of(store))["seq"].to_list()


def fallback_of(store):
    return store.fallback


def test_F4_an_upsert_on_the_primary_beside_an_outage_upserts_keys_is_no_conflict(outage):
    """P (a stream upsert of SYN0001@06-02 on the recovered primary) overlapped k's bounding box only (no key in
    common): a false conflict, and j's parity, compared with the fallback (which holds k's SYN0000@06-01), could
    never hold once the operator kept the primary for k. The conflict test now asks whether P's rows in k's scope
    differ from k's (there are none), and each write verifies against what it wrote."""
    primary, down, fallback = outage
    _jk(down)
    primary.upsert_bars("bars_1d", hourly("SYN0001", [0], 99.0).with_columns(pl.lit(datetime(2020, 6, 2)).alias("ts")),
                        source="stream", run_id="P")
    report = catch_up(primary, fallback)
    assert report.parity and pending(fallback).height == 0, report.replayed
    closes = dict(primary.query("SELECT symbol || ' ' || CAST(ts AS DATE) AS k, close FROM market.bars_1d "
                                "WHERE ts IN ('2020-06-01', '2020-06-02', '2020-06-03')").iter_rows())
    assert {k: closes[k] for k in ("SYN0000 2020-06-01", "SYN0001 2020-06-02", "SYN0001 2020-06-03")} == {
        "SYN0000 2020-06-01": 77.0, "SYN0001 2020-06-02": 99.0, "SYN0001 2020-06-03": 77.0}


def test_F4b_the_operator_keeps_the_primary_for_a_later_write_and_the_earlier_one_still_converges(outage):
    """The same with a real conflict: P rewrites one of k's keys with other values after the outage. k is a
    CONFLICT; keeping the primary's rows for k leaves j (already verified against its own rows) caught up."""
    primary, down, fallback = outage
    _, k = _jk(down)
    primary.upsert_bars("bars_1d", hourly("SYN0001", [0], 99.0).with_columns(pl.lit(datetime(2020, 6, 3)).alias("ts")),
                        source="stream", run_id="P")
    first = catch_up(primary, fallback)
    assert [e["seq"] for e in first.replayed if not e["parity"]] == [k], first.replayed
    assert "CONFLICT" in first.replayed[1]["note"]
    second = catch_up(primary, fallback, keep_primary=[k])
    assert second.parity and pending(fallback).height == 0
    assert primary.query("SELECT close FROM market.bars_1d WHERE symbol = 'SYN0001' AND ts = '2020-06-03'"
                         ).item() == 99.0


def test_F5_crash_then_new_primary_write_lets_earlier_replay_clobber_a_later_replayed_write(outage, monkeypatch):
    """Catch-up #1 replays j and k, dies before marking. P then lands on the primary (overlaps k, not j).
    Catch-up #2 replays j over R_k (replays of 'ours' are excluded from the conflict test) and refuses k, so
    SYN0000@06-01 goes back from k's 77.0 (later write, already on the primary) to j's stale value."""
    from emp_core.store import failover

    primary, down, fallback = outage
    _jk(down)
    with monkeypatch.context() as m:
        m.setattr(failover, "_mark_done", lambda *a, **kw: None)
        catch_up(primary, fallback)
    at = lambda: primary.query("SELECT close FROM market.bars_1d WHERE symbol='SYN0000' AND ts='2020-06-01'").item()  # noqa
    assert at() == 77.0
    primary.upsert_bars("bars_1d", hourly("SYN0001", [0], 99.0).with_columns(pl.lit(datetime(2020, 6, 3)).alias("ts")),
                        source="stream", run_id="P")
    r = catch_up(primary, fallback)
    assert at() == 77.0, r.replayed


def test_F6_outside_unchanged_is_checked_outside_the_lock_so_a_live_stream_defeats_it(outage, monkeypatch):
    """The outside-unchanged check reads the primary before and after the replay in separate transactions; a
    stream consumer upserting another symbol in the same time box in between makes parity fail, every time."""
    primary, down, fallback = outage
    ingest_window(primary, synthetic(2, 1, price=5.0), "bars_1d", YEAR, run_id="base", now=NOW, max_gap_ratio=1.0)
    settle(monkeypatch)
    ingest_window(down(), synthetic(2, 1, price=10.0), "bars_1d", YEAR, run_id="narrow", symbols=["SYN0000"],
                  now=NOW, max_gap_ratio=1.0)
    stop = threading.Event()
    other = PostgresStore(primary.url)

    def stream():
        p = 100.0
        while not stop.is_set():
            p += 1
            bar = hourly("SYN0001", [0], p).with_columns(pl.lit(datetime(2020, 6, 2)).alias("ts"))
            other.upsert_bars("bars_1d", bar, source="stream", run_id="live")
    t = threading.Thread(target=stream)
    t.start()
    try:
        reports = [catch_up(primary, fallback) for _ in range(3)]
    finally:
        stop.set()
        t.join()
        other.dispose()
    assert any(r.parity for r in reports), [r.replayed for r in reports]


def test_F7_two_concurrent_catch_ups_double_the_journal(outage, pg_url):
    """The journal-exists test runs outside the replay's transaction and lock; two catch-ups (the sensor's run
    and an operator's CLI) both pass it, then both copy the run's journal and quarantine."""
    import psycopg

    primary, down, fallback = outage
    ingest_window(down(), synthetic(2, 1), "bars_1d", YEAR, run_id="R", now=NOW, max_gap_ratio=1.0)
    primary.tables()
    holder = psycopg.connect(pg_url)
    holder.execute("SELECT pg_advisory_xact_lock(hashtext('emp-write:market.bars_1d'))")
    out = []
    ts = [threading.Thread(target=lambda: out.append(catch_up(PostgresStore(pg_url), fallback))) for _ in range(2)]
    for t in ts:
        t.start()
    time.sleep(3)
    holder.rollback()
    holder.close()
    for t in ts:
        t.join(60)
    n = primary.query("SELECT count(*) AS n FROM market.ingest_journal WHERE run_id='R'").item()
    f = fallback.query("SELECT count(*) AS n FROM market.ingest_journal WHERE run_id='R'").item()
    assert n == f, (n, f)


def test_F8_replace_windows_replays_the_fallbacks_current_rows_not_the_write(outage):
    """j: features window 2020; k: window [2020-12-01, 2021-02-01); P on the primary: [2021-01-01, 2021-02-01)
    after k. k is a CONFLICT and the operator keeps the primary; yet j's replay already wrote k's December rows
    (it reads the fallback's current window, not what j wrote)."""
    primary, down, fallback = outage
    store = down()
    store.upsert_bars("bars_1h", hourly("X", [1], 1.0), source="s", run_id="trigger")  # fails over
    def feat(ts, v, run):
        return pl.DataFrame({"dataset": "bars_1d", "symbol": "X", "ts": ts, "x": v, "run_id": run})
    j = feat([datetime(2020, 3, 2), datetime(2020, 12, 2)], [1.0, 1.0], "j")
    store.replace_windows({"sensory.f": j}, dataset="bars_1d", start=datetime(2020, 1, 1), end=datetime(2021, 1, 1))
    k = feat([datetime(2020, 12, 2), datetime(2021, 1, 4)], [2.0, 2.0], "k")
    store.replace_windows({"sensory.f": k}, dataset="bars_1d", start=datetime(2020, 12, 1), end=datetime(2021, 2, 1))
    primary.replace_windows({"sensory.f": feat([datetime(2021, 1, 4)], [3.0], "P")}, dataset="bars_1d",
                            start=datetime(2021, 1, 1), end=datetime(2021, 2, 1))
    r = catch_up(primary, fallback)
    kseq = [e["seq"] for e in r.replayed if "CONFLICT" in (e.get("note") or "")]
    catch_up(primary, fallback, keep_primary=kseq)
    dec = primary.query("SELECT x, run_id FROM sensory.f WHERE ts = '2020-12-02'").rows()
    assert dec == [(1.0, "j")], (dec, r.replayed)


def test_F9_append_table_to_a_table_the_primary_lacks_aborts_the_catch_up(outage):
    primary, down, fallback = outage
    store = down()
    store.upsert_bars("bars_1h", hourly("X", [1], 1.0), source="s", run_id="trigger")  # fails over
    store.append_table("evolution.decisions", pl.DataFrame({"run_id": ["E"], "decision": ["keep"]}))
    try:
        r = catch_up(primary, fallback)
    except Exception as exc:
        pytest.fail(f"catch-up aborted: {type(exc).__module__}.{type(exc).__name__}: {exc}")
    assert r.parity


def test_F10_identical_rows_mirrored_by_the_stream_are_a_conflict(outage):
    """bars asset: after the outage ingest, _mirror() reads the run's bars (from the fallback) and publishes them
    to Redis; a consumer that reaches the primary upserts the same rows. The replay then CONFLICTS with an
    identical later write; --keep-primary (the obvious choice) drops the write's journal, quarantine and the
    window's deletions."""
    primary, down, fallback = outage
    store = down()
    ingest_window(store, synthetic(2, 1, price=10.0), "bars_1d", YEAR, run_id="R", now=NOW, max_gap_ratio=1.0)
    mirrored = store.query("SELECT symbol, ts, open, high, low, close, volume FROM market.bars_1d WHERE run_id='R'")
    primary.upsert_bars("bars_1d", mirrored, source="synthetic", run_id="stream:g:c")
    r = catch_up(primary, fallback)
    assert r.parity, r.replayed


def test_F11_multi_window_run_conflict_kept_primary_leaves_a_lying_journal(outage):
    primary, down, fallback = outage
    src = two_years()
    store = down()
    ingest_window(store, src, "bars_1d", Y2019, run_id="R", now=NOW, max_gap_ratio=1.0)
    ingest_window(store, src, "bars_1d", YEAR, run_id="R", now=NOW, max_gap_ratio=1.0)
    ingest_window(primary, synthetic(2, 1, price=30.0), "bars_1d", YEAR, run_id="P", now=NOW, max_gap_ratio=1.0)
    r = catch_up(primary, fallback)
    conflict = [e["seq"] for e in r.replayed if "CONFLICT" in (e.get("note") or "")]
    catch_up(primary, fallback, keep_primary=conflict)
    pk = primary.query("SELECT partition_key FROM market.ingest_journal WHERE run_id='R'")["partition_key"].to_list()
    assert pk == ["2019"], (pk, conflict)

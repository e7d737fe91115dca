"""Failover behaviour the mutation run of emp_core/store/failover.py found untested (scripts/mutation/run.py):
what the log records of a write however it is called, which rows a replayed write governs (so which later
writes on the primary are conflicts), the clock and its error bound, what the catch-up reports and logs, the
cache after a catch-up, and the drill. Outages are simulated by an unreachable address (the ``outage``
fixture of tests/conftest.py)."""

import json
import logging
import sys
from datetime import UTC, datetime, timedelta

import polars as pl
import psycopg
import pytest

from emp_core.store import failover as fo
from emp_core.store.failover import (
    LOG_TABLE,
    CatchUpReport,
    FailoverStore,
    ServerClock,
    catch_up,
    pending,
)
from tests.test_postgres_store_mutants import NO_QUARANTINE, WINDOW, T, bars, closes, journal, put

NOW = datetime(2026, 1, 1)


def universe(symbol: str) -> pl.DataFrame:
    return pl.DataFrame({"dataset": ["bars_1d"], "symbol": [symbol]})


def age_stamps(primary, hours: int = 24) -> None:
    """Date the primary's write stamps so far ``hours`` back: what it holds was written well before the outage
    (beyond any clock error bound), as in a real outage."""
    primary.query(f"UPDATE ops.write_log SET committed_at = committed_at - interval '{hours} hours'")


def notes(report) -> list[str]:
    return [r.get("note") or "" for r in report.replayed]


# -- which later writes on the primary are conflicts --------------------------------------------------------------


def test_a_selected_symbol_the_source_no_longer_has_is_in_the_writes_scope(outage):
    """A run limited to [A, B] whose source has nothing for B any more deletes B's window: B is in the write's
    scope. Replayed, B's window is cleared on the primary (C, not selected, stays); but a stream bar of B
    written on the primary after the outage write is newer: a conflict, not deleted by the stale replay."""
    primary, down, fallback = outage
    put(primary, pl.concat([bars("A", 10, 1.0), bars("B", 10, 1.0), bars("C", 10, 1.0)]), "before")
    age_stamps(primary)
    put(down(), bars("A", 10, 2.0), "outage", selection=["B", "A"])
    assert json.loads(pending(fallback)["selection"].item()) == ["A", "B"]
    primary.upsert_bars("bars_1d", bars("B", 1, 9.0), source="stream", run_id="newer")
    report = catch_up(primary, fallback)
    assert "CONFLICT" in notes(report)[0] and "newer" in notes(report)[0], report.replayed
    assert closes(primary, "B")[0] == 9.0 and closes(primary, "A") == [1.0] * 10
    seq = report.replayed[0]["seq"]
    forced = catch_up(primary, fallback, force=[seq])  # the operator replays it: B's window is the write's
    assert forced.parity, forced.replayed
    assert closes(primary, "A") == [2.0] * 10 and closes(primary, "B") == [] and closes(primary, "C") == [1.0] * 10


def test_a_later_upsert_of_the_outage_writes_own_rows_is_no_conflict(outage):
    primary, down, fallback = outage
    put(down(), bars("A", 10, 2.0), "outage")
    primary.upsert_bars("bars_1d", bars("A", 10, 2.0).head(4), source="feed", run_id="stream:mirror")
    report = catch_up(primary, fallback)
    assert report.parity and pending(fallback).height == 0, report.replayed
    assert primary.query("SELECT DISTINCT run_id FROM market.bars_1d").rows() == [("outage",)]


def test_a_stream_bar_added_inside_a_windowless_replaces_span_is_a_conflict(outage):
    """A replace without a window governs each symbol's [first, last] bars: its replay would delete a bar the
    stream added on the primary between them, even when the stream also mirrored the replace's own bars."""
    primary, down, fallback = outage
    sparse = pl.concat([bars("A", 1, 2.0, start=T + timedelta(days=d)) for d in (0, 2, 4)])
    put(down(), sparse, "outage", window=None)
    primary.upsert_bars("bars_1d", sparse, source="feed", run_id="stream:mirror")
    primary.upsert_bars("bars_1d", bars("A", 1, 9.0, start=T + timedelta(days=3)), source="stream", run_id="stream:new")
    report = catch_up(primary, fallback)
    assert "CONFLICT" in notes(report)[0], report.replayed
    assert closes(primary, "A") == [2.0, 2.0, 9.0, 2.0]


def test_a_stream_bar_between_an_outage_upserts_keys_is_no_conflict(outage):
    """An upsert governs exactly its keys: a bar written on the primary between them is outside its scope."""
    primary, down, fallback = outage
    down().upsert_bars("bars_1d", pl.concat([bars("A", 1, 1.0), bars("A", 1, 1.0, start=T + timedelta(days=4))]),
                       source="stream", run_id="s1")
    primary.upsert_bars("bars_1d", bars("A", 1, 9.0, start=T + timedelta(days=2)), source="stream", run_id="s2")
    report = catch_up(primary, fallback)
    assert report.parity, report.replayed
    assert closes(primary, "A") == [1.0, 9.0, 1.0]


def test_a_later_write_that_left_exactly_the_outage_rows_is_no_conflict_and_any_difference_is(outage):
    """A later replace on the primary whose rows in the write's scope are exactly the write's (the same run done
    again) changes nothing the replay would undo: no conflict. One more bar there, or one value (the open)
    different, is a conflict."""
    primary, down, fallback = outage
    extra_day = bars("A", 1, 2.0, start=T + timedelta(days=11)).with_columns(pl.lit(WINDOW[1] - timedelta(hours=1))
                                                                            .alias("ts"))
    cases = {"same": bars("A", 10, 2.0), "one more": pl.concat([bars("A", 10, 2.0), extra_day]),
             "other open": bars("A", 10, 2.0).with_columns(pl.lit(7.0).alias("open"))}
    for name, later in cases.items():
        put(down(), bars("A", 10, 2.0), "outage")
        put(primary, later, "again")
        report = catch_up(primary, fallback)
        if name == "same":
            assert report.parity, report.replayed
        else:
            assert "CONFLICT" in notes(report)[0], (name, report.replayed)
            catch_up(primary, fallback, keep_primary=[report.replayed[0]["seq"]])


def test_a_later_stream_bar_differing_only_in_its_open_is_a_conflict(outage):
    primary, down, fallback = outage
    put(down(), bars("A", 10, 2.0), "outage")
    primary.upsert_bars("bars_1d", bars("A", 1, 2.0).with_columns(pl.lit(7.0).alias("open")), source="stream",
                        run_id="stream:later")
    report = catch_up(primary, fallback)
    assert "CONFLICT" in notes(report)[0], report.replayed


def _stamp_at(primary, run_id: str, at: datetime) -> None:
    primary.query("UPDATE ops.write_log SET committed_at = $t WHERE run_id = $r",
                  {"t": at.replace(tzinfo=UTC), "r": run_id})


def test_a_primary_write_within_a_minute_before_the_outage_write_counts_as_later(outage):
    """The clock's error bound includes a margin of 60 s (clocks slewed by NTP, a paused VM): a write on the
    primary 59.5 s before an outage write may be after it (a conflict); one 60.5 s before is not."""
    primary, down, fallback = outage
    put(primary, bars("A", 10, 1.0), "a-before", selection=["A"])
    put(primary, bars("B", 10, 1.0), "b-before", selection=["B"])
    store = down()
    put(store, bars("A", 10, 2.0), "a-outage", selection=["A"])
    put(store, bars("B", 10, 2.0), "b-outage", selection=["B"])
    written = dict(pending(fallback).select("run_id", "written_at").iter_rows())
    _stamp_at(primary, "a-before", written["a-outage"] - timedelta(seconds=60.5))
    _stamp_at(primary, "b-before", written["b-outage"] - timedelta(seconds=59.5))
    report = catch_up(primary, fallback)
    assert [r["parity"] for r in report.replayed] == [True, False] and "CONFLICT" in notes(report)[1], \
        report.replayed
    assert closes(primary, "A") == [2.0] * 10 and closes(primary, "B") == [1.0] * 10


def test_a_write_the_clock_cannot_order_against_the_outage_write_is_a_conflict(outage, monkeypatch):
    """A write on the primary shortly before the outage's, but within the clock's error bound of it, may as well
    be after it: a conflict (the safe mistake), for a bar write as for a table's replace."""
    primary, down, fallback = outage
    put(primary, bars("A", 10, 1.0), "just-before")
    primary.replace_table("market.universe", universe("PRIMARY"))
    store = down()
    put(store, bars("A", 10, 2.0), "outage")
    store.replace_table("market.universe", universe("OUTAGE"))
    monkeypatch.setattr(fo, "server_clock", lambda primary: ServerClock(
        wall_offset=timedelta(0), mono_offset_ns=0, mono_now_ns=0, boot_id=None, error=timedelta(seconds=60),
        wall_now=fo.utcnow()))
    report = catch_up(primary, fallback)
    assert report.clock["error_seconds"] == 60.0
    assert [n[:8] for n in notes(report)] == ["CONFLICT"] * 2, report.replayed
    assert closes(primary, "A") == [1.0] * 10
    assert primary.query("SELECT symbol FROM market.universe").rows() == [("PRIMARY",)]


# -- what the log records of a write, however it is called -------------------------------------------------------


def test_writes_called_with_keyword_arguments_are_logged_and_replayed(outage):
    primary, down, fallback = outage
    store = down()
    store.upsert_bars(table="bars_1h", bars=bars("H", 3, 5.0), source="stream", run_id="s1")
    store.append(table="market.ingest_journal", frame=journal("j1"))
    store.replace_table(table="market.universe", frame=universe("U"))
    store.replace_bars(table="bars_1d", bars=bars("A", 4, 2.0), source="feed", run_id="r1", window=WINDOW,
                       quarantine=NO_QUARANTINE, journal=journal("r1"), selection=["A"])
    log = pending(fallback)
    assert log.select("operation", "target", "run_id", "rows").rows() == [
        ("upsert_bars", "bars_1h", "s1", 3), ("append", "market.ingest_journal", "j1", 1),
        ("replace_table", "market.universe", None, 1), ("replace_bars", "bars_1d", "r1", 4)]
    assert log.select("window_start", "window_end").rows()[3] == WINDOW
    report = catch_up(primary, fallback)
    assert report.parity and [r["rows"] for r in report.replayed] == [3, 1, 1, 4], report.replayed
    assert primary.read_bars("bars_1h").equals(fallback.read_bars("bars_1h"))
    assert closes(primary, "A") == [2.0] * 4
    assert primary.query("SELECT run_id FROM market.ingest_journal ORDER BY 1").rows() == [("j1",), ("r1",)]
    assert primary.query("SELECT symbol FROM market.universe").rows() == [("U",)]


@pytest.mark.parametrize("by_keyword", [False, True])
def test_registry_inserts_on_a_failed_over_store_are_logged_with_their_key_and_replayed(outage, by_keyword):
    """Once a run's store has failed over, its other writes go to the fallback too: an insert of new keys (the
    trial registry) is logged with its key and replayed as an insert of new keys."""
    primary, down, fallback = outage
    store = down()
    store.replace_table("market.universe", universe("U"))  # fails over
    schema = {"k": pl.String, "v": pl.Float64, "run_id": pl.String}
    store.ensure_table("evolution.reg", schema, ["k"])
    frame = pl.DataFrame({"k": ["a", "b"], "v": [1.0, 2.0], "run_id": "t1"})
    if by_keyword:
        assert store.insert_new(table="evolution.reg", frame=frame, key=["k"]) == 2
    else:
        assert store.insert_new("evolution.reg", frame, ["k"]) == 2
    assert pending(fallback).select("operation", "key", "run_id", "rows").rows()[-1] == ("insert_new", "k", "t1", 2)
    report = catch_up(primary, fallback)
    assert report.parity and [r["operation"] for r in report.replayed] == ["replace_table", "insert_new"]
    assert primary.query("SELECT k, v FROM evolution.reg ORDER BY k").rows() == [("a", 1.0), ("b", 2.0)]


def test_an_upsert_batch_with_a_key_twice_replays_its_last_row(outage):
    """A batch may carry a key twice (a correction in the same batch): the stores keep its last row, and so
    does the replay."""
    primary, down, fallback = outage
    batch = pl.concat([bars("A", 3, 1.0), bars("A", 1, 5.0, start=T + timedelta(days=1))])
    down().upsert_bars("bars_1d", batch, source="stream", run_id="s1")
    report = catch_up(primary, fallback)
    assert report.parity, report.replayed
    assert closes(primary, "A") == closes(fallback, "A") == [1.0, 5.0, 1.0]


def test_a_replace_whose_bars_repeat_a_key_is_replayed_as_written_or_not_at_all(outage):
    """The fallback took a replace whose bars repeat a key; the primary's key refuses such a write. The replay
    applies exactly what was written or nothing: it fails, reported and left pending, and drops no row."""
    primary, down, fallback = outage
    twice = pl.concat([bars("A", 2, 1.0), bars("A", 1, 5.0)])
    put(down(), twice, "dup")
    assert fallback.query("SELECT count(*) AS n FROM market.bars_1d").item() == 3
    report = catch_up(primary, fallback)
    assert not report.parity and notes(report)[0].startswith("FAILED: "), report.replayed
    assert primary.read_bars("bars_1d").height == 0 and pending(fallback).height == 1


def test_a_store_on_the_primary_has_no_decision_and_delegates_to_the_primary(outage):
    primary, down, fallback = outage
    store = FailoverStore(primary, fallback)
    assert store.reason is None and store.decided_at is None
    assert store.dialect == "postgresql" and store.location == primary.location == str(store)
    assert store.url == primary.url  # a plain attribute of the primary, not a call
    dead = down()
    assert dead.decided_at is None
    dead.replace_table("market.universe", universe("U"))
    assert dead.dialect == "duckdb" and isinstance(dead.decided_at, datetime)
    assert dead.location.endswith(f"(failed over to {fallback.location})")
    boot = open("/proc/sys/kernel/random/boot_id").read().strip()  # noqa: SIM115
    assert pending(fallback)["boot_id"].to_list() == [boot]
    assert catch_up(primary, fallback).clock["boot_id"] == boot


# -- the log's order, and the writes the catch-up cannot apply ---------------------------------------------------


def test_rows_of_an_earlier_version_are_listed_first_in_the_order_logged(outage):
    """Log rows without a sequence number (an earlier version's) were written before every numbered one: the
    log lists them first, among themselves in the order they were logged (they share one time)."""
    _, down, fallback = outage
    store = down()
    for i in range(2):
        store.append("market.ingest_journal", journal(f"j{i}"))
    template = pending(fallback).head(1)
    old = pl.concat([template.with_columns(pl.lit(None, pl.Int64).alias("seq"), pl.lit(datetime(2019, 1, 1)).alias(
        "written_at"), pl.lit(f"macro.old{i:02d}").alias("target")) for i in range(20)])
    fallback.append_table(LOG_TABLE, old)
    log = pending(fallback)
    assert log["target"].to_list() == [f"macro.old{i:02d}" for i in range(20)] + ["market.ingest_journal"] * 2
    assert log["seq"].to_list()[20:] == sorted(log["seq"].to_list()[20:])


def test_without_the_fallbacks_id_nothing_is_replayed_automatically(outage):
    """A log whose fallback id is gone (an earlier version kept none): its replays could not be tagged, so none
    is applied; each write is reported for a replay by hand and stays pending."""
    primary, down, fallback = outage
    store = down()
    store.append("market.ingest_journal", journal("j1"))
    store.replace_table("market.universe", universe("U"))
    fallback.query("DELETE FROM ops.failover_meta")
    report = catch_up(primary, fallback)
    assert [r["parity"] for r in report.replayed] == [False, False]
    assert all("earlier version" in n for n in notes(report))
    assert pending(fallback).height == 2
    assert primary.query("SELECT count(*) AS n FROM market.ingest_journal").item() == 0


def test_a_logged_write_without_a_write_id_is_left_for_a_human(outage):
    """A numbered log row without a write id (an earlier version's log) cannot be told from a replay already
    applied: it is reported for a replay by hand and stays pending, applied to nothing."""
    primary, down, fallback = outage
    down().append("market.ingest_journal", journal("j1"))
    fallback.query(f"UPDATE {LOG_TABLE} SET write_id = NULL")
    report = catch_up(primary, fallback)
    assert not report.parity and "earlier version" in notes(report)[0], report.replayed
    assert pending(fallback).height == 1
    assert primary.query("SELECT count(*) AS n FROM market.ingest_journal").item() == 0


def test_a_pending_write_holds_back_the_later_writes_to_its_table(outage):
    """A conflict left pending is decided later; a later outage write to the same table applied before it would
    be out of order: it waits too, and says for which write."""
    primary, down, fallback = outage
    store = down()
    store.upsert_bars("bars_1d", bars("A", 1, 1.0), source="stream", run_id="s1")
    store.upsert_bars("bars_1d", bars("B", 1, 1.0, start=T + timedelta(days=5)), source="stream", run_id="s2")
    store.append("market.ingest_journal", journal("j1"))  # another table: not held back
    primary.upsert_bars("bars_1d", bars("A", 1, 9.0), source="stream", run_id="newer")
    report = catch_up(primary, fallback)
    first = report.replayed[0]["seq"]
    assert [r["parity"] for r in report.replayed] == [False, False, True], report.replayed
    assert "CONFLICT" in notes(report)[0] and notes(report)[1] == f"waits for write {first} of the same table"
    assert closes(primary, "B") == [] and pending(fallback).height == 2


def test_an_outage_write_older_than_the_write_logs_retention_waits_for_a_decision(outage, monkeypatch):
    """Stamps are kept WRITE_LOG_DAYS days: a write older than that less a day, on the server's clock, may have
    lost the later writes it would conflict with; it is not replayed unless the operator forces it. At exactly
    that age, and younger, it is replayed. (The host's clock is fixed here, years from the server's: the ages
    are on the server's clock all the same.)"""
    from emp_core.store.postgres_store import WRITE_LOG_DAYS

    primary, down, fallback = outage
    host_now = datetime(2031, 1, 1, 12)
    monkeypatch.setattr(fo, "utcnow", lambda: host_now)
    store = down()
    limit = timedelta(days=WRITE_LOG_DAYS - 1)
    ages = {"younger": limit - timedelta(hours=1), "exactly": limit, "older": limit + timedelta(hours=1)}
    for run in ages:
        store.append("market.ingest_journal", journal(run))
    for run, age in ages.items():  # written on a boot before this one: placed by the wall clock
        fallback.query(f"UPDATE {LOG_TABLE} SET written_at = $t, boot_id = 'an earlier boot' WHERE run_id = $r",
                       {"t": host_now - age, "r": run})
    report = catch_up(primary, fallback)
    assert [r["parity"] for r in report.replayed] == [True, True, False], report.replayed
    assert "older than the write log's retention" in notes(report)[2]
    older = report.replayed[2]["seq"]
    assert catch_up(primary, fallback, force=[older]).parity
    assert primary.query("SELECT count(*) AS n FROM market.ingest_journal").item() == 3


def test_a_write_a_concurrent_catch_up_applied_meanwhile_is_reported_caught_up(outage, monkeypatch):
    """Two catch-ups at once: when this one's replay fails because the other applied and marked the write
    meanwhile, the write is reported caught up, not failed."""
    primary, down, fallback = outage
    down().append("market.ingest_journal", journal("j1"))

    def raced(primary, fallback, row, *args):
        fo._mark_done(fallback, [row["seq"]])  # the other catch-up, done first
        raise RuntimeError("lost the race")

    monkeypatch.setattr(fo, "_replay_one", raced)
    report = catch_up(primary, fallback)
    assert report.parity and notes(report) == ["caught up by a concurrent catch-up"], report.replayed


def test_a_write_whose_logged_rows_are_gone_says_so(outage):
    primary, down, fallback = outage
    down().replace_table("market.universe", universe("U"))
    fallback.query("DELETE FROM ops.failover_parts")
    report = catch_up(primary, fallback)
    assert not report.parity and "the log holds no frame rows" in notes(report)[0], report.replayed
    assert pending(fallback).height == 1


def test_a_write_that_fails_on_the_primary_is_reported_and_the_others_go_on(outage):
    """A table the fallback has and the primary lacks: that replace fails (reported with its number, left
    pending); the writes before and after it are applied."""
    primary, down, fallback = outage
    store = down()
    store.append("market.ingest_journal", journal("j1"))
    fallback.append_table("evolution.local", pl.DataFrame({"k": [1]}))
    store.replace_table("evolution.local", pl.DataFrame({"k": [2]}))
    store.append("market.ingest_journal", journal("j2"))
    report = catch_up(primary, fallback)
    assert [r["parity"] for r in report.replayed] == [True, False, True]
    assert notes(report)[1].startswith("FAILED: ") and "evolution.local" in notes(report)[1]
    assert pending(fallback)["target"].to_list() == ["evolution.local"]
    assert primary.query("SELECT run_id FROM market.ingest_journal ORDER BY 1").rows() == [("j1",), ("j2",)]


def test_the_catch_up_logs_how_many_writes_stay_pending(outage, caplog):
    primary, down, fallback = outage
    store = down()
    store.replace_table("market.universe", universe("OUTAGE"))
    store.append("market.ingest_journal", journal("j1"))
    primary.replace_table("market.universe", universe("NEWER"))
    with caplog.at_level(logging.INFO, logger="emp.store"):
        report = catch_up(primary, fallback)
    assert [r["parity"] for r in report.replayed] == [False, True]
    assert "2 write(s) considered, 1 applied or found applied, 1 pending" in caplog.text


def test_two_whole_table_replaces_of_different_tables_are_both_replayed(outage):
    primary, down, fallback = outage
    store = down()
    store.replace_table("market.universe", universe("U"))
    store.replace_table("macro.series", pl.DataFrame(
        {"series_id": ["S"], "period_start": [T.date()], "period_end": [T.date()], "available_at": [T.date()],
         "value": [1.0], "frequency": ["d"], "source": ["t"], "run_id": ["m1"]}))
    report = catch_up(primary, fallback)
    assert report.parity and notes(report) == ["", ""], report.replayed
    assert primary.query("SELECT symbol FROM market.universe").rows() == [("U",)]
    assert primary.query("SELECT series_id FROM macro.series").rows() == [("S",)]


def feature(x: float, table_rows: int = 1) -> pl.DataFrame:
    return pl.DataFrame({"dataset": "bars_1d", "symbol": "A", "ts": [T + timedelta(days=i) for i in range(table_rows)],
                         "x": x, "run_id": "f"})


def test_a_feature_window_written_twice_in_an_outage_replays_only_the_last(outage):
    primary, down, fallback = outage
    store = down()
    store.upsert_bars("bars_1h", bars("H", 1, 1.0), source="s", run_id="trigger")  # fails over
    for x in (1.0, 2.0):
        store.replace_windows({"sensory.extra": feature(x)}, dataset="bars_1d", start=WINDOW[0], end=WINDOW[1])
    report = catch_up(primary, fallback)
    assert [n[:10] for n in notes(report)] == ["", "superseded", ""] and report.parity, report.replayed
    assert primary.query("SELECT x FROM sensory.extra").rows() == [(2.0,)]


def test_a_feature_window_of_two_tables_is_replayed_whole(outage):
    primary, down, fallback = outage
    store = down()
    store.upsert_bars("bars_1h", bars("H", 1, 1.0), source="s", run_id="trigger")  # fails over
    store.replace_windows({"sensory.one": feature(1.0, 2), "sensory.two": feature(2.0, 3)}, dataset="bars_1d",
                          start=WINDOW[0], end=WINDOW[1])
    report = catch_up(primary, fallback)
    assert report.parity and notes(report) == ["", ""], report.replayed
    assert primary.query("SELECT count(*) AS n FROM sensory.one").item() == 2
    assert primary.query("SELECT count(*) AS n FROM sensory.two").item() == 3


# -- each replay is verified before it commits ---------------------------------------------------------------------


def _bump_on_insert(url: str, table: str, column: str, partition: str | None = None) -> None:
    """A trigger on the primary that alters inserted rows (someone's rounding rule)."""
    with psycopg.connect(url, autocommit=True) as con:
        if partition:
            con.execute(f"CREATE TABLE {partition} PARTITION OF {table} "
                        "FOR VALUES FROM ('2020-01-01') TO ('2021-01-01')")
        con.execute(f"CREATE FUNCTION {table}_bump() RETURNS trigger AS $$ BEGIN NEW.{column} := NEW.{column} + 1; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql")
        con.execute(f"CREATE TRIGGER bump BEFORE INSERT ON {partition or table} FOR EACH ROW EXECUTE FUNCTION "
                    f"{table}_bump()")


@pytest.mark.parametrize("upsert", [False, True])
def test_a_bar_replay_that_does_not_verify_is_rolled_back_and_says_so(outage, upsert):
    """A trigger on the primary changes every inserted bar's open: none of the write's rows is there as written,
    and the replay (a replace or an upsert) is rolled back, saying how many."""
    primary, down, fallback = outage
    if upsert:
        down().upsert_bars("bars_1d", bars("A", 10, 2.0), source="stream", run_id="outage")
    else:
        put(down(), bars("A", 10, 2.0), "outage")
    primary.tables()
    _bump_on_insert(primary.url, "market.bars_1d", "open", "market.bars_1d_y2020")
    report = catch_up(primary, fallback)
    note = notes(report)[0]
    assert note.startswith("NOT VERIFIED, rolled back: ") and "10 row(s)" in note, note
    assert note.endswith("and 10 of its rows are not there"), note
    assert primary.read_bars("bars_1d").height == 0 and pending(fallback).height == 1


def _extra_row_on_insert(url: str) -> None:
    """A trigger on the primary's universe that adds a row of its own to every insert."""
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("CREATE FUNCTION market.universe_extra() RETURNS trigger AS $$ BEGIN IF NEW.symbol <> 'EXTRA' "
                    "THEN INSERT INTO market.universe (dataset, symbol) VALUES (NEW.dataset, 'EXTRA'); END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql")
        con.execute("CREATE TRIGGER extra AFTER INSERT ON market.universe FOR EACH ROW EXECUTE FUNCTION "
                    "market.universe_extra()")


def test_table_and_feature_replays_that_do_not_verify_are_rolled_back(outage):
    """A row the write did not write (added by a trigger), or a value it did not write: either rolls back."""
    primary, down, fallback = outage
    store = down()
    store.replace_table("market.universe", universe("U"))
    store.replace_windows({"sensory.extra": feature(1.0)}, dataset="bars_1d", start=WINDOW[0], end=WINDOW[1])
    primary.replace_table("market.universe", universe("OLD"))
    primary.replace_windows({"sensory.extra": feature(0.0).head(0)}, dataset="other", start=WINDOW[0],
                            end=WINDOW[1])
    _extra_row_on_insert(primary.url)
    _bump_on_insert(primary.url, "sensory.extra", "x")
    report = catch_up(primary, fallback, force=pending(fallback)["seq"].to_list())
    assert [n[:12] for n in notes(report)] == ["NOT VERIFIED"] * 2, report.replayed
    assert primary.query("SELECT symbol FROM market.universe").rows() == [("OLD",)]
    assert primary.query("SELECT count(*) AS n FROM sensory.extra").item() == 0


# -- the server's clock -------------------------------------------------------------------------------------------


class ScriptedServer:
    """A primary whose server clock reads ``server[i]`` at the i-th query."""

    def __init__(self, server: list[datetime]) -> None:
        self.server, self.queries = server, 0

    def cursor(self):
        owner = self

        class Cursor:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def execute(self, sql):
                assert sql == "SELECT clock_timestamp()"
                owner.queries += 1

            def fetchone(self):
                return (owner.server[owner.queries - 1],)

        return Cursor()


def test_the_clock_is_read_at_the_midpoint_of_the_shortest_of_seven_round_trips(monkeypatch):
    """NTP's rule: of 7 round trips the shortest (the first of equals) gives the offsets, the server's reading
    against the midpoint of the host's wall and monotonic readings, and half its length plus the margin bounds
    the error. Sample i's server reading is its midpoint + 7 s + i ms (+ 123 us), so which sample won shows."""
    wall0, mono0 = datetime(2026, 1, 1, 12), 5_000_000_000_000
    rtts_ns = [40_000_001, 30_000_001, 10_000_001, 10_000_001, 20_000_001, 50_000_001, 8_000_001]
    walls, monos, server = [], [], []
    for i, rtt in enumerate(rtts_ns):
        w, m = wall0 + timedelta(seconds=i), mono0 + i * 1_000_000_000
        walls += [w, w + timedelta(microseconds=rtt // 1000)]
        monos += [m, m + rtt]
        mid = w + timedelta(microseconds=rtt // 2000)
        server.append((mid + timedelta(seconds=7, milliseconds=i, microseconds=123)).replace(tzinfo=UTC))
    monkeypatch.setattr(fo, "_boot_id", lambda: "boot")

    end = datetime(2026, 1, 1, 13)  # the host's wall clock when the measurement ends

    def measure(samples: int = 7):
        clock_walls, clock_monos = iter([*walls[:2 * samples], end]), iter(monos)
        monkeypatch.setattr(fo, "utcnow", lambda: next(clock_walls))
        monkeypatch.setattr(fo, "_monotonic_ns", lambda: next(clock_monos))
        primary = ScriptedServer(server)
        clock = fo.server_clock(primary) if samples == 7 else fo.server_clock(primary, samples=samples)  # 7: default
        return (clock.wall_offset, clock.mono_offset_ns, clock.mono_now_ns, clock.boot_id, clock.error), primary.queries

    def expected(i: int) -> tuple:
        s = server[i].replace(tzinfo=None)
        server_ns = (s - datetime(1970, 1, 1)) // timedelta(microseconds=1) * 1000
        rtt = rtts_ns[i]
        mono = mono0 + i * 1_000_000_000
        return (timedelta(seconds=7, milliseconds=i, microseconds=123), server_ns - (mono + rtt // 2), mono + rtt,
                "boot", timedelta(microseconds=round(rtt / 2000)) + fo.MARGIN)

    assert measure(samples=6) == (expected(2), 6)
    assert measure() == (expected(6), 7)
    assert isinstance(measure()[0][1], int)  # exact nanoseconds, not a float's approximation


def test_a_write_is_placed_to_the_microsecond_below_its_monotonic_reading():
    """Placement floors the write's monotonic nanoseconds to the microsecond (never after the write)."""
    clock = ServerClock(wall_offset=timedelta(0), mono_offset_ns=1_767_268_800_000_000_000, mono_now_ns=2_000_000_000,
                        boot_id="b", error=timedelta(milliseconds=1), wall_now=datetime(2026, 1, 1))
    at, error = clock.place({"boot_id": "b", "mono_ns": 1_000_000_700, "written_at": None})
    assert at == datetime(2026, 1, 1, 12, 0, 1, 0, tzinfo=UTC)
    assert error == timedelta(microseconds=1100)  # 1 s since, at 100 ppm: 0.1 ms more


# -- reports --------------------------------------------------------------------------------------


def test_an_empty_report_has_parity_and_nothing_pending():
    assert CatchUpReport().as_dict() == {"pending_before": 0, "replayed": [], "parity": True, "clock": {}}


# -- the cache after a catch-up ---------------------------------------------------------------------------------


def test_invalidate_cache_retires_what_the_cache_held_of_the_primary(outage, redis_server, monkeypatch):
    from emp_core.store import cache_namespace
    from emp_core.store.cache import CachedStore, HotCache

    primary, _, _ = outage
    put(primary, bars("A", 5, 1.0), "r1")
    cached = CachedStore(primary, HotCache(redis_server, namespace=cache_namespace(primary.url)))
    window = {"symbols": ["A"], "start": datetime(2020, 1, 1), "end": datetime(2021, 1, 1)}
    assert cached.read_bars("bars_1d", **window)["close"].to_list() == [1.0] * 5
    primary.query("UPDATE market.bars_1d SET close = 3.0")  # behind the cache's back, as a catch-up writes
    assert cached.read_bars("bars_1d", **window)["close"].to_list() == [1.0] * 5  # the cached rows
    monkeypatch.setenv("EMP_REDIS_URL", redis_server)
    fo.invalidate_cache(primary)
    assert cached.read_bars("bars_1d", **window)["close"].to_list() == [3.0] * 5


# -- the drill --------------------------------------------------------------------------------------------------


def _databases(pg_url: str) -> set[str]:
    with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        return {n for (n,) in admin.execute("SELECT datname FROM pg_database")}


def test_the_drill_fails_over_catches_up_and_reports_each_phase(pg_url, tmp_path, monkeypatch):
    """A synthetic year (5 symbols, 2020: 253 NYSE sessions) ingested through a failover store whose primary is
    down, then caught up into a scratch database that is dropped afterwards, as is the work directory (made in
    a directory that need not exist yet). It runs as an ordinary user. Durations come from the drill's own
    clock readings, in seconds to the millisecond."""
    import socket
    import time

    class Unprivileged(socket.socket):  # as the platform runs: binding a port below 1024 needs privileges
        def bind(self, address):
            if isinstance(address, tuple) and 0 < address[1] < 1024:
                raise PermissionError(13, "Permission denied")
            return super().bind(address)

    monkeypatch.setattr(socket, "socket", Unprivileged)
    readings = iter([10.0, 10.5, 11.73456, 12.0, 12.54321, 14.98765])  # t0, t1, after ingest, t2, after, end
    real = time.perf_counter
    drill_code = fo.drill.__code__
    monkeypatch.setattr(time, "perf_counter",
                        lambda: next(readings) if sys._getframe(1).f_code is drill_code else real())
    workdir = tmp_path / "not" / "yet"
    got = fo.drill(pg_url, workdir)
    assert got["passed"] and got["failed_over"] and got["parity"], got
    assert got["rows_stored"] == 5 * 253 and got["writes_logged"] == 1 and got["replayed"] == 1
    assert pg_url.rsplit("/", 1)[1] in got["reason"]  # the outage is this database's URL on a dead port:
    assert "Connection refused" in got["reason"]  # refused there, not a malformed address
    assert got["scratch_database"].startswith("emp_drill_") and len(got["scratch_database"]) == len("emp_drill_") + 10
    assert (got["outage_ingest_seconds"], got["catch_up_seconds"], got["seconds"]) == (1.235, 0.543, 4.988)
    assert got["scratch_database"] not in _databases(pg_url)
    assert list(workdir.iterdir()) == []


def test_the_drill_fails_when_the_catch_up_has_no_parity(pg_url, tmp_path, monkeypatch):
    monkeypatch.setattr(fo, "catch_up", lambda primary, fallback: CatchUpReport(
        replayed=[{"seq": 1, "parity": False}], pending_before=1))
    got = fo.drill(pg_url, tmp_path, symbols=2, year=2021)
    assert got["failed_over"] and not got["parity"] and not got["passed"]
    assert got["rows_stored"] == 2 * 252  # 2021: 252 sessions
    assert got["scratch_database"] not in _databases(pg_url)

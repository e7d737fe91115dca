"""The third fresh-context review of the failover catch-up: its demonstrated cases, kept as regression tests."""
from datetime import datetime

import polars as pl
import pytest

from emp_core.errors import EmpError
from emp_core.store.failover import catch_up
from tests.test_failover import hourly, settle


def test_A_an_outage_append_before_a_later_replace_of_its_table_is_a_conflict(outage, monkeypatch):
    primary, down, fallback = outage
    base = pl.DataFrame({"k": ["a"], "v": [1.0]})
    primary.overwrite_table("macro.t", base)
    fallback.overwrite_table("macro.t", base)
    down().append("macro.t", pl.DataFrame({"k": ["stale"], "v": [9.0]}))  # outage append at t1
    settle(monkeypatch)
    primary.replace_table("macro.t", pl.DataFrame({"k": ["b"], "v": [2.0]}))  # later full replace at t2 > t1
    report = catch_up(primary, fallback)
    rows = sorted(primary.query("SELECT k FROM macro.t")["k"].to_list())
    # in write order (append, then replace) the table is exactly the replace's rows: the append is a conflict
    assert rows == ["b"] and "CONFLICT" in report.replayed[0]["note"], (rows, report.replayed)


def test_B_write_stamps_cannot_be_pruned_younger_than_the_catch_up_trusts(outage, monkeypatch):
    primary, down, fallback = outage
    down().upsert_bars("bars_1h", hourly("AAA", [1], 10.0), source="s", run_id="stale")  # outage write
    settle(monkeypatch)
    primary.upsert_bars("bars_1h", hourly("AAA", [1], 30.0), source="s", run_id="newer")  # later, on the primary
    # age both: outage write 60 days ago (previous boot), the primary's newer write 40 days ago
    with fallback.connect() as con:
        con.execute("UPDATE ops.failover_log SET written_at = written_at - INTERVAL 60 DAY, boot_id = NULL")
    with primary.cursor() as cur:
        cur.execute("UPDATE ops.write_log SET committed_at = committed_at - interval '40 days' "
                    "WHERE run_id = 'newer'")
    with pytest.raises(EmpError, match="at least 90 days"):  # BackupConfig(write_log_days=30) is refused
        primary.prune_write_log(30)
    primary.prune_write_log(90)
    report = catch_up(primary, fallback)
    close = primary.query("SELECT close FROM market.bars_1h WHERE symbol = 'AAA'").item()
    assert close == 30.0, (close, report.replayed)


def test_C_a_replace_with_a_bar_outside_its_window_verifies(outage):
    primary, down, fallback = outage
    bars = pl.concat([hourly("AAA", [1, 2], 10.0),
                      hourly("AAA", [3], 10.0).with_columns(pl.lit(datetime(2020, 4, 1)).alias("ts"))])
    store = down()
    j = fallback.query("SELECT * FROM market.ingest_journal LIMIT 0")
    q = fallback.query("SELECT * FROM market.quarantine LIMIT 0")
    store.replace_bars("bars_1h", bars, source="s", run_id="r", window=(datetime(2020, 3, 1), datetime(2020, 3, 3)),
                       quarantine=q, journal=j)
    report = catch_up(primary, fallback)
    assert report.parity, report.replayed

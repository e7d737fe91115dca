"""Health from real state (emp_core.health, `emp status`): each item passes and fails at its limit, and an item
with nothing to measure is unknown, never ok."""

import json
from datetime import datetime, timedelta

import polars as pl

from emp_core.config import settings
from emp_core.health import (
    FAIL,
    OK,
    UNKNOWN,
    Limits,
    backup_age,
    bar_freshness,
    cache_hit_rate,
    evaluate,
    missing_symbols,
)
from tests.support import daily_bars


def test_bar_freshness_at_its_limit(store):
    assert bar_freshness(store, "bars_1d", datetime(2020, 1, 1), timedelta(hours=24)).state == UNKNOWN
    store.upsert_bars("bars_1d", daily_bars("AAA", datetime(2020, 1, 2), 10), source="t", run_id="r")
    latest = store.read_bars("bars_1d")["ts"].max()  # Wed 2020-01-15
    nxt = latest + timedelta(days=1)  # Thursday's session, stamped at its midnight
    day = timedelta(hours=24)
    assert bar_freshness(store, "bars_1d", nxt + day - timedelta(minutes=1), day).state == OK
    late = bar_freshness(store, "bars_1d", nxt + day + timedelta(minutes=1), day)
    assert late.state == FAIL and late.metadata["missing_bars"] == 1
    # a weekend is not missing data: Friday's bar present, Monday morning is fresh
    store.upsert_bars("bars_1d", daily_bars("AAA", datetime(2020, 1, 16), 2), source="t", run_id="r2")  # Thu, Fri
    assert bar_freshness(store, "bars_1d", datetime(2020, 1, 20, 8), day).state == OK  # Monday (MLK day) 08:00
    assert bar_freshness(store, "bars_1d", datetime(2020, 1, 22, 1), day).state == FAIL  # Tuesday's bar missing


def test_missing_symbols_names_the_symbol_that_fell_behind(store):
    assert missing_symbols(store).state == UNKNOWN
    store.upsert_bars("bars_1d", pl.concat([daily_bars("AAA", datetime(2020, 1, 2), 20),
                                            daily_bars("BBB", datetime(2020, 1, 2), 19)]), source="t", run_id="r")
    assert missing_symbols(store).state == OK  # one bar behind: within the daily dataset's lag of 1
    store.upsert_bars("bars_1d", daily_bars("AAA", datetime(2020, 1, 2), 22), source="t", run_id="r2")
    behind = missing_symbols(store)
    assert behind.state == FAIL and behind.metadata["behind"] == {"bars_1d:BBB": 3}


def test_cache_hit_rate_is_the_caches_own_and_needs_reads_and_a_reachable_server(redis_server, store):
    """Measured from the counters every CachedStore of the namespace keeps in Redis, not the server's keyspace
    (whose tokens, locks and streams the review found counted as hits)."""
    import redis

    from emp_core.store.cache import CachedStore, HotCache

    url = redis_server
    limits = Limits(min_hit_rate=0.5, min_cache_reads=100)
    assert cache_hit_rate(None, limits).state == UNKNOWN
    assert cache_hit_rate(url, limits, "ns").state == UNKNOWN  # no reads yet
    store.upsert_bars("bars_1d", daily_bars("AAA", datetime(2020, 1, 2), 20), source="t", run_id="r")
    cached = CachedStore(store, HotCache(url, namespace="ns"))
    for _ in range(60):  # one entry (AAA, 2020) per read: a miss, then hits
        cached.read_bars("bars_1d", symbols=["AAA"], start=datetime(2020, 1, 1), end=datetime(2021, 1, 1))
    for _ in range(60):
        redis.Redis.from_url(url).get("unrelated")  # server keyspace misses: not the cache's
    good = cache_hit_rate(url, limits, "ns")
    assert good.state == UNKNOWN and good.metadata == {"hits": 59, "misses": 1}  # 60 entry reads < 100
    for _ in range(40):
        cached.read_bars("bars_1d", symbols=["AAA"], start=datetime(2020, 1, 1), end=datetime(2021, 1, 1))
    assert cache_hit_rate(url, limits, "ns").state == OK
    for _ in range(150):  # the entry retired before every read: every read misses
        cached.cache.invalidate_all()
        cached.read_bars("bars_1d", symbols=["AAA"], start=datetime(2020, 1, 1), end=datetime(2021, 1, 1))
    low = cache_hit_rate(url, limits, "ns")
    assert low.state == FAIL and low.metadata["misses"] > low.metadata["hits"]
    from tests.support import free_port

    assert cache_hit_rate(f"redis://127.0.0.1:{free_port()}/0", limits).state == FAIL  # unreachable is no pass


def test_backup_age_from_the_newest_complete_backup(pg_url, tmp_path):
    from emp_core.store.backup import backup
    from emp_core.store.postgres_store import PostgresStore

    limits = Limits(max_backup_age=timedelta(hours=26))
    assert backup_age(tmp_path, datetime(2026, 1, 1), limits).state == UNKNOWN
    made = datetime(2026, 1, 1, 2)
    store = PostgresStore(pg_url)
    store.tables()  # the schema, so there is something to dump
    store.dispose()
    backup(pg_url, tmp_path, now=made)
    assert backup_age(tmp_path, made + timedelta(hours=25), limits).state == OK
    assert backup_age(tmp_path, made + timedelta(hours=27), limits).state == FAIL


def test_emp_status_on_the_demo_store(demo_home, monkeypatch, capsys):
    """The shipped data ends in 2018: measured today, the bars and the curve are stale; every table holds
    rows (the quarantine is empty: the shipped data has no bad rows); four daily symbols of the shipped file end
    in 2013; the embedded tier has no cache, stream or backup to measure (unknown, so the status is not ok)."""
    from emp_core.cli import main

    monkeypatch.setenv("EMP_HOME", str(demo_home))
    monkeypatch.setenv("EMP_TIER", "embedded")
    assert main(["status", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    states = {i["name"]: i["state"] for i in report["items"]}
    assert states == {"freshness_bars_1d": FAIL, "freshness_bars_1h": FAIL, "freshness_macro": FAIL,
                      "row_counts": OK, "missing_symbols": FAIL, "cache_hit_rate": UNKNOWN, "stream_lag": UNKNOWN,
                      "backup_age": UNKNOWN}
    behind = next(i for i in report["items"] if i["name"] == "missing_symbols")["metadata"]["behind"]
    assert behind == {f"bars_1d:{s}": 1469 for s in ("AAPL", "GOOG", "IBM", "MSFT")}
    # as of the data's own end, the daily bars are fresh
    from emp_core.store import DuckDBStore

    items = {h.name: h for h in evaluate(DuckDBStore(demo_home / "emp.duckdb"), settings(),
                                         now=datetime(2018, 12, 31, 12))}
    assert items["freshness_bars_1d"].state == OK, items["freshness_bars_1d"]
    assert main(["status"]) == 1
    assert "freshness_bars_1d" in capsys.readouterr().out

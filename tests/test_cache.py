"""The Redis hot cache against real Redis servers started privately per test (never mocks): cached reads equal
the store's, writes through the wrapper retire what they changed (also when a reader raced the writer), TTL,
namespaces, hot symbols, evictions counted, and a Redis that dies or hangs costs correctness nothing."""

import os
import shutil
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from emp_core.store import DuckDBStore
from emp_core.store.cache import CachedStore, HotCache
from tests.support import daily_bars, free_port, service_missing

try:
    import redis
except ImportError:  # pragma: no cover - the dev set installs it
    redis = None

SYMBOLS = ("AAA", "BBB", "CCC")
T0 = datetime(2015, 1, 1)
NO_QUARANTINE = pl.DataFrame(schema={"run_id": pl.String})
SLICE = {"start": datetime(2016, 3, 1), "end": datetime(2020, 6, 1)}  # years 2016..2020


class RedisServer:
    """A private ``redis-server`` on a free loopback port; ``persistent`` keeps its data across a SIGKILL
    (append-only file, fsync always) so a restart brings back what it held."""

    def __init__(self, workdir: Path, extra: tuple[str, ...], persistent: bool) -> None:
        self.port = free_port()
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--dir", str(self.dir), "--appendonly", "yes" if persistent else "no", *extra]
        if persistent:
            self.args += ["--appendfsync", "always"]
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self):
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while True:
            assert self.proc.poll() is None, self.proc.stderr.read().decode()[-2000:]
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, "redis-server did not answer in 20 s"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait()

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)


@pytest.fixture
def redis_server(tmp_path):
    """A factory of private Redis servers, all killed at the end of the test."""
    if shutil.which("redis-server") is None:
        service_missing("redis-server")
    if redis is None:
        service_missing("redis (the Python client)")
    servers: list[RedisServer] = []

    def make(*extra: str, persistent: bool = False) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", extra, persistent)
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.kill()


def namespace() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def seeded(store: DuckDBStore, symbols=SYMBOLS, days: int = 2520) -> DuckDBStore:
    """About ten years of daily bars per symbol, from 2015."""
    store.upsert_bars("bars_1d", pl.concat([daily_bars(s, T0, days) for s in symbols]), source="test",
                      run_id="seed")
    return store


def bumped(frame: pl.DataFrame, by: float) -> pl.DataFrame:
    return frame.with_columns(*(pl.col(c) + by for c in ("open", "high", "low", "close")))


def journal(run_id: str, rows: int) -> pl.DataFrame:
    now = datetime(2026, 1, 1)
    return pl.DataFrame([{"run_id": run_id, "dataset": "bars_1d", "source": "test", "input": "memory",
                          "rows_in": rows, "rows_stored": rows, "rows_quarantined": 0, "status": "ok",
                          "started_at": now, "finished_at": now}])


def features(symbols, start: datetime, days: int, value: float, dataset: str = "bars_1d") -> pl.DataFrame:
    frames = [daily_bars(s, start, days).select("symbol", "ts") for s in symbols]
    return pl.concat(frames).with_columns(
        pl.lit(dataset).alias("dataset"), (pl.int_range(pl.len()) + value).cast(pl.Float64).alias("signal"),
        pl.lit(0.5).alias("signal_confidence"), pl.lit("run").alias("run_id"),
    ).select("dataset", "symbol", "ts", "signal", "signal_confidence", "run_id")


def entry_keys(server: RedisServer, ns: str) -> list[str]:
    """The entry keys (not the version tokens, nor the read counters) of namespace ``ns`` held by the server."""
    return sorted(k.decode() for k in server.client().scan_iter(f"{ns}:*")
                  if not k.startswith(f"{ns}:v".encode()) and k != f"{ns}:stats".encode())


def test_a_cached_read_equals_the_store_and_the_second_read_hits(store, redis_server):
    server = redis_server()
    cache = HotCache(server.url, namespace=namespace())
    cached = CachedStore(seeded(store), cache)
    want = store.read_bars("bars_1d", symbols=["CCC", "AAA"], **SLICE)
    first = cached.read_bars("bars_1d", symbols=["CCC", "AAA"], **SLICE)
    assert first.equals(want) and first.height > 2000
    assert (cache.stats()["misses"], cache.stats()["hits"], cache.stats()["sets"]) == (10, 0, 10)  # 2 x 5 years
    second = cached.read_bars("bars_1d", symbols=["CCC", "AAA"], **SLICE)
    assert second.equals(want)
    stats = cache.stats()
    assert (stats["misses"], stats["hits"], stats["reads"], stats["hit_rate"]) == (10, 10, 2, 0.5)
    # a narrower slice inside the cached years is served from the same entries, cut to [start, end)
    inner = {"start": datetime(2017, 2, 3, 12), "end": datetime(2018, 1, 1)}
    assert cached.read_bars("bars_1d", symbols=["AAA"], **inner).equals(
        store.read_bars("bars_1d", symbols=["AAA"], **inner))
    assert cache.stats()["misses"] == 10
    # every figure is a plain number, ready to be materialisation metadata
    assert all(type(v) in (int, float) for v in cache.stats().values())


def test_features_are_cached_and_equal_a_plain_select(store, redis_server):
    server = redis_server()
    store.replace_windows({"sensory.fused": features(SYMBOLS, T0, 2520, 0.0)}, dataset="bars_1d",
                          start=T0, end=datetime(2030, 1, 1))
    cache = HotCache(server.url, namespace=namespace())
    cached = CachedStore(store, cache)
    want = store.query("SELECT * FROM sensory.fused WHERE dataset = 'bars_1d' AND symbol IN ('AAA', 'BBB') "
                       "AND ts >= $s AND ts < $e ORDER BY symbol, ts", {"s": SLICE["start"], "e": SLICE["end"]})
    for _ in range(2):
        assert cached.read_features("sensory.fused", "bars_1d", symbols=["BBB", "AAA"], **SLICE).equals(want)
    assert (cache.stats()["misses"], cache.stats()["hits"]) == (10, 10)
    assert cached.read_features("sensory.fused", "other", symbols=["AAA"], **SLICE).height == 0


def test_upsert_bars_retires_the_symbol_years_it_wrote_and_no_others(store, redis_server):
    server = redis_server()
    cache = HotCache(server.url, namespace=namespace())
    cached = CachedStore(seeded(store), cache)
    cached.read_bars("bars_1d", symbols=["AAA", "BBB"], **SLICE)
    new = bumped(daily_bars("AAA", datetime(2017, 6, 1), 5), 1e6)
    cached.upsert_bars("bars_1d", new, source="test", run_id="r2")
    after = cached.read_bars("bars_1d", symbols=["AAA", "BBB"], **SLICE)
    assert after.equals(store.read_bars("bars_1d", symbols=["AAA", "BBB"], **SLICE))
    assert after.filter(pl.col("close") > 1e5).height == 5  # the new rows, not the cached ones
    assert cache.stats()["misses"] == 10 + 1  # only AAA 2017 was read again
    assert cache.stats()["invalidations"] == 1


def test_replace_bars_retires_the_window_for_every_symbol_and_a_range_without_one(store, redis_server):
    server = redis_server()
    cache = HotCache(server.url, namespace=namespace())
    cached = CachedStore(seeded(store), cache)

    def check() -> pl.DataFrame:
        got = cached.read_bars("bars_1d", symbols=["AAA", "BBB"], **SLICE)
        assert got.equals(store.read_bars("bars_1d", symbols=["AAA", "BBB"], **SLICE))
        return got

    check()
    # a window and no selection: the source's rows of any symbol in 2018 are replaced (BBB's vanish here)
    window = (datetime(2018, 1, 1), datetime(2019, 1, 1))
    new = bumped(daily_bars("AAA", window[0], 251), 1e6)
    cached.replace_bars("bars_1d", new, source="test", run_id="r2", window=window, quarantine=NO_QUARANTINE,
                        journal=journal("r2", new.height))
    got = check()
    assert got.filter(pl.col("symbol") == "BBB", pl.col("ts").dt.year() == 2018).height == 0
    assert got.filter(pl.col("close") > 1e5).height == 251
    # no window: the store deletes each symbol's whole [first, last] range, 2019 included, though no new row is
    # in 2019
    ends = pl.concat([daily_bars("BBB", datetime(2018, 12, 20), 2), daily_bars("BBB", datetime(2020, 2, 3), 1)])
    cached.replace_bars("bars_1d", ends, source="other", run_id="r3", window=None, quarantine=NO_QUARANTINE,
                        journal=journal("r3", ends.height))
    got = check()
    assert got.filter(pl.col("symbol") == "BBB", pl.col("ts").dt.year() == 2019).height == 0


def test_replace_windows_retires_the_features_of_the_window(store, redis_server):
    server = redis_server()
    store.replace_windows({"sensory.fused": features(SYMBOLS, T0, 2520, 0.0)}, dataset="bars_1d",
                          start=T0, end=datetime(2030, 1, 1))
    cache = HotCache(server.url, namespace=namespace())
    cached = CachedStore(store, cache)

    def read() -> pl.DataFrame:
        return cached.read_features("sensory.fused", "bars_1d", symbols=["AAA", "CCC"], **SLICE)

    read()
    # the window is recomputed without CCC: its 2019 rows go, and no row of the new frame names it
    window = (datetime(2019, 1, 1), datetime(2020, 1, 1))
    new = features(["AAA", "BBB"], window[0], 252, 1e6).filter(pl.col("ts") < window[1])
    cached.replace_windows({"sensory.fused": new}, dataset="bars_1d", start=window[0], end=window[1])
    got = read()
    assert got.equals(read_plain(store, ["AAA", "CCC"]))
    assert got.filter(pl.col("signal") >= 1e6).height == new.filter(pl.col("symbol") == "AAA").height
    assert got.filter(pl.col("symbol") == "CCC", pl.col("ts").dt.year() == 2019).height == 0


def read_plain(store: DuckDBStore, symbols) -> pl.DataFrame:
    return store.query("SELECT * FROM sensory.fused WHERE dataset = 'bars_1d' AND list_contains($syms, symbol) "
                       "AND ts >= $s AND ts < $e ORDER BY symbol, ts",
                       {"syms": symbols, "s": SLICE["start"], "e": SLICE["end"]})


class RacingStore(DuckDBStore):
    """A real DuckDB store that runs ``after_read`` once, right after its next bar read has returned its rows
    and before the caller sees them: the moment a writer can commit behind a reader's back."""

    after_read = None

    def read_bars(self, table, **kwargs):
        rows = super().read_bars(table, **kwargs)
        hook, self.after_read = self.after_read, None
        if hook is not None:
            hook()
        return rows


def test_a_reader_that_raced_a_writer_never_serves_its_stale_rows(emp_home, redis_server):
    server = redis_server()
    store = seeded(RacingStore(emp_home / "emp.duckdb"))
    cache = HotCache(server.url, namespace=namespace())
    cached = CachedStore(store, cache)
    new = bumped(daily_bars("AAA", datetime(2018, 3, 1), 3), 1e6)
    # the reader takes its tokens, reads the old rows, then the writer commits and invalidates, then the
    # reader stores what it read: that entry must never be served
    store.after_read = lambda: cached.upsert_bars("bars_1d", new, source="test", run_id="r2")
    kw = {"symbols": ["AAA"], "start": datetime(2018, 1, 1), "end": datetime(2019, 1, 1)}
    raced = cached.read_bars("bars_1d", **kw)
    assert raced.filter(pl.col("close") > 1e5).height == 0  # the reader saw the rows before the write
    assert len(entry_keys(server, cache.namespace)) == 1  # and stored them
    after = cached.read_bars("bars_1d", **kw)
    assert after.equals(store.read_bars("bars_1d", **kw))
    assert after.filter(pl.col("close") > 1e5).height == 3
    assert cache.stats()["stale"] == 1


def test_entries_expire_after_their_ttl(store, redis_server):
    server = redis_server()
    cache = HotCache(server.url, namespace=namespace(), ttl_seconds=0.4)
    cached = CachedStore(seeded(store), cache)
    kw = {"symbols": ["AAA"], **SLICE}
    cached.read_bars("bars_1d", **kw)
    cached.read_bars("bars_1d", **kw)
    assert (cache.stats()["misses"], cache.stats()["hits"]) == (5, 5)
    assert 0 < server.client().pttl(f"{cache.namespace}:bars:bars_1d:2016:AAA") <= 400
    time.sleep(0.6)
    assert cached.read_bars("bars_1d", **kw).equals(store.read_bars("bars_1d", **kw))
    stats = cache.stats()
    assert (stats["misses"], stats["hits"]) == (10, 5)
    assert stats["expired_keys"] >= 5


def test_namespaces_isolate(tmp_path, redis_server):
    server = redis_server()
    one = seeded(DuckDBStore(tmp_path / "one.duckdb"))
    two = DuckDBStore(tmp_path / "two.duckdb")
    two.upsert_bars("bars_1d", bumped(daily_bars("AAA", T0, 2520), 7.0), source="test", run_id="other")
    a = CachedStore(one, HotCache(server.url, namespace=namespace()))
    b = CachedStore(two, HotCache(server.url, namespace=namespace()))
    kw = {"symbols": ["AAA"], **SLICE}
    for _ in range(2):  # same table, symbol and years in both: each namespace serves its own store's rows
        assert a.read_bars("bars_1d", **kw).equals(one.read_bars("bars_1d", **kw))
        assert b.read_bars("bars_1d", **kw).equals(two.read_bars("bars_1d", **kw))
    assert a.cache.stats()["hits"] == b.cache.stats()["hits"] == 5
    a.cache.invalidate_all()  # retiring one namespace leaves the other's entries
    b.read_bars("bars_1d", **kw)
    a.read_bars("bars_1d", **kw)
    assert (a.cache.stats()["hits"], b.cache.stats()["hits"]) == (5, 10)
    assert len(entry_keys(server, a.cache.namespace)) == len(entry_keys(server, b.cache.namespace)) == 5


def test_only_hot_symbols_are_cached(store, redis_server):
    server = redis_server()
    cache = HotCache(server.url, namespace=namespace(), hot_symbols={"AAA"})
    cached = CachedStore(seeded(store), cache)
    kw = {"symbols": list(SYMBOLS), **SLICE}
    for _ in range(2):
        assert cached.read_bars("bars_1d", **kw).equals(store.read_bars("bars_1d", **kw))
    assert {k.rsplit(":", 1)[1] for k in entry_keys(server, cache.namespace)} == {"AAA"}
    assert (cache.stats()["misses"], cache.stats()["hits"]) == (5, 5)
    # a read of cold symbols only goes to the store
    assert cached.read_bars("bars_1d", symbols=["BBB"], **SLICE).equals(
        store.read_bars("bars_1d", symbols=["BBB"], **SLICE))
    assert cache.stats()["passthroughs"] == 1


def test_reads_the_entries_cannot_answer_go_to_the_store(store, redis_server):
    server = redis_server()
    cache = HotCache(server.url, namespace=namespace(), max_bytes_per_entry=2000)
    cached = CachedStore(seeded(store), cache)
    for kw in ({"symbols": None, **SLICE}, {"symbols": ["AAA"], "start": SLICE["start"]},
               {"symbols": ["AAA"], "start": SLICE["start"].replace(tzinfo=UTC), "end": SLICE["end"]},
               {"symbols": ["AAA"], "start": SLICE["end"], "end": SLICE["start"]}):
        assert cached.read_bars("bars_1d", **kw).equals(store.read_bars("bars_1d", **kw))
    assert cache.stats()["passthroughs"] == 4
    # a symbol-year over max_bytes_per_entry is read but not stored
    for _ in range(2):
        assert cached.read_bars("bars_1d", symbols=["AAA"], **SLICE).equals(
            store.read_bars("bars_1d", symbols=["AAA"], **SLICE))
    stats = cache.stats()
    assert (stats["too_large"], stats["sets"], stats["hits"]) == (10, 0, 0)
    assert entry_keys(server, cache.namespace) == []


def test_a_generic_write_to_a_bar_table_retires_the_namespace(store, redis_server):
    server = redis_server()
    cache = HotCache(server.url, namespace=namespace())
    cached = CachedStore(seeded(store), cache)
    kw = {"symbols": ["AAA"], **SLICE}
    cached.read_bars("bars_1d", **kw)
    extra = daily_bars("AAA", datetime(2020, 1, 2), 1).with_columns(
        pl.datetime(2020, 1, 1, 12).alias("ts"), pl.lit("x").alias("source"), pl.lit("r").alias("run_id"))
    cached.append("market.bars_1d", extra)
    got = cached.read_bars("bars_1d", **kw)
    assert got.equals(store.read_bars("bars_1d", **kw))
    assert got.filter(pl.col("ts") == datetime(2020, 1, 1, 12)).height == 1
    assert cached.tables() == store.tables()  # everything else is the store's own


def test_evictions_are_counted_and_reads_stay_right(store, redis_server):
    server = redis_server()
    admin = server.client()
    admin.config_set("maxmemory", admin.info("memory")["used_memory"] + 1_500_000)
    admin.config_set("maxmemory-policy", "allkeys-lru")
    symbols = [f"S{i:02d}" for i in range(40)]
    cache = HotCache(server.url, namespace=namespace(), compression="uncompressed")
    cached = CachedStore(seeded(store, symbols), cache)
    kw = {"symbols": symbols, "start": datetime(2015, 1, 1), "end": datetime(2025, 1, 1)}
    want = store.read_bars("bars_1d", **kw)
    for _ in range(3):  # 400 symbol-years of ~15 kB: several MB through a 1.5 MB budget
        assert cached.read_bars("bars_1d", **kw).equals(want)
    stats = cache.stats()
    assert stats["errors"] == 0
    # counted from this cache's start (any command over the budget may evict one more before INFO answers)
    assert 0 < stats["evicted_keys"] <= admin.info("stats")["evicted_keys"]


def test_a_killed_redis_bypasses_and_a_write_meanwhile_is_not_served_stale_after_restart(store, redis_server):
    server = redis_server(persistent=True)  # what it held comes back when it restarts
    cache = HotCache(server.url, namespace=namespace(), timeout=0.3, retry_after=0.3)
    cached = CachedStore(seeded(store), cache)
    kw = {"symbols": ["AAA", "BBB"], **SLICE}
    cached.read_bars("bars_1d", **kw)
    cached.read_bars("bars_1d", **kw)
    assert cache.stats()["hits"] == 10
    server.kill()
    assert cached.read_bars("bars_1d", **kw).equals(store.read_bars("bars_1d", **kw))
    assert cache.stats()["bypasses"] >= 1 and cache.stats()["available"] == 0
    new = bumped(daily_bars("AAA", datetime(2017, 6, 1), 5), 1e6)
    cached.upsert_bars("bars_1d", new, source="test", run_id="while-down")  # the invalidation cannot reach Redis
    assert cache.stats()["missed_invalidations"] == 1
    assert cached.read_bars("bars_1d", **kw).equals(store.read_bars("bars_1d", **kw))
    server.start()  # same port, same data: the entry of AAA 2017 is back, with the old rows
    assert f"{cache.namespace}:bars:bars_1d:2017:AAA" in entry_keys(server, cache.namespace)
    time.sleep(0.4)  # the breaker closes
    got = cached.read_bars("bars_1d", **kw)
    assert got.equals(store.read_bars("bars_1d", **kw))
    assert got.filter(pl.col("close") > 1e5).height == 5
    assert cache.stats()["flushes"] == 1
    cached.read_bars("bars_1d", **kw)
    assert cache.stats()["available"] == 1 and cache.stats()["hits"] >= 20  # serving from Redis again


def test_a_hung_redis_costs_one_timeout_then_the_breaker_skips_it(store, redis_server):
    server = redis_server()
    cache = HotCache(server.url, namespace=namespace(), timeout=0.3, retry_after=3.0)
    cached = CachedStore(seeded(store), cache)
    kw = {"symbols": ["AAA"], **SLICE}
    cached.read_bars("bars_1d", **kw)
    server.pause()  # SIGSTOP: connections hang, its memory (the old entries) stays
    try:
        t0 = time.monotonic()
        assert cached.read_bars("bars_1d", **kw).equals(store.read_bars("bars_1d", **kw))
        assert time.monotonic() - t0 < 2.0
        assert (cache.stats()["errors"], cache.stats()["bypasses"]) == (1, 1)
        new = bumped(daily_bars("AAA", datetime(2017, 6, 1), 5), 1e6)
        cached.upsert_bars("bars_1d", new, source="test", run_id="while-hung")
        for _ in range(5):
            assert cached.read_bars("bars_1d", **kw).equals(store.read_bars("bars_1d", **kw))
        stats = cache.stats()
        assert (stats["errors"], stats["bypasses"], stats["missed_invalidations"]) == (1, 6, 1)  # no more tries
    finally:
        server.resume()
    assert f"{cache.namespace}:bars:bars_1d:2017:AAA" in entry_keys(server, cache.namespace)  # still there
    time.sleep(3.1)
    got = cached.read_bars("bars_1d", **kw)
    assert got.equals(store.read_bars("bars_1d", **kw))
    assert got.filter(pl.col("close") > 1e5).height == 5
    assert cache.stats()["flushes"] == 1

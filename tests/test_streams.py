"""Redis Streams of intraday bars (emp_core.store.streams) against a real, private redis-server and real DuckDB
stores: delivery, redelivery after a crash, group work-sharing, a Redis restart, lag, replay, dead letters."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from emp_core.errors import EmpError
from emp_core.market_data.sources import generate_bars
from emp_core.store import DuckDBStore
from emp_core.store.streams import (
    BarConsumer,
    BarStream,
    add_stream_parser,
    dead_letter_name,
    fence_name,
    lag,
    lag_check,
    replay,
    run_stream_command,
)
from tests.support import free_port, service_missing

START = datetime(2021, 3, 1)


class RedisServer:
    """A redis-server subprocess on a loopback port; ``persistent`` turns the append-only file on (fsync
    always) in ``workdir`` so a restart keeps streams, groups and pending lists."""

    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        if shutil.which("redis-server") is None:
            service_missing("redis-server")
        self.port = free_port()
        self.workdir = workdir
        self.persistent = persistent
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir",
             str(self.workdir), *aof], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 15
        while True:
            assert self.proc.poll() is None, "redis-server exited at start"
            try:
                if probe.ping() and probe.info("persistence")["loading"] == 0:
                    break
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, "redis-server did not answer in 15 s"
            time.sleep(0.05)
        probe.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def client(self, *, fail_fast: bool = False) -> redis.Redis:
        """A client; ``fail_fast``: no retries inside redis-py (the consumer's own retry loop is under test)."""
        retry = {"retry": Retry(NoBackoff(), 0)} if fail_fast else {}
        return redis.Redis(port=self.port, decode_responses=True, **retry)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    yield srv
    srv.kill()


@pytest.fixture
def client(server):
    c = server.client()
    yield c
    c.close()


@pytest.fixture
def stream() -> str:
    return f"test:bars:{uuid.uuid4().hex[:10]}"


def bars(n_symbols: int = 3, n_bars: int = 40, seed: int = 7) -> pl.DataFrame:
    """Hourly synthetic bars at full double precision, ``n_bars`` per symbol."""
    frame = generate_bars(n_symbols, START, datetime(2021, 6, 1), interval="1h", seed=seed)
    return frame.group_by("symbol", maintain_order=True).head(n_bars).select(
        "symbol", "ts", "open", "high", "low", "close", "volume")


def stored(store: DuckDBStore) -> pl.DataFrame:
    return store.read_bars("bars_1h")


def row_count(store: DuckDBStore) -> int:
    return store.query("SELECT count(*) AS n FROM market.bars_1h")["n"][0]


def same(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    """Bit-for-bit equality after sorting by (symbol, ts)."""
    return a.sort("symbol", "ts").equals(b.sort("symbol", "ts"))


class CrashBeforeAck(BarConsumer):
    """Dies after the store write returned and before XACK."""

    def _ack(self, ids):
        raise RuntimeError("crash before ack")


class CrashBeforeWrite(BarConsumer):
    """Dies after reading a batch, before writing it."""

    def _apply(self, bars):
        raise RuntimeError("crash before write")


# -- publish and consume --------------------------------------------------------


def test_publish_consume_stores_exactly_the_published_bars(client, stream, tmp_path):
    frame = bars()
    assert BarStream(client, stream).publish(frame, source="test") == frame.height
    store = DuckDBStore(tmp_path / "s.duckdb")
    report = BarConsumer(client, stream, "g", "c1", store, batch=50, block_ms=10).run(idle_stop=0.2)
    assert (report.read, report.applied, report.dead, report.superseded) == (frame.height, frame.height, 0, 0)
    assert same(stored(store), frame)  # floats bit-exact through repr() and back
    assert row_count(store) == frame.height
    assert store.query("SELECT DISTINCT source FROM market.bars_1h")["source"].to_list() == ["test"]
    info = lag(client, stream, "g")
    assert (info["lag"], info["pending"], info["backlog"]) == (0, 0, 0)


def test_a_client_without_decode_responses_works_alike(server, stream, tmp_path):
    raw = redis.Redis(port=server.port)  # replies as bytes
    frame = bars(2, 10)
    BarStream(raw, stream).publish(frame, source="test")
    store = DuckDBStore(tmp_path / "s.duckdb")
    assert BarConsumer(raw, stream, "g", "c1", store, block_ms=10).run(idle_stop=0.2).applied == frame.height
    assert same(stored(store), frame)
    info = lag(raw, stream, "g")
    assert (info["backlog"], info["last_delivered_id"]) == (0, raw.xrevrange(stream, count=1)[0][0].decode())
    assert lag_check(info, 0, 60)[0]
    raw.close()


def test_publish_refuses_bars_with_gaps_and_converts_zoned_timestamps(client, stream):
    frame = bars(1, 3)
    with pytest.raises(EmpError, match="empty field"):
        BarStream(client, stream).publish(frame.with_columns(close=pl.lit(None, pl.Float64)), "t")
    with pytest.raises(EmpError, match="without column"):
        BarStream(client, stream).publish(frame.drop("volume"), "t")
    zoned = frame.with_columns(pl.col("ts").dt.replace_time_zone("UTC").dt.convert_time_zone("America/New_York"))
    BarStream(client, stream).publish(zoned, "t")
    first = client.xrange(stream, count=1)[0][1]
    assert first["ts"] == f"{frame['ts'][0]:%Y-%m-%dT%H:%M:%S.%f}"


def test_redelivery_after_a_crash_before_ack_has_an_exactly_once_effect(client, stream, tmp_path):
    """The batch written but not acknowledged is delivered again to the restarted consumer (same name),
    which re-applies it idempotently: every bar once, none missing."""
    frame = bars(4, 30)
    BarStream(client, stream).publish(frame, "test")
    store = DuckDBStore(tmp_path / "s.duckdb")
    with pytest.raises(RuntimeError, match="crash before ack"):
        CrashBeforeAck(client, stream, "g", "c1", store, batch=25, block_ms=10).step()
    assert row_count(store) == 25  # written, then the process "died"
    assert client.xpending(stream, "g")["pending"] == 25

    again = BarConsumer(client, stream, "g", "c1", store, batch=25, block_ms=10)
    report = again.run(idle_stop=0.2)
    assert report.redelivered == 25  # resumed from its pending list, not from the start of the stream
    assert report.read == frame.height  # 25 again + the rest
    assert row_count(store) == frame.height
    assert same(stored(store), frame)
    assert client.xpending(stream, "g")["pending"] == 0


def test_entries_of_a_dead_consumer_are_claimed_by_another(client, stream, tmp_path):
    frame = bars(2, 20)
    BarStream(client, stream).publish(frame, "test")
    store = DuckDBStore(tmp_path / "s.duckdb")
    with pytest.raises(RuntimeError, match="crash before write"):
        CrashBeforeWrite(client, stream, "g", "dead", store, batch=15, block_ms=10).step()
    assert client.xpending(stream, "g")["consumers"] == [{"name": "dead", "pending": 15}]
    time.sleep(0.1)
    report = BarConsumer(client, stream, "g", "alive", store, batch=50, block_ms=10, claim_idle_ms=50).run(
        idle_stop=0.3)
    assert report.claimed == 15
    assert report.read == frame.height
    assert same(stored(store), frame)
    assert client.xpending(stream, "g")["pending"] == 0


def test_an_older_version_delivered_late_does_not_overwrite_a_newer_one(client, stream, tmp_path):
    """v1 of a bar is read by a consumer that dies; v2 (a revision) is applied by another; the claimed v1 is
    then acknowledged as superseded, and the store keeps v2."""
    v1 = bars(1, 1)
    v2 = v1.with_columns(close=pl.col("close") * 1.0001, high=pl.col("high") * 1.001)
    publisher = BarStream(client, stream)
    publisher.publish(v1, "test")
    store = DuckDBStore(tmp_path / "s.duckdb")
    with pytest.raises(RuntimeError):
        CrashBeforeWrite(client, stream, "g", "dead", store, block_ms=10).step()
    publisher.publish(v2, "test")
    alive = BarConsumer(client, stream, "g", "alive", store, block_ms=10, claim_idle_ms=60_000)
    assert alive.step().applied == 1  # v2
    time.sleep(0.06)
    alive = BarConsumer(client, stream, "g", "alive", store, block_ms=10, claim_idle_ms=50)  # v1 is now claimable
    report = alive.run(idle_stop=0.2)
    assert (report.claimed, report.superseded, report.applied) == (1, 1, 0)
    assert same(stored(store), v2)
    assert alive.prune_fence() == 1 and client.hlen(fence_name(stream, "g")) == 0  # nothing left to fence


class GatedStore:
    """A store whose first ``upsert_bars`` waits for ``release`` (a slow write, held mid-flight)."""

    def __init__(self, store: DuckDBStore) -> None:
        self.store, self.entered, self.release, self.gated = store, threading.Event(), threading.Event(), True

    def upsert_bars(self, *args, **kwargs) -> int:
        if self.gated:
            self.gated = False
            self.entered.set()
            assert self.release.wait(30)
        return self.store.upsert_bars(*args, **kwargs)


def test_a_slow_write_of_an_old_version_is_not_overtaken_by_a_newer_one(server, client, stream, tmp_path):
    """Consumer A is writing v1 of a bar (slowly) when consumer B reads v2: B waits for the group's write lock,
    then finds v1 in the fence and writes v2 over it. Without the lock B would write first and A's v1 would
    land last."""
    v1 = bars(1, 1)
    v2 = v1.with_columns(close=pl.col("close") * 1.0001, high=pl.col("high") * 1.001)
    store = DuckDBStore(tmp_path / "s.duckdb")
    with store.connect():
        pass  # schema created before the threads start
    publisher = BarStream(client, stream)
    publisher.publish(v1, "test")
    gated = GatedStore(store)
    clients = [server.client(), server.client()]
    a = BarConsumer(clients[0], stream, "g", "a", gated, block_ms=10)
    b = BarConsumer(clients[1], stream, "g", "b", store, block_ms=10)
    reports = {}
    thread_a = threading.Thread(target=lambda: reports.__setitem__("a", a.step()))
    thread_a.start()
    assert gated.entered.wait(30)  # A holds v1, mid-write
    publisher.publish(v2, "test")
    thread_b = threading.Thread(target=lambda: reports.__setitem__("b", b.step()))
    thread_b.start()
    thread_b.join(0.5)  # B has v2 by now, and (with the lock) waits for A's write to finish
    gated.release.set()
    thread_a.join(30)
    thread_b.join(30)
    assert reports["a"].applied == 1 and reports["b"].applied == 1
    assert same(stored(store), v2)
    for c in clients:
        c.close()


def test_two_consumers_in_a_group_split_the_work_without_duplicates(server, client, stream, tmp_path):
    """Two threads, each with its own connection, consume one group concurrently into one store."""
    frame = bars(5, 60)
    BarStream(client, stream).publish(frame, "test")
    store = DuckDBStore(tmp_path / "s.duckdb")
    reports = {}

    def work(name: str) -> None:
        own = server.client()
        reports[name] = BarConsumer(own, stream, "g", name, store, batch=20, block_ms=10).run(idle_stop=0.5)
        own.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in ("c1", "c2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert set(reports) == {"c1", "c2"}
    assert reports["c1"].read > 0 and reports["c2"].read > 0  # both took a share
    assert reports["c1"].read + reports["c2"].read == frame.height  # each entry delivered to one of them
    assert row_count(store) == frame.height
    assert same(stored(store), frame)


def test_redis_stopped_mid_batch_the_consumer_resumes_from_its_last_ack(tmp_path):
    """Redis dies after the store write and before XACK. step() raises; run() retries until the server (AOF,
    fsync always) is back on the same port, then resumes at the last acknowledged entry: the unacknowledged
    batch is applied again (idempotently) and nothing before it is re-read."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis", persistent=True)
    restart = threading.Timer(1.0, server.start)
    try:
        client = server.client(fail_fast=True)
        stream = "test:bars:restart"
        frame = bars(4, 50)  # 200 bars
        BarStream(client, stream).publish(frame, "test")
        store = DuckDBStore(tmp_path / "s.duckdb")

        class RedisDiesBeforeAck(BarConsumer):
            def _ack(self, ids):
                if self.read_batches == 2:
                    server.kill()
                self.read_batches += 1
                super()._ack(ids)

        consumer = RedisDiesBeforeAck(client, stream, "g", "c1", store, batch=50, block_ms=10)
        consumer.read_batches = 0
        assert consumer.step().read == 50
        assert consumer.step().read == 50
        with pytest.raises(redis.ConnectionError):
            consumer.step()  # third batch: written to the store, Redis gone before its ack
        assert row_count(store) == 150
        with pytest.raises(redis.ConnectionError):
            consumer.step()  # still down: a clean error, nothing applied
        assert row_count(store) == 150

        restart.start()
        report = consumer.run(idle_stop=0.5, retry_for=30)
        restart.join()
        assert report.redelivered == 50  # the unacknowledged batch, delivered again
        assert report.read == 100  # 50 again + the last 50: nothing acknowledged before the outage re-read
        assert row_count(store) == frame.height
        assert same(stored(store), frame)
        info = lag(client, stream, "g")
        assert (info["lag"], info["pending"]) == (0, 0)
        client.close()
    finally:
        restart.cancel()
        if restart.is_alive():
            restart.join()
        server.kill()


def test_run_gives_up_with_a_clear_error_when_redis_stays_down(tmp_path):
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    try:
        client = server.client(fail_fast=True)
        consumer = BarConsumer(client, "test:bars:down", "g", "c1", DuckDBStore(tmp_path / "s.duckdb"), block_ms=10)
        server.kill()
        with pytest.raises(EmpError, match="unreachable"):
            consumer.run(idle_stop=5, retry_for=0.5)
    finally:
        server.kill()


# -- lag ----------------------------------------------------------------------------


def test_lag_counts_undelivered_and_pending_entries_and_the_check_uses_it(client, stream, tmp_path):
    BarStream(client, stream).publish(bars(1, 10), "test")
    store = DuckDBStore(tmp_path / "s.duckdb")
    consumer = BarConsumer(client, stream, "g", "c1", store, batch=4, block_ms=10)
    assert consumer.step().read == 4
    info = lag(client, stream, "g")
    assert (info["lag"], info["pending"], info["backlog"], info["length"]) == (6, 0, 6, 10)
    assert info["last_delivered_id"] == client.xrange(stream, count=4)[-1][0]
    assert info["oldest_unapplied_id"] == client.xrange(stream, count=5)[-1][0]
    assert 0 <= info["oldest_age_s"] < 60

    passed, description, meta = lag_check(info, max_entries=10, max_age_seconds=600)
    assert passed, description
    assert meta["lag"] == 6 and meta["max_entries"] == 10
    passed, description, _ = lag_check(info, max_entries=5, max_age_seconds=600)
    assert not passed and "6 entries not applied (limit 5)" in description

    with pytest.raises(RuntimeError):  # 4 more delivered, not acknowledged: pending counts as behind
        CrashBeforeAck(client, stream, "g", "c2", store, batch=4, block_ms=10).step()
    info = lag(client, stream, "g")
    assert (info["lag"], info["pending"], info["backlog"]) == (2, 4, 6)
    assert info["oldest_unapplied_id"] == client.xrange(stream, count=5)[-1][0]  # the oldest pending one


def test_lag_age_is_that_of_the_oldest_unapplied_entry(client, stream, tmp_path):
    seconds, _ = client.time()
    old = f"{(int(seconds) - 120) * 1000}-0"
    client.xadd(stream, {"symbol": "X", "ts": "2021-03-01T00:00:00", "open": "1", "high": "1", "low": "1",
                         "close": "1", "volume": "1"}, id=old)
    BarStream(client, stream).publish(bars(1, 3), "test")
    client.xgroup_create(stream, "g", id="0")
    info = lag(client, stream, "g")
    assert info["oldest_unapplied_id"] == old and 119 <= info["oldest_age_s"] < 180
    assert lag_check(info, max_entries=100, max_age_seconds=600)[0]
    passed, description, _ = lag_check(info, max_entries=100, max_age_seconds=60)
    assert not passed and "old (limit 60s)" in description
    BarConsumer(client, stream, "g", "c1", DuckDBStore(tmp_path / "s.duckdb"), block_ms=10).run(idle_stop=0.2)
    info = lag(client, stream, "g")
    assert (info["backlog"], info["oldest_age_s"], info["oldest_unapplied_id"]) == (0, 0.0, None)


def test_lag_check_fails_when_there_is_nothing_to_measure(client, stream):
    passed, description, _ = lag_check(lag(client, stream, "g"), 100, 600)
    assert not passed and description.startswith("nothing to measure") and "does not exist" in description
    BarStream(client, stream).publish(bars(1, 2), "test")
    passed, description, meta = lag_check(lag(client, stream, "nobody"), 100, 600)
    assert not passed and description.startswith("nothing to measure") and "no consumer group nobody" in description
    assert meta["length"] == 2


# -- replay ---------------------------------------------------------------------


def test_replay_rebuilds_a_fresh_store_from_the_stream(client, stream, tmp_path):
    source = DuckDBStore(tmp_path / "source.duckdb")
    frame = bars(3, 48)
    source.upsert_bars("bars_1h", frame, source="ingest", run_id="r1")
    assert replay(source, client, stream, "bars_1h") == frame.height
    fresh = DuckDBStore(tmp_path / "fresh.duckdb")
    BarConsumer(client, stream, "g", "c1", fresh, block_ms=10).run(idle_stop=0.2)
    assert stored(fresh).equals(stored(source))

    part = f"{stream}:part"
    symbols, start, end = ["SYN0002"], datetime(2021, 3, 1, 10), datetime(2021, 3, 2)
    n = replay(source, client, part, "bars_1h", symbols=symbols, start=start, end=end)
    partial = DuckDBStore(tmp_path / "partial.duckdb")
    BarConsumer(client, part, "g", "c1", partial, block_ms=10).run(idle_stop=0.2)
    expected = source.read_bars("bars_1h", symbols=symbols, start=start, end=end)
    assert n == expected.height > 0 and stored(partial).equals(expected)


# -- dead letters -----------------------------------------------------------------


def test_malformed_entries_go_to_the_dead_letter_stream_and_do_not_block_others(client, stream, tmp_path):
    frame = bars(1, 10)
    publisher = BarStream(client, stream)
    publisher.publish(frame.head(5), "test")
    good = {"symbol": "Y", "ts": "2021-03-01T00:00:00", "open": "10", "high": "11", "low": "9", "close": "10.5",
            "volume": "100"}
    bad = [({k: v for k, v in good.items() if k != "close"}, "missing close"),
           ({**good, "open": "abc"}, "open is not a number"),
           ({**good, "ts": "yesterday"}, "unparseable timestamp"),
           ({**good, "high": "8"}, "high below low; open outside [low, high]; close outside [low, high]"),
           ({**good, "volume": "nan"}, "volume is not finite")]
    ids = [client.xadd(stream, fields) for fields, _ in bad]
    publisher.publish(frame.tail(5), "test")
    store = DuckDBStore(tmp_path / "s.duckdb")
    report = BarConsumer(client, stream, "g", "c1", store, batch=4, block_ms=10).run(max_entries=100, idle_stop=0.2)
    assert (report.read, report.applied, report.dead) == (15, 10, 5)
    assert same(stored(store), frame)
    dead = client.xrange(dead_letter_name(stream))
    assert [d["entry_id"] for _, d in dead] == ids
    assert [d["reason"] for _, d in dead] == [reason for _, reason in bad]
    assert json.loads(dead[1][1]["fields"])["open"] == "abc"
    assert lag(client, stream, "g")["dead_letters"] == 5
    assert client.xpending(stream, "g")["pending"] == 0


def test_an_entry_trimmed_while_pending_is_recorded_not_lost_silently(client, stream, tmp_path):
    BarStream(client, stream).publish(bars(1, 3), "test")
    store = DuckDBStore(tmp_path / "s.duckdb")
    with pytest.raises(RuntimeError):
        CrashBeforeWrite(client, stream, "g", "c1", store, batch=3, block_ms=10).step()
    client.xdel(stream, client.xrange(stream, count=1)[0][0])
    report = BarConsumer(client, stream, "g", "c1", store, block_ms=10).run(max_entries=100, idle_stop=0.2)
    assert (report.read, report.applied, report.dead) == (3, 2, 1)
    assert "trimmed" in client.xrange(dead_letter_name(stream))[0][1]["reason"]


# -- command line ---------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="emp")
    add_stream_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_stream_commands_replay_consume_and_check_lag(server, client, stream, tmp_path, capsys):
    source = DuckDBStore(tmp_path / "source.duckdb")
    frame = bars(2, 24)
    source.upsert_bars("bars_1h", frame, source="ingest", run_id="r1")
    common = ["--redis-url", server.url, "--stream", stream, "--json"]
    assert run_stream_command(parse(["stream", "replay", "--store", str(source.path), *common])) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["bars"] == frame.height
    assert run_stream_command(parse(["stream", "lag", "--max-entries", "10", *common])) == 1  # no group yet
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out["passed"] is False and out["description"].startswith("nothing to measure")

    target = tmp_path / "target.duckdb"
    argv = ["stream", "consume", "--store", str(target), "--consumer", "w1", "--idle-stop", "0.2", *common]
    assert run_stream_command(parse(argv)) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert (out["read"], out["applied"], out["consumer"]) == (frame.height, frame.height, "w1")
    assert stored(DuckDBStore(target)).equals(stored(source))
    assert run_stream_command(parse(["stream", "lag", "--max-entries", "0", "--max-age", "60", *common])) == 0
    out = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out["passed"] is True and out["backlog"] == 0


def test_stream_commands_name_an_unreachable_redis(tmp_path):
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(EmpError, match=r"cannot reach Redis at redis://127\.0\.0\.1"):
        run_stream_command(parse(["stream", "lag", "--redis-url", url]))
    server = RedisServer(tmp_path)
    try:
        with pytest.raises(EmpError, match="no store yet"):
            run_stream_command(parse(["stream", "replay", "--redis-url", server.url, "--store",
                                      str(tmp_path / "none.duckdb")]))
    finally:
        server.kill()

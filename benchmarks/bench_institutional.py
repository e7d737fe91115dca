"""The institutional tier's read and stream figures, against PostgreSQL in the same run.

    .venv/bin/python benchmarks/bench_institutional.py [--symbols 500] [--years 10] [--reads 50] [--stream-bars 100000]

1. Cache hit latency against a PostgreSQL read of the same slice: one symbol over the whole span, and ten
   symbols; the median of ``--reads`` reads each (the first cached read fills the cache and is not counted).
2. Stream throughput: ``--stream-bars`` hourly bars published to a Redis stream, then consumed by a consumer
   group into the PostgreSQL store (upsert per batch, ack after the write); bars/s for publish, consume and the
   whole path publish -> consume -> store.

Everything is private and on loopback: a scratch database on the server (created and dropped here) and a
redis-server on a free port (started and stopped here). Ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from datetime import datetime

import psycopg
import redis

from emp_core.market_data.sources import generate_bars
from emp_core.store.cache import CachedStore, HotCache
from emp_core.store.postgres_store import PostgresStore
from emp_core.store.streams import BarConsumer, BarStream

SERVER = "postgresql://127.0.0.1:5432"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median_ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def reads(store: PostgresStore, url: str, symbols: list[str], start, end, n: int) -> dict:
    cached = CachedStore(store, HotCache(url, namespace=f"bench-{uuid.uuid4().hex[:8]}", ttl_seconds=3600))
    out = {}
    for label, chosen in (("1 symbol", symbols[:1]), ("10 symbols", symbols[:10])):
        direct = store.read_bars("bars_1d", symbols=chosen, start=start, end=end)
        first = cached.read_bars("bars_1d", symbols=chosen, start=start, end=end)
        assert first.equals(direct)
        pg = median_ms(lambda c=chosen: store.read_bars("bars_1d", symbols=c, start=start, end=end), n)
        hit = median_ms(lambda c=chosen: cached.read_bars("bars_1d", symbols=c, start=start, end=end), n)
        assert cached.read_bars("bars_1d", symbols=chosen, start=start, end=end).equals(direct)
        out[label] = {"rows": direct.height, "postgres_ms": round(pg, 3), "cache_hit_ms": round(hit, 3),
                      "speedup": round(pg / hit, 2)}
        print(f"  {label:<10} {direct.height:>6} rows: PostgreSQL {pg:7.2f} ms, cache hit {hit:6.2f} ms "
              f"({pg / hit:.1f}x)", flush=True)
    stats = cached.cache.stats()
    print(f"  cache: {stats['hits']} hits, {stats['misses']} misses", flush=True)
    return out


def stream(store: PostgresStore, url: str, bars: int) -> dict:
    n_symbols = 100
    frame = generate_bars(n_symbols, datetime(2020, 1, 1), datetime(2030, 1, 1), interval="1h", seed=3)
    frame = frame.sort("ts", "symbol").head(bars)
    client = redis.Redis.from_url(url)
    name = f"bench:bars:{uuid.uuid4().hex[:8]}"
    t = time.perf_counter()
    BarStream(client, name).publish(frame, "bench")
    publish = time.perf_counter() - t
    consumer = BarConsumer(client, name, "bench", "c1", store, "bars_1h", batch=5000)
    t = time.perf_counter()
    consumer.run(idle_stop=0.2)
    consume = time.perf_counter() - t - 0.2  # the idle wait that ends the run is not work
    stored = store.query("SELECT count(*) FROM market.bars_1h").item()
    assert stored == frame.height, (stored, frame.height)
    out = {"bars": frame.height, "publish_bars_per_s": round(frame.height / publish),
           "consume_bars_per_s": round(frame.height / consume),
           "end_to_end_bars_per_s": round(frame.height / (publish + consume))}
    print(f"  {frame.height:,} bars: publish {out['publish_bars_per_s']:,}/s, consume into PostgreSQL "
          f"{out['consume_bars_per_s']:,}/s, publish -> consume -> store {out['end_to_end_bars_per_s']:,}/s",
          flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--years", type=int, default=10)
    ap.add_argument("--reads", type=int, default=50)
    ap.add_argument("--stream-bars", type=int, default=100_000)
    ap.add_argument("--server", default=SERVER)
    args = ap.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not on PATH")
    name = f"emp_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{args.server}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="emp-bench-redis-")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    store = PostgresStore(f"{args.server}/{name}")
    try:
        for _ in range(100):
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        start, end = datetime(2010, 1, 1), datetime(2010 + args.years, 1, 1)
        frame = generate_bars(args.symbols, start, end, seed=42)
        store.upsert_bars("bars_1d", frame, source="bench", run_id="bench")
        print(f"PostgreSQL holds {frame.height:,} daily bars ({args.symbols} symbols x {args.years} years)")
        symbols = sorted(frame["symbol"].unique().to_list())
        print("reads (median of", args.reads, "each):")
        read_figures = reads(store, url, symbols, start, end, args.reads)
        print("stream:")
        stream_figures = stream(store, url, args.stream_bars)
    finally:
        store.dispose()
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        with psycopg.connect(f"{args.server}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    one = read_figures["1 symbol"]
    print(json.dumps({"cache_hit_ms": one["cache_hit_ms"], "postgres_read_ms": one["postgres_ms"],
                      "cache_speedup": one["speedup"], "reads": read_figures, **stream_figures}))


if __name__ == "__main__":
    main()

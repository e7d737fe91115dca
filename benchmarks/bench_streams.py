"""Stream throughput: bars/s through publish -> Redis Stream -> consumer group -> DuckDB store.

    .venv/bin/python benchmarks/bench_streams.py [--symbols 100] [--bars 1000] [--batch 1000]

Talks only to 127.0.0.1: a private redis-server (no persistence) on a free port, stopped at the end;
without redis-server on PATH, the server on 127.0.0.1:6379 with a unique stream, deleted afterwards.
Stores are DuckDB files in a temporary directory, removed at the end.

(a) publish: ``BarStream.publish`` of every bar (XADD, pipelined) into an empty stream.
(b) consume: ``BarConsumer.run`` of that backlog into an empty store (read, decode, fence, upsert, ack).
(c) end to end: a consumer in its own process waits on a fresh stream; the bars are published in
    chunks of --batch while it applies them; timed from the first XADD until the store holds the last
    bar. This is the headline ``bars_per_s``.
(ref) the store alone: ``upsert_bars`` of the same bars in the same batch sizes, no Redis: the ceiling
    the stream path is measured against (ratio in the table).
Each result is checked: the store ends holding exactly the published bars.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import redis

from emp_core.market_data.sources import generate_bars
from emp_core.store import DuckDBStore
from emp_core.store.streams import BarConsumer, BarStream, dead_letter_name, fence_name, lock_name


def universe(n_symbols: int, n_bars: int) -> pl.DataFrame:
    start = datetime(2021, 1, 4)
    end = start + timedelta(days=n_bars // 24 * 7 // 5 + 14)  # FX24X5: 120 hourly bars a week
    frame = generate_bars(n_symbols, start, end, interval="1h", seed=11)
    return frame.group_by("symbol", maintain_order=True).head(n_bars).select(
        "symbol", "ts", "open", "high", "low", "close", "volume")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(workdir: Path) -> tuple[subprocess.Popen | None, int]:
    if shutil.which("redis-server") is None:
        return None, 6379
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probe = redis.Redis(host="127.0.0.1", port=port)
    for _ in range(300):
        try:
            probe.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    probe.close()
    return proc, port


def fresh_store(path: Path) -> DuckDBStore:
    store = DuckDBStore(path)
    with store.connect():
        pass  # schema creation is set-up, not throughput
    return store


def consume_process(port: int, stream: str, store_path: str, n: int, batch: int, ready, result) -> None:
    client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    consumer = BarConsumer(client, stream, "bench", "c1", fresh_store(Path(store_path)), batch=batch, block_ms=100)
    ready.set()
    report = consumer.run(max_entries=n)
    result.put((time.monotonic(), report.read, report.applied))


def end_to_end(client: redis.Redis, port: int, stream: str, store_path: Path, frame: pl.DataFrame,
               batch: int) -> tuple[float, float]:
    """(c): seconds from the first XADD until a consumer in its own process has applied every bar, and
    the seconds the publishing itself took."""
    n = frame.height
    ctx = mp.get_context("spawn")
    ready, result = ctx.Event(), ctx.Queue()
    child = ctx.Process(target=consume_process, args=(port, stream, str(store_path), n, batch, ready, result))
    child.start()
    assert ready.wait(120), "the consumer process did not start"
    publisher = BarStream(client, stream, chunk=batch)
    t0 = time.monotonic()
    for offset in range(0, n, batch):
        publisher.publish(frame.slice(offset, batch), "bench")
    published = time.monotonic()
    done, read, applied = result.get(timeout=600)
    child.join(60)
    assert read == applied == n
    assert DuckDBStore(store_path).read_bars("bars_1h").equals(frame.sort("symbol", "ts"))
    return done - t0, published - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--bars", type=int, default=1000, help="hourly bars per symbol")
    ap.add_argument("--batch", type=int, default=5000, help="entries per consumer batch (and publish chunk)")
    args = ap.parse_args()
    frame = universe(args.symbols, args.bars)
    n = frame.height
    print(f"universe: {args.symbols} symbols x {args.bars} hourly bars = {n:,} bars; batch {args.batch}")
    tmp = Path(tempfile.mkdtemp(prefix="emp-bench-streams-"))
    proc, port = start_redis(tmp)
    client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True)
    tag = uuid.uuid4().hex[:8]
    streams = [f"bench:bars:{tag}:a", f"bench:bars:{tag}:c"]
    try:
        # (a) publish
        t = time.perf_counter()
        assert BarStream(client, streams[0], chunk=args.batch).publish(frame, "bench") == n
        publish_s = time.perf_counter() - t

        # (b) consume the backlog
        store_b = fresh_store(tmp / "b.duckdb")
        consumer = BarConsumer(client, streams[0], "bench", "c1", store_b, batch=args.batch, block_ms=100)
        t = time.perf_counter()
        report = consumer.run(max_entries=n)
        consume_s = time.perf_counter() - t
        assert report.applied == n and store_b.read_bars("bars_1h").equals(frame.sort("symbol", "ts"))

        e2e_s, publish_span = end_to_end(client, port, streams[1], tmp / "c.duckdb", frame, args.batch)

        # (ref) the store alone, same batches
        store_r = fresh_store(tmp / "r.duckdb")
        t = time.perf_counter()
        for offset in range(0, n, args.batch):
            store_r.upsert_bars("bars_1h", frame.slice(offset, args.batch), source="bench", run_id="ref")
        ref_s = time.perf_counter() - t
    finally:
        for s in streams:
            client.delete(s, dead_letter_name(s), fence_name(s, "bench"), lock_name(s, "bench"))
        client.close()
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)

    rows = [("publish (XADD, pipelined)", publish_s), ("consume backlog -> store", consume_s),
            ("end to end (concurrent)", e2e_s), ("store alone (upsert_bars)", ref_s)]
    print(f"{'path':<30}{'seconds':>10}{'bars/s':>14}{'vs store':>10}")
    for name, seconds in rows:
        print(f"{name:<30}{seconds:>10.3f}{n / seconds:>14,.0f}{ref_s / seconds:>10.2f}")
    print(f"(end to end: publishing took {publish_span:.3f}s, the consumer finished "
          f"{e2e_s - publish_span:.3f}s after the last XADD)")
    print(json.dumps({"bars_per_s": round(n / e2e_s), "publish_bars_per_s": round(n / publish_s),
                      "consume_bars_per_s": round(n / consume_s), "store_bars_per_s": round(n / ref_s), "bars": n,
                      "batch": args.batch}))


if __name__ == "__main__":
    main()

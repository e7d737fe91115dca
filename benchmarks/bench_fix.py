"""FIX round trip and throughput: our executor and paper venue against a bare quickfix echo pair, same run.

    .venv/bin/python benchmarks/bench_fix.py [--orders 10000] [--throughput 10000]

(a) floor: a bare quickfix 1.16 initiator and acceptor on loopback (the same settings: FileStore, data
    dictionary validation, TCP_NODELAY), the acceptor answering each NewOrderSingle with one ExecutionReport
    from its callback, the initiator sending the next order when the report arrives. Latency: send -> report
    received, per order, sequentially. Throughput: all orders sent at once, until the last report.
(b) ours: approved orders in the outbox (SQLite, WAL) -> `Executor` (NewOrderSingle) -> `PaperVenue` (risk-free
    acceptance: the New report) -> the executor's callback journals the report (one committed SQLite
    transaction) before quickfix advances. Latency: the executor's send -> the report journaled, per order,
    one order at a time. Throughput: orders submitted to the outbox -> every New report in the journal.
Targets (issue 12): our p50 <= 2x the floor's p50; our p99 <= 5x our p50; our outbox-to-journal rate >= half
the floor's message rate. Reports where our time goes. Ends with one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import polars as pl
import quickfix as qf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emp_core.execution.executor import Executor
from emp_core.execution.fix import (
    ExecReport,
    FixApplication,
    FixSession,
    NewOrder,
    OrdStatus,
    OrdType,
    Side,
    write_settings,
)
from emp_core.execution.outbox import ApprovedOrder, sqlite_outbox
from emp_core.execution.venue import PaperVenue, VenueConfig
from tests.support import free_port


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class EchoAcceptor(FixApplication):
    def from_app(self, message, session_id):
        order = NewOrder.from_message(message)
        report = ExecReport(order_id=order.cl_ord_id, exec_id=order.cl_ord_id, exec_type="0",
                            ord_status=OrdStatus.NEW, cl_ord_id=order.cl_ord_id, symbol=order.symbol,
                            side=order.side, order_qty=order.qty, leaves_qty=order.qty, cum_qty=0.0, avg_px=0.0)
        qf.Session.sendToTarget(report.to_message(), session_id)


class EchoInitiator(FixApplication):
    def __init__(self) -> None:
        super().__init__()
        self.cond = threading.Condition()
        self.received = 0

    def from_app(self, message, session_id):
        with self.cond:
            self.received += 1
            self.cond.notify_all()

    def wait(self, count: int, timeout: float = 120) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.received >= count, timeout), "floor: reports missing"


def floor(tmp: Path, orders: int, burst: int) -> dict:
    port = free_port()
    acc = write_settings(tmp / "floor_acc.cfg", role="acceptor", port=port, store_dir=tmp / "floor_acc",
                         sessions=[("VENUE", "CLIENT")])
    ini = write_settings(tmp / "floor_ini.cfg", role="initiator", port=port, store_dir=tmp / "floor_ini",
                         sessions=[("CLIENT", "VENUE")], reconnect_interval=1)
    client = EchoInitiator()
    with FixSession(acc, EchoAcceptor(), role="acceptor"), FixSession(ini, client, role="initiator") as s:
        assert s.wait_logged_on(30)
        lat = []
        for i in range(orders):
            t0 = time.perf_counter()
            s.send(NewOrder(cl_ord_id=f"F{i}", symbol="AAA", side=Side.BUY, qty=1.0, ord_type=OrdType.MARKET))
            client.wait(i + 1)
            lat.append(time.perf_counter() - t0)
        base = client.received
        t0 = time.perf_counter()
        for i in range(burst):
            s.send(NewOrder(cl_ord_id=f"B{i}", symbol="AAA", side=Side.BUY, qty=1.0, ord_type=OrdType.MARKET))
        client.wait(base + burst)
        rate = burst / (time.perf_counter() - t0)
    return {"p50_us": percentile(lat, 0.5) * 1e6, "p99_us": percentile(lat, 0.99) * 1e6, "rate": rate}


class Timed(Executor):
    """The executor, with the time of each send and of each report's journal commit recorded."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self.sent_at: dict[str, float] = {}
        self.journaled_at: dict[str, float] = {}
        real = self.app.from_app

        def from_app(message, session_id):
            real(message, session_id)
            self.journaled_at.setdefault(message.getField(11), time.perf_counter())

        self.app.from_app = from_app
        send = self.fix.send

        def timed_send(message, session_id=None):
            self.sent_at[message.cl_ord_id] = time.perf_counter()
            return send(message, session_id)

        self.fix.send = timed_send


def ours(tmp: Path, orders: int, burst: int) -> dict:
    port = free_port()
    venue_cfg = write_settings(tmp / "venue.cfg", role="acceptor", port=port, store_dir=tmp / "venue_store",
                               sessions=[("VENUE", "EXECUTOR")])
    ex_cfg = write_settings(tmp / "executor.cfg", role="initiator", port=port, store_dir=tmp / "ex_store",
                            sessions=[("EXECUTOR", "VENUE")], reconnect_interval=1)
    bars = pl.DataFrame({"symbol": ["AAA", "AAA"], "ts": [0, 1], "open": 100.0, "high": 101.0, "low": 99.0,
                         "close": 100.0, "volume": 1e9}).with_columns(pl.from_epoch("ts", "d"))
    box = sqlite_outbox(tmp / "outbox.sqlite")
    venue = PaperVenue(bars, venue_cfg, VenueConfig(drop_copy=None), id_prefix="V-").start()
    executor = Timed(ex_cfg, box, batch=500, poll_seconds=0.0005)
    try:
        executor.start()
        assert executor.fix.wait_logged_on(30)
        for i in range(orders):
            box.submit([ApprovedOrder(idem_key=f"L{i}", strategy="bench", symbol="AAA", side="buy", qty=1)])
            executor.pump()
            deadline = time.monotonic() + 30
            while len(executor.journaled_at) < i + 1:
                assert time.monotonic() < deadline, "ours: report missing"
                time.sleep(0.00002)
        lat = [executor.journaled_at[c] - executor.sent_at[c] for c in executor.sent_at]
        base = len(executor.journaled_at)
        runner = threading.Thread(target=executor.run, kwargs={"until": lambda: len(executor.journaled_at) >=
                                                               base + burst}, daemon=True)
        t0 = time.perf_counter()
        box.submit([ApprovedOrder(idem_key=f"T{i}", strategy="bench", symbol="AAA", side="buy", qty=1)
                    for i in range(burst)])
        t_submit = time.perf_counter() - t0
        runner.start()
        runner.join(300)
        rate = burst / (time.perf_counter() - t0)
    finally:
        executor.stop()
        venue.stop()
    return {"p50_us": percentile(lat, 0.5) * 1e6, "p99_us": percentile(lat, 0.99) * 1e6, "rate": rate,
            "submit_seconds": t_submit}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--orders", type=int, default=10_000, help="sequential round trips (latency)")
    ap.add_argument("--throughput", type=int, default=10_000, help="orders in the throughput burst")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = floor(Path(tmp), args.orders, args.throughput)
        mine = ours(Path(tmp), args.orders, args.throughput)
    result = {"orders": args.orders, "floor_p50_us": round(base["p50_us"], 1), "floor_p99_us": round(base["p99_us"], 1),
              "floor_rate": round(base["rate"]), "ours_p50_us": round(mine["p50_us"], 1),
              "ours_p99_us": round(mine["p99_us"], 1), "ours_rate": round(mine["rate"]),
              "p50_vs_floor": round(mine["p50_us"] / base["p50_us"], 2),
              "p99_vs_p50": round(mine["p99_us"] / mine["p50_us"], 2),
              "rate_vs_floor": round(mine["rate"] / base["rate"], 2),
              "submit_seconds": round(mine["submit_seconds"], 3)}
    print(f"floor (bare quickfix echo): p50 {result['floor_p50_us']} us, p99 {result['floor_p99_us']} us, "
          f"{result['floor_rate']} orders/s")
    print(f"ours (outbox -> executor -> venue -> journal): p50 {result['ours_p50_us']} us, p99 "
          f"{result['ours_p99_us']} us, {result['ours_rate']} orders/s")
    print(f"ratios: p50 {result['p50_vs_floor']}x the floor (target <= 2), p99 {result['p99_vs_p50']}x our p50 "
          f"(target <= 5), throughput {result['rate_vs_floor']} of the floor (target >= 0.5)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

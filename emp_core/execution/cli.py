"""The execution commands behind ``emp executor``, ``emp venue`` and ``emp orders`` (typed ``run_*`` functions;
``emp_core.cli`` holds only their parsers)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import threading
import uuid
from datetime import datetime
from pathlib import Path

import polars as pl

from emp_core.config import REPO_ROOT
from emp_core.errors import EmpError

log = logging.getLogger("emp")

DEFAULT_POLICY = REPO_ROOT / "policies" / "default-v2.yaml"


def _until_signalled() -> threading.Event:
    """An event set by SIGINT or SIGTERM (a long-running command stops cleanly on either). Started by another
    process that asked for it (``EMP_PARENT_PID``, as ``emp demo``'s paper session does), the command also
    stops when that process dies: Linux sends SIGTERM (PR_SET_PDEATHSIG), so a demo killed with SIGKILL leaves
    no orphaned venue or executor holding the FIX stores and the outbox."""
    from emp_core.config import settings

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    parent = settings().parent_pid
    if parent is not None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # it died before the request took effect
            stop.set()
    return stop


def run_executor(settings_file: Path, *, health_port: int | None = None, max_seconds: float | None = None) -> int:
    """Run the executor until SIGINT/SIGTERM (or ``max_seconds``).

    A logon the counterparty refuses (a Logout answering our Logon: bad credentials, an unknown session, sequence
    numbers it will not accept) ends the command at once, on the first refusal: retrying cannot fix it, an
    operator must. The executor is stopped cleanly (its ``logon_rejected`` event is logged) and ``LogonRejected``
    is raised, so ``emp`` prints one line naming the session and the counterparty's reason (the password masked)
    and exits 2."""
    from emp_core.execution.executor import Executor
    from emp_core.execution.outbox import open_outbox

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    stop = _until_signalled()
    executor = Executor(settings_file, open_outbox(), health_port=health_port)
    with executor:
        executor.run(until=lambda: stop.is_set() or executor.logon_rejected.is_set(), max_seconds=max_seconds)
    error = executor.logon_error() if executor.logon_rejected.is_set() else None
    if error is not None:
        raise error
    return 0


def _bars(data: Path | None, symbols: list[str] | None) -> pl.DataFrame:
    if data is not None:
        from emp_core.market_data.readers import read_bar_file

        frame = read_bar_file(data)
    else:
        from emp_core.store import open_store

        frame = open_store(failover=False).read_bars("bars_1d")
    if symbols:
        frame = frame.filter(pl.col("symbol").is_in(symbols))
    if frame.is_empty():
        raise EmpError("no bars to trade against: ingest some (emp ingest) or give --data FILE")
    return frame.select("symbol", "ts", "open", "high", "low", "close", "volume")


def start_index(bars: pl.DataFrame, start: datetime) -> int:
    """The index of the last bar time at or before ``start`` among ``bars``' times."""
    times = bars["ts"].unique().sort()
    index = int((times <= start).sum()) - 1
    if index < 0:
        raise EmpError(f"--start {start}: before the first bar ({times[0]})")
    return index


def run_venue(settings_file: Path, *, data: Path | None = None, symbols: list[str] | None = None,
              bar_seconds: float = 1.0, start_bar: int = 0, start: datetime | None = None,
              wait_for_orders: bool = False, max_bars: int | None = None, max_seconds: float | None = None) -> int:
    """Run the paper venue, advancing one bar every ``bar_seconds``, until SIGINT/SIGTERM, the last bar, ``max_bars``
    advances or ``max_seconds``. ``start`` (a time) starts the clock at the last bar at or before it, in place of
    ``start_bar``; with ``wait_for_orders`` the clock stands still until the first order arrives (a replay that
    fills the first orders at the bar after the one they were planned on)."""
    import time

    from emp_core.execution.venue import PaperVenue

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    stop = _until_signalled()
    bars = _bars(data, symbols)
    if start is not None:
        start_bar = start_index(bars, start)
    venue = PaperVenue(bars, settings_file, start=start_bar)
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    advanced = 0
    with venue:
        log.info(json.dumps({"event": "venue_started", "bars": venue.bar_count, "bar": venue.bar_index,
                             "bar_time": str(venue.bar_time), "waiting_for_orders": wait_for_orders}))
        while not stop.wait(bar_seconds):
            if deadline is not None and time.monotonic() > deadline:
                break
            if max_bars is not None and advanced >= max_bars:
                log.info(json.dumps({"event": "venue_max_bars", "bar": venue.bar_index, "advanced": advanced}))
                break
            if wait_for_orders and not venue.received():
                continue
            if venue.advance() is None:
                log.info(json.dumps({"event": "venue_out_of_bars", "bar": venue.bar_index}))
                break
            advanced += 1
            log.info(json.dumps({"event": "bar", "bar": venue.bar_index, "bar_time": str(venue.bar_time)}))
        # keep the sessions up until stopped, so the executor can still be told about the last reports
        if not stop.is_set() and (max_bars is not None or wait_for_orders):
            stop.wait(max(0.0, deadline - time.monotonic()) if deadline is not None else None)
    return 0


def run_dropcopy(settings_file: Path, *, max_seconds: float | None = None) -> int:
    """Listen on the venue's drop-copy session and record every mirrored report (for reconciliation) until
    SIGINT/SIGTERM or ``max_seconds``."""
    from emp_core.execution.outbox import open_outbox
    from emp_core.execution.reconcile import DropCopyListener

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    stop = _until_signalled()
    box = open_outbox()
    with DropCopyListener(settings_file, box) as listener:
        log.info(json.dumps({"event": "dropcopy_started", "session": listener.session_name, "outbox": str(box)}))
        stop.wait(max_seconds)
    log.info(json.dumps({"event": "dropcopy_stopped", "recorded": box.journal_size("dropcopy")}))
    return 0


def _market(symbols: list[str]) -> tuple[dict[str, float], dict[str, float]]:
    """Each symbol's last close and average daily volume from the store (``trading.book.read_market``); empty
    when the store has no bars of them."""
    from emp_core.store import open_store
    from emp_core.trading.book import read_market

    try:
        market = read_market(open_store(failover=False), symbols=symbols)
    except EmpError:  # no bars: the caller names the symbol
        return {}, {}
    return market.prices, market.adv


def run_orders_submit(*, symbol: str, side: str, qty: int, order_type: str, price: float | None,
                      stop: float | None, strategy: str, confidence: float, session: str, policy_file: Path,
                      key: str | None, as_json: bool, compliance_file: Path | None = None) -> int:
    """Put a manual order through the risk policy, the trade compliance rules and the ``compliance_clear`` gate
    (an order that only reduces a position passes the gate), audit the decision, and, if approved, put it in
    the outbox (exit 0; 1 if refused)."""
    import polars as pl

    from emp_core.clock import utcnow
    from emp_core.compliance import trail
    from emp_core.compliance.trade import (
        DEFAULT_COMPLIANCE_POLICY,
        PreTrade,
        day_orders,
        load_compliance_policy,
        open_breaches,
        pre_trade_breaches,
        record_breaches,
        unjudged_fills,
    )
    from emp_core.execution.account import account, fills
    from emp_core.execution.outbox import ApprovedOrder, clordid_for, open_outbox
    from emp_core.risk.policy import Intent, Portfolio, evaluate, load_policy
    from emp_core.store import open_store
    from emp_core.trading.book import PAPER_CAPITAL
    from emp_core.trading.intents import RUN_DECISION_SCHEMA, judge
    from emp_core.trading.readiness import compliance_clear

    policy = load_policy(policy_file)
    box = open_outbox()
    journal = box.journal()
    prices, adv = _market(sorted({symbol, *fills(journal)["symbol"].to_list()}))
    if symbol not in prices:
        raise EmpError(f"no bars for {symbol} in the store: its last price is unknown (emp ingest first)")
    acct = account(journal, prices, PAPER_CAPITAL)
    portfolio = Portfolio(equity=acct.equity, peak_equity=acct.peak_equity, day_start_equity=acct.day_start_equity,
                          positions=acct.positions, prices=prices, adv=adv)
    intent = Intent(strategy=strategy, symbol=symbol, side=side, quantity=qty, order_type=order_type,
                    reference_price=prices[symbol], confidence=confidence, stop_price=stop, limit_price=price)
    decision = evaluate(intent, portfolio, policy, session)
    # the firm's trade compliance rules too, and the compliance_clear gate: as the planned orders get them
    store = open_store(failover=False)
    idem_key = key or f"manual:{uuid.uuid4().hex}"
    pre = PreTrade(load_compliance_policy(compliance_file or DEFAULT_COMPLIANCE_POLICY),
                   tuple(day_orders(box.entries(), box.status(), session)), utcnow())
    rows, approved = judge(decision, idem_key, pre, list(pre.earlier))
    held = acct.positions.get(symbol, 0)
    reduce_only = held * (1 if side == "buy" else -1) < 0 and qty <= abs(held)
    gate = compliance_clear(open_breaches(store), unjudged_fills(store, journal))
    reason = decision.reason
    if approved and not gate.passed and not reduce_only:  # closing stays allowed: the breach is not made worse
        approved, reason = False, f"refused by compliance_clear: {gate.description}"
        rows = [r | {"approved": False} for r in rows]
    elif not approved and decision.approved:
        failed = [r for r in rows if r["verdict"] == "fail"]
        reason = f"refused by {failed[0]['check']}: {failed[0]['reason']}"
    run_rows = [{"run_id": "manual", "idem_key": idem_key} | r for r in rows]
    trail.record(store, trail.decision_events(pl.DataFrame(run_rows, schema=RUN_DECISION_SCHEMA)))
    record_breaches(store, pre_trade_breaches(pl.DataFrame(run_rows, schema=RUN_DECISION_SCHEMA), pre.at))
    clordid = None
    if approved:
        order = ApprovedOrder(idem_key=idem_key, strategy=strategy, symbol=symbol,
                              side=side, qty=qty, ord_type=order_type, limit_price=price, stop_price=stop,
                              session=session, policy_version=policy.version, decision=rows)
        if clordid_for(idem_key) not in trail.audited(store, "order", "clordid"):  # once per ClOrdID, before the outbox
            trail.record(store, trail.order_events(pl.DataFrame([{
                "run_id": "manual", "idem_key": idem_key, "clordid": clordid_for(idem_key), "symbol": symbol,
                "side": side, "qty": qty, "session": session, "strategy": strategy}])))
        ((clordid, new),) = box.submit([order])
        if not new:
            log.info("order %s was already in the outbox (the same --key)", clordid)
    _print_decision(rows, approved, reason, clordid, f"{policy.version}, {pre.policy.version}", as_json)
    return 0 if approved else 1


def _print_decision(rows: list[dict], approved: bool, reason: str, clordid: str | None, versions: str,
                    as_json: bool) -> None:
    if as_json:
        print(json.dumps({"approved": approved, "reason": reason, "clordid": clordid, "checks": rows},
                         default=str))
        return
    for row in rows:
        print(f"  {row['step']:>2} {row['check']:<26} {row['verdict']:<5} {row['reason']}")
    verdict = f"APPROVED, ClOrdID {clordid}" if clordid else f"REFUSED: {reason}"
    print(f"decision ({versions}): {verdict}")


def run_orders_cancel(clordid: str, *, as_json: bool) -> int:
    from emp_core.execution.outbox import open_outbox

    cancel = open_outbox().request_cancel(clordid)
    print(json.dumps({"clordid": clordid, "cancel_clordid": cancel}) if as_json
          else f"cancel requested for {clordid} (request {cancel}); the executor sends it")
    return 0


def run_orders_status(*, as_json: bool) -> int:
    from emp_core.execution.outbox import open_outbox

    box = open_outbox()
    status = box.status()
    if as_json:
        print(json.dumps({"outbox": str(box), "depth": box.depth(), "orders": status.to_dicts()}, default=str))
    else:
        print(f"{box}: {status.height} order(s), {box.depth()} waiting for the executor")
        with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200):
            print(status)
    return 0

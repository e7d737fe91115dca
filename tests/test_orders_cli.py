"""``emp orders``: a manual order through the risk policy into the outbox (printed decision, ClOrdID), refused
orders never queued, one order per --key, status and cancel, on the embedded tier."""

from __future__ import annotations

import json

import pytest

from emp_core.cli import main
from emp_core.compliance.trade import RULES
from emp_core.execution.outbox import sqlite_outbox


@pytest.fixture
def home(trading_home):
    return trading_home


def submit(capsys, *args: str) -> tuple[int, dict]:
    code = main(["orders", "submit", "--symbol", "AAA", "--json", *args])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_an_approved_order_is_queued_once_per_key_with_its_decision(home, capsys):
    args = ("--side", "buy", "--qty", "100", "--type", "limit", "--price", "100", "--stop", "95", "--key", "k1")
    code, out = submit(capsys, *args)
    assert code == 0 and out["approved"] and out["clordid"], out
    assert [c["check"] for c in out["checks"]][:2] == ["strategy_enabled", "paper_only"] and len(out["checks"]) == 19
    assert [c["check"] for c in out["checks"]][13:] == [f"compliance/{r}" for r in RULES]  # the firm's rules too
    per_trade = next(c for c in out["checks"] if c["check"] == "per_trade_risk")
    assert per_trade["value"] == pytest.approx(100 * 5 / 1_000_000)  # 100 units x 5 to the stop / equity
    again = submit(capsys, *args)[1]
    assert again["clordid"] == out["clordid"]
    box = sqlite_outbox(home / "outbox.sqlite")
    entries = box.entries()
    assert entries.height == 1 and entries.row(0, named=True)["limit_price"] == 100.0
    assert entries["policy_version"].to_list() == ["default-v2"]


def test_manual_orders_meet_the_compliance_rules_and_gate_and_are_audited(home, capsys):
    """The manual path is no bypass: a limit price outside the collar is refused by compliance (the risk
    policy alone would approve it) and recorded as a pre-trade breach; an open post-trade breach refuses a new
    position but lets a close through; every decision and order is in the audit trail."""
    from datetime import datetime

    import polars as pl

    from emp_core.compliance import audit_store
    from emp_core.compliance.trade import BREACH_SCHEMA, record_breaches
    from emp_core.store.duckdb_store import DuckDBStore

    store = DuckDBStore(home / "emp.duckdb")
    checks = {c["check"]: c for c in submit(capsys, "--side", "buy", "--qty", "1", "--type", "market", "--stop",
                                             "1")[1]["checks"]}
    assert checks["compliance/price_collar"]["verdict"] == "pass" and checks["compliance/price_collar"]["value"] == 0
    last = checks["position_size"]["value"]  # one unit at the last price
    box = sqlite_outbox(home / "outbox.sqlite")
    before = box.entries().height
    limit = round(last * 1.2, 2)  # 20% through the market: the collar is 10%
    code, out = submit(capsys, "--side", "buy", "--qty", "1", "--type", "limit", "--price", str(limit), "--stop",
                       str(round(limit * 0.99, 2)))
    assert code == 1 and out["reason"].startswith("refused by compliance/price_collar"), out["reason"]
    assert all(c["verdict"] != "fail" for c in out["checks"] if not c["check"].startswith("compliance/"))
    assert box.entries().height == before
    kinds = audit_store.read(store)["kind"].to_list()
    assert kinds.count("risk.decision") == 2 and kinds.count("order") == 1 and kinds.count("compliance.breach") == 1
    breach = {"breach_id": "b1", "stage": "post_trade", "rule": "wash_trade", "policy_version": "compliance-v1",
              "symbol": "AAA", "side": "sell", "value": 3.0, "limit": 60.0, "order_ref": "C9", "exec_id": "X9",
              "other_ref": "X8", "at": datetime(2026, 11, 27, 14, 30), "detail": "3 s from the firm's own buy"}
    record_breaches(store, pl.DataFrame([breach], schema=BREACH_SCHEMA))
    code, out = submit(capsys, "--side", "buy", "--qty", "1", "--type", "market", "--stop", "1")
    assert code == 1 and out["reason"].startswith("refused by compliance_clear")


def test_a_refused_order_prints_why_and_is_never_queued(home, capsys):
    code, out = submit(capsys, "--side", "buy", "--qty", "100", "--type", "market")  # no stop: mandatory
    assert code == 1 and not out["approved"] and out["clordid"] is None
    assert "stop_loss" in out["reason"], out["reason"]
    code, out = submit(capsys, "--side", "buy", "--qty", "1000", "--type", "market", "--stop", "50")
    assert code == 1 and "per_trade_risk" in out["reason"]  # 1000 x 50 = 5% of equity, over 2%
    assert sqlite_outbox(home / "outbox.sqlite").entries().height == 0


def test_status_and_cancel(home, capsys):
    _, out = submit(capsys, "--side", "sell", "--qty", "10", "--type", "market", "--stop", "105")
    clordid = out["clordid"]
    assert main(["orders", "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert status["depth"] == 1 and [o["clordid"] for o in status["orders"]] == [clordid]
    assert main(["orders", "cancel", clordid, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cancel_clordid"] == f"{clordid}-C1"
    assert main(["orders", "cancel", "NOPE"]) == 2
    assert "no order 'NOPE' in the outbox" in capsys.readouterr().err


def test_an_order_for_a_symbol_without_bars_is_an_error_naming_it(home, capsys):
    assert main(["orders", "submit", "--symbol", "ZZZ", "--side", "buy", "--qty", "1", "--type", "market"]) == 2
    assert "no bars for ZZZ" in capsys.readouterr().err

"""The trading assets in Dagster: the readiness gates block the outbox when they fail and let orders through
when they pass; a re-run puts nothing in twice; the journal assets and their sensor."""

from datetime import timedelta

import dagster as dg
import polars as pl
import pytest

from emp_core.execution.outbox import open_outbox
from emp_dagster.defs.market_data.resources import StoreResource
from emp_dagster.defs.trading import assets as trading
from emp_dagster.defs.trading.sensors import execution_journal
from tests.test_trading import DAY0, _frames, _store

PLAN = [trading.intents, trading.risk_decisions, trading.approved_orders]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("EMP_HOME", str(tmp_path))
    monkeypatch.setenv("EMP_TIER", "embedded")
    _store(tmp_path / "emp.duckdb", *_frames())
    return tmp_path


def plan(home, **config):
    ops = {f"trading__{n}": {"config": config} for n in ("intents", "risk_decisions", "approved_orders")}
    with dg.instance_for_test() as instance:
        return dg.materialize(PLAN, resources={"store": StoreResource(path=str(home / "emp.duckdb"))},
                              instance=instance, run_config={"ops": ops}, raise_on_error=False)


def gates(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def materialised(result) -> set[str]:
    return {m.asset_key.path[-1] for m in result.get_asset_materialization_events()}


def test_on_a_paper_session_the_gates_pass_and_the_approved_orders_reach_the_outbox_once(home):
    result = plan(home)
    assert result.success and all(gates(result).values()) and len(gates(result)) == 4
    assert materialised(result) == {"intents", "risk_decisions", "approved_orders"}
    box = open_outbox()
    entries = box.entries()
    meta = {e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert entries.height == meta["risk_decisions"]["approved"].value > 0
    assert set(entries["strategy"]) == {"catalogue/trend"} and set(entries["session"]) == {"paper"}
    assert "no champion" in meta["intents"]["strategy_source"].value
    again = plan(home)  # the same bar again: the same idempotency keys, nothing new in the outbox
    assert again.success and box.entries().height == entries.height
    stored = open_outbox().entries()["clordid"].to_list()
    assert sorted(stored) == sorted(entries["clordid"].to_list())


def test_a_live_session_without_a_champion_is_blocked_before_the_outbox(home):
    result = plan(home, session="live")
    assert gates(result) == {"signals_fresh": False, "strategy_ready": False, "compliance_clear": True}  # old data,
    # a paper-only fallback
    assert materialised(result) == {"intents"} and not result.success
    assert open_outbox().entries().is_empty()


def test_stale_signals_block_the_outbox(home):
    from emp_core.store import DuckDBStore

    bars, _ = _frames()
    later = bars.filter(pl.col("ts") == bars["ts"].max()).with_columns(pl.col("ts") + timedelta(days=1))
    DuckDBStore(home / "emp.duckdb").upsert_bars("bars_1d", later, source="test", run_id="r2")  # no signal yet
    result = plan(home)
    assert gates(result)["signals_fresh"] is False and "materialise the sensory" in next(
        e.description for e in result.get_asset_check_evaluations() if e.check_name == "signals_fresh")
    assert open_outbox().entries().is_empty()


def test_a_journal_that_does_not_reconcile_blocks_the_outbox_until_it_does(home):
    box = open_outbox()
    report = {"session": "EMP->VENUE", "exec_id": "X1", "clordid": "C1", "msg_type": "8", "ord_status": "0",
              "exec_type": "0", "symbol": "AAA", "side": "1"}
    box.record([report])  # a report the venue's drop copy never saw
    result = plan(home)
    assert gates(result) == {"signals_fresh": True, "strategy_ready": True, "compliance_clear": True,
                             "risk_ready": False}
    assert "approved_orders" not in materialised(result) and box.entries().is_empty()
    box.record([report], into="dropcopy")
    assert plan(home).success and box.entries().height > 0


def test_the_journal_assets_mark_the_fills_and_the_reconciliation_gate_passes_and_fails(home):
    box = open_outbox()
    from emp_core.execution.outbox import ApprovedOrder

    order = ApprovedOrder(idem_key="k1", strategy="manual", symbol="AAA", side="buy", qty=100)
    live = ApprovedOrder(idem_key="k2", strategy="manual", symbol="BBB", side="buy", qty=7, session="live")
    box.submit([order, live])
    box.record([{"session": "EMP->LIVE", "exec_id": "L1", "clordid": live.clordid, "msg_type": "8",
                 "ord_status": "2", "exec_type": "F", "symbol": "BBB", "side": "1", "last_qty": "7",
                 "last_px": "100", "cum_qty": "7", "avg_px": "100"}], into="executions")
    box.record([{"session": "LIVE-DC", "exec_id": "L1", "clordid": live.clordid, "msg_type": "8",
                 "ord_status": "2", "exec_type": "F", "symbol": "BBB", "side": "1", "last_qty": "7",
                 "last_px": "100", "cum_qty": "7", "avg_px": "100"}], into="dropcopy")
    fill = {"session": "EMP->VENUE", "exec_id": "F1", "clordid": order.clordid, "msg_type": "8", "ord_status": "2",
            "exec_type": "F", "symbol": "AAA", "side": "1", "last_qty": "100", "last_px": "100",
            "cum_qty": "100", "avg_px": "100"}
    box.record([fill])
    resources = {"store": StoreResource(path=str(home / "emp.duckdb"))}
    with dg.instance_for_test() as instance:
        run = dg.materialize([trading.journal, trading.reconciliation], resources=resources, instance=instance,
                             raise_on_error=False)
        assert gates(run) == {"journal_reconciled": False}  # no drop copy
        box.record([fill], into="dropcopy")
        run = dg.materialize([trading.journal, trading.reconciliation], resources=resources, instance=instance,
                             raise_on_error=False)
    assert run.success and gates(run) == {"journal_reconciled": True}
    from emp_core.store import DuckDBStore

    store = DuckDBStore(home / "emp.duckdb")
    assert store.query("SELECT symbol FROM trading.positions")["symbol"].to_list() == ["AAA"]  # the paper book
    held = store.query("SELECT * FROM trading.positions").row(0, named=True)
    last = store.query("SELECT close FROM market.bars_1d WHERE symbol = 'AAA' ORDER BY ts DESC LIMIT 1").item()
    assert held["units"] == 100 and held["unrealised_pnl"] == pytest.approx(100 * (last - 100))
    account = store.query("SELECT * FROM trading.pnl ORDER BY written_at DESC LIMIT 1").row(0, named=True)
    assert account["equity"] == pytest.approx(1_000_000 + 100 * (last - 100))
    var = store.query("SELECT * FROM trading.var ORDER BY written_at DESC LIMIT 1").row(0, named=True)
    assert var["var_historical"] > 0 and var["n_observations"] >= 100


def test_the_journal_sensor_runs_once_per_change(home):
    box = open_outbox()
    with dg.instance_for_test() as instance:
        first = execution_journal(dg.build_sensor_context(instance=instance))
        assert isinstance(first, dg.RunRequest)
        cursor = first.run_key.removeprefix("journal-")
        assert isinstance(execution_journal(dg.build_sensor_context(instance=instance, cursor=cursor)),
                          dg.SkipReason)
        box.record([{"session": "s", "exec_id": "E1", "clordid": "C1", "msg_type": "8", "ord_status": "0"}])
        again = execution_journal(dg.build_sensor_context(instance=instance, cursor=cursor))
        assert isinstance(again, dg.RunRequest) and again.run_key != first.run_key


def test_a_replayed_bar_trades_on_that_bar(home):
    as_of = DAY0 + timedelta(days=100)
    result = plan(home, as_of=as_of.isoformat())
    assert result.success
    keys = open_outbox().entries()["idem_key"].to_list()
    assert keys and all(as_of.isoformat() in k for k in keys)


def test_the_later_steps_refuse_a_plan_whose_gates_failed_even_when_run_on_their_own(home):
    """Re-executing only the outbox step (or decisions and outbox) after a failed gate must not reach the
    outbox: the gates' verdicts are kept with the plan and checked again."""
    failed = plan(home, session="live")  # strategy_ready and signals_fresh fail
    assert "approved_orders" not in materialised(failed)
    resources = {"store": StoreResource(path=str(home / "emp.duckdb"))}
    with dg.instance_for_test() as instance:
        alone = dg.materialize([trading.approved_orders], resources=resources, instance=instance,
                               raise_on_error=False, selection=[trading.KEYS["approved_orders"]])
        both = dg.materialize([trading.risk_decisions, trading.approved_orders], resources=resources,
                              instance=instance, raise_on_error=False)
    assert not alone.success and not both.success
    assert open_outbox().entries().is_empty()


def test_a_plan_with_nothing_to_trade_succeeds_and_sends_nothing(home):
    first = plan(home)
    assert first.success
    entries = open_outbox().entries().height
    second = plan(home, as_of="")  # the same bar: every target already working, no order
    assert second.success and open_outbox().entries().height == entries


def test_an_as_of_between_bars_fails_freshness_and_a_live_as_of_is_judged(home):
    off_bar = plan(home, as_of=(DAY0 + timedelta(days=100, hours=12)).isoformat())
    assert gates(off_bar)["signals_fresh"] is False
    live = plan(home, session="live", as_of=(DAY0 + timedelta(days=100)).isoformat())
    assert gates(live)["signals_fresh"] is False  # a live session does not replay: the bar is years old
    assert open_outbox().entries().is_empty()


def test_a_second_plan_with_more_capital_does_not_resize_what_is_working(home):
    from emp_core.store import DuckDBStore

    assert plan(home).success
    first = open_outbox().entries().select("clordid", "qty").sort("clordid")
    assert plan(home, capital=3_000_000.0).success  # bigger targets, but the positions are already on their way
    assert open_outbox().entries().select("clordid", "qty").sort("clordid").equals(first)
    last = DuckDBStore(home / "emp.duckdb").query(
        "SELECT status FROM trading.intents WHERE planned_at = (SELECT max(planned_at) FROM trading.intents)")
    assert set(last["status"]) == {"hold"}


def test_an_open_post_trade_breach_blocks_the_plan_until_a_compliance_officer_resolves_it(home):
    """compliance_clear: a breach found on a fill (here recorded as the compliance report records it) stops
    the next plan before the outbox; resolving it, with the reviewer and the reason, lets the plan through."""
    from datetime import datetime

    from emp_core.compliance.trade import BREACH_SCHEMA, record_breaches, resolve
    from emp_core.store import DuckDBStore

    store = DuckDBStore(home / "emp.duckdb")
    breach = {"breach_id": "b1", "stage": "post_trade", "rule": "wash_trade", "policy_version": "compliance-v1",
              "symbol": "AAA", "side": "sell", "value": 3.0, "limit": 60.0, "order_ref": "C9", "exec_id": "X9",
              "other_ref": "X8", "at": datetime(2026, 11, 27, 14, 30), "detail": "3 s from the firm's own buy"}
    record_breaches(store, pl.DataFrame([breach], schema=BREACH_SCHEMA))
    result = plan(home)
    assert gates(result) == {"signals_fresh": True, "strategy_ready": True, "compliance_clear": False}
    assert "b1 wash_trade on AAA (X9)" in next(e.description for e in result.get_asset_check_evaluations()
                                               if e.check_name == "compliance_clear")
    assert materialised(result) == {"intents"} and open_outbox().entries().is_empty()
    resolve(store, "b1", by="J. Smith", reason="two strategies crossed; no change of ownership, reviewed")
    assert plan(home).success and open_outbox().entries().height > 0


def test_fills_the_compliance_report_has_not_judged_block_the_plan():
    """compliance_clear is not a record of no breaches when nobody looked: a fill in the journal that the
    post-trade rules have not judged fails the gate, naming it."""
    from emp_core.trading.readiness import compliance_clear

    none = pl.DataFrame(schema={"breach_id": pl.String})
    assert compliance_clear(none, []).passed
    outcome = compliance_clear(none, ["X1", "X2"])
    assert not outcome.passed and "2 fill(s) not yet judged" in outcome.description and "X1" in outcome.description


def test_a_breach_found_after_the_plan_stops_the_send(home):
    """The gate is checked again when the orders go to the outbox: a breach recorded between planning and the
    send (the compliance report ran in between) keeps them out; the audit trail holds each order once."""
    from datetime import datetime

    from emp_core.compliance import audit_store
    from emp_core.compliance.trade import BREACH_SCHEMA, record_breaches
    from emp_core.store import DuckDBStore

    ops = {f"trading__{n}": {"config": {}} for n in ("intents", "risk_decisions")}
    with dg.instance_for_test() as instance:
        planned = dg.materialize(PLAN[:2], resources={"store": StoreResource(path=str(home / "emp.duckdb"))},
                                 instance=instance, run_config={"ops": ops})
        assert planned.success
        store = DuckDBStore(home / "emp.duckdb")
        breach = {"breach_id": "b2", "stage": "post_trade", "rule": "price_collar", "policy_version": "c-v1",
                  "symbol": "AAA", "side": "buy", "value": 0.2, "limit": 0.1, "order_ref": "C1", "exec_id": "X1",
                  "other_ref": None, "at": datetime(2026, 11, 27), "detail": "20% off"}
        record_breaches(store, pl.DataFrame([breach], schema=BREACH_SCHEMA))
        send = dg.materialize([trading.approved_orders], instance=instance, raise_on_error=False,
                              resources={"store": StoreResource(path=str(home / "emp.duckdb"))},
                              run_config={"ops": {"trading__approved_orders": {"config": {}}}})
    assert not send.success and open_outbox().entries().is_empty()
    assert "order" not in audit_store.read(store)["kind"].to_list()

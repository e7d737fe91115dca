"""The compliance assets in Dagster: the audit trail verified against the head the previous verification saw
(kept in the asset's metadata), its blocking check failing on a tampered or cut-off log and stopping the
trading plan that waits on it."""

from __future__ import annotations

from datetime import datetime

import dagster as dg
import pytest

from emp_core.compliance import audit_store
from emp_core.compliance.audit import Verification
from emp_core.compliance.witness import next_witness, witness_from
from emp_core.store.duckdb_store import DuckDBStore
from emp_dagster.defs.compliance.assets import AUDIT_CHAIN_INTACT, KEYS, audit_verification
from emp_dagster.defs.market_data.resources import StoreResource


def _run(instance, path):
    result = dg.materialize([audit_verification], instance=instance, raise_on_error=False,
                            resources={"store": StoreResource(path=str(path))})
    (check,) = result.get_asset_check_evaluations()
    event = instance.get_latest_materialization_event(KEYS["audit_verification"])
    return check, {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_each_verification_checks_the_head_the_last_one_saw(tmp_path):
    path = tmp_path / "emp.duckdb"
    store = DuckDBStore(path)
    instance = dg.DagsterInstance.ephemeral()
    audit_store.append(store, [("order", {"i": i}) for i in range(6)])
    check, meta = _run(instance, path)
    assert check.check_name == AUDIT_CHAIN_INTACT and check.passed
    assert (meta["entries"], meta["witness_seq"], meta["checked_against"]) == (6, 6, "no earlier verification")
    audit_store.append(store, [("order", {"i": 6})])
    check, meta = _run(instance, path)
    assert check.passed and meta["witness_seq"] == 7 and meta["checked_against"].startswith("6:")
    with store.connect() as con:
        con.execute("DELETE FROM audit.log WHERE seq >= 5")  # the end cut off: still a valid chain
    check, meta = _run(instance, path)
    assert not check.passed and "cut off" in check.description and meta["bad_seq"] == 7
    assert meta["witness_seq"] == 7  # the failed verification keeps what the earlier one saw
    check, _ = _run(instance, path)
    assert not check.passed  # and the next one still fails


def test_a_failed_audit_check_stops_the_trading_plan(tmp_path):
    """The plan's first asset waits on the verification: with the blocking check failed, it does not run."""
    from emp_dagster.defs.trading.assets import KEYS as TRADING_KEYS
    from emp_dagster.defs.trading.assets import intents

    assert KEYS["audit_verification"] in intents.dependency_keys
    path = tmp_path / "emp.duckdb"
    store = DuckDBStore(path)
    audit_store.append(store, [("order", {"i": i}) for i in range(3)])
    with store.connect() as con:
        con.execute("UPDATE audit.log SET payload = '{\"i\":9}' WHERE seq = 2")
    result = dg.materialize([audit_verification, intents], instance=dg.DagsterInstance.ephemeral(),
                            raise_on_error=False, resources={"store": StoreResource(path=str(path))},
                            selection=[KEYS["audit_verification"], TRADING_KEYS["intents"]])
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == AUDIT_CHAIN_INTACT]
    assert not check.passed and "entry 2" in check.description
    assert TRADING_KEYS["intents"] not in {e.asset_key for e in result.get_asset_materialization_events()}
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert started == {"compliance__audit_verification"}  # the plan never started: skipped, not failed


@pytest.mark.parametrize(("ok", "head", "previous", "kept"), [
    (True, 9, (5, "a" * 64), (9, "h")),
    (False, None, (5, "a" * 64), (5, "a" * 64)),
    (True, 0, (5, "a" * 64), (5, "a" * 64)),  # an empty log never replaces a witness
    (True, 0, None, None),
])
def test_the_witness_carried_forward(ok, head, previous, kept):
    result = Verification(ok, head or 0, head, "h" if head else None)
    assert next_witness(result, previous) == kept
    assert witness_from({"witness_seq": 3, "witness_hash": "x"}) == (3, "x") and witness_from({}) is None


def test_the_kyc_case_book_opens_and_escalates_cases_and_its_check_catches_an_edited_table(tmp_path, monkeypatch):
    """The shipped dossiers: a case per dossier, opened by the platform with its rating (people escalate and
    decide), the table matching the audit trail. An approval written into the table by SQL, which the case
    rules forbid and the trail never saw, fails the blocking check; a second run changes nothing."""
    from emp_core.compliance import kyc
    from emp_dagster.defs.compliance.assets import KYC_MATCHES_AUDIT, KYC_PENDING, kyc_case_book

    monkeypatch.setenv("EMP_HOME", str(tmp_path))
    path = tmp_path / "emp.duckdb"
    store = DuckDBStore(path)

    def run():
        result = dg.materialize([kyc_case_book], instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
                                resources={"store": StoreResource(path=str(path))},
                                run_config={"ops": {"compliance__kyc_case_book": {"config": {"as_of": "2026-11-27"}}}})
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        (event,) = result.get_asset_materialization_events()
        meta = {k: v.value for k, v in event.materialization.metadata.items()}
        return result, checks, meta

    result, checks, meta = run()
    dossiers = kyc.load_dossiers(kyc.shipped("dossiers.json"))
    states = kyc.read_cases(store).states()
    assert set(states) == {d.id for d in dossiers}
    rated = dict(store.query("SELECT dossier_id, rating FROM compliance.kyc_dossiers").rows())
    assert set(states.values()) == {"open"}
    assert "prohibited" in rated.values() and "low" in rated.values()  # the sample spans the ratings
    assert checks[KYC_MATCHES_AUDIT].passed
    assert not checks[KYC_PENDING].passed and checks[KYC_PENDING].severity == dg.AssetCheckSeverity.WARN
    assert meta["transitions_made"] == len(dossiers)
    _, checks, meta = run()
    assert meta["transitions_made"] == 0 and checks[KYC_MATCHES_AUDIT].passed
    prohibited = next(d for d, r in rated.items() if r == "prohibited")
    kyc.decide(store, prohibited, "escalated", actor="A. Analyst", reason="sanctions hit")
    with store.connect() as con:
        con.execute("UPDATE compliance.kyc_cases SET to_state = 'approved' WHERE case_id = ? AND seq = 2",
                    [prohibited])
    result, checks, meta = run()
    assert not result.success and not checks[KYC_MATCHES_AUDIT].passed and "transitions_made" not in meta
    assert f"case {prohibited} transition 2: to_state differ" in checks[KYC_MATCHES_AUDIT].description


NOW = datetime(2026, 11, 27, 14, 0)


def _reports_run(path):
    from emp_dagster.defs.compliance.assets import REPORT_KEYS, compliance_report, roi_report, trade_records
    from emp_dagster.defs.compliance.assets import transaction_reports as reports_asset

    result = dg.materialize([compliance_report, reports_asset, trade_records, roi_report],
                            selection=list(REPORT_KEYS.values()), instance=dg.DagsterInstance.ephemeral(),
                            resources={"store": StoreResource(path=str(path))}, raise_on_error=False)
    return result, {c.check_name: c for c in result.get_asset_check_evaluations()}


def test_the_reports_on_executions_pass_on_a_real_journal_and_refuse_to_lose_what_they_kept(tmp_path, monkeypatch):
    """An order and its fill in a real SQLite outbox: every report's check passes, each report is stored. The
    same store against an emptied outbox (another EMP_HOME's, say) fails the transaction report and record
    checks and keeps the stored rows, where a vacuous pass would have overwritten them with nothing."""
    from emp_core.execution.outbox import ApprovedOrder, sqlite_outbox

    monkeypatch.setenv("EMP_HOME", str(tmp_path))
    path = tmp_path / "emp.duckdb"
    store = DuckDBStore(path)
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    decision = [{"step": 1, "check": "strategy_enabled", "approved": True, "policy_version": "default-v2",
                 "verdict": "pass"}]
    ((clordid, _),) = box.submit([ApprovedOrder(idem_key="k1", strategy="catalogue/trend", symbol="AAPL",
                                                side="buy", qty=10, stop_price=90.0, decision=decision)])
    import polars as pl  # the plan that decided it: its reference price, the last close it was decided on

    store.append_table("trading.intents", pl.DataFrame({"idem_key": ["k1"], "status": ["order"],
                                                        "reference_price": [100.0], "planned_at": [NOW]}))
    box.mark_sent([clordid])
    base = {"session": "EMP->VENUE", "order_id": "O1", "clordid": clordid, "order_clordid": clordid,
            "msg_type": "8", "symbol": "AAPL", "side": "1", "order_qty": 10.0, "transact_time":
            "2026-11-27 14:30:00.123456+00:00"}
    box.record([base | {"exec_id": "E1", "exec_type": "0", "ord_status": "0", "last_qty": 0.0, "last_px": 0.0,
                        "cum_qty": 0.0, "leaves_qty": 10.0, "avg_px": 0.0},
                base | {"exec_id": "E2", "exec_type": "F", "ord_status": "2", "last_qty": 10.0, "last_px": 101.0,
                        "cum_qty": 10.0, "leaves_qty": 0.0, "avg_px": 101.0}])
    result, checks = _reports_run(path)
    failures = [e.event_specific_data.error.message for e in result.all_events if e.is_step_failure]
    assert not failures, failures
    assert {n: c.passed for n, c in checks.items()} == {
        "post_trade_clean": True, "transaction_reports_valid": True, "trade_records_complete": True,
        "roi_reconciled": True}, {n: c.description for n, c in checks.items()}
    reports = store.query("SELECT * FROM compliance.transaction_reports")
    assert reports["exec_id"].to_list() == ["E2"] and reports["instrument_id"].to_list() == ["US0378331005"]
    roi = store.query("SELECT * FROM compliance.roi_strategies")
    assert roi["strategy"].to_list() == ["catalogue/trend"] and roi["fills"].to_list() == [1]
    (tmp_path / "outbox.sqlite").unlink()
    for extra in ("-wal", "-shm"):
        (tmp_path / f"outbox.sqlite{extra}").unlink(missing_ok=True)
    result, checks = _reports_run(path)
    assert not checks["transaction_reports_valid"].passed and "not in this journal" in \
        checks["transaction_reports_valid"].description
    assert not checks["trade_records_complete"].passed
    assert store.query("SELECT count(*) FROM compliance.transaction_reports").item() == 1  # kept
    assert store.query("SELECT count(*) FROM compliance.trade_records").item() == 1


def test_the_roi_report_is_of_one_session_kinds_book(tmp_path, monkeypatch):
    """Paper and live are separate books (as trading/pnl's): a live fill is not in the paper ROI report."""
    from emp_core.execution.outbox import ApprovedOrder, sqlite_outbox
    from emp_dagster.defs.compliance.assets import roi_report

    monkeypatch.setenv("EMP_HOME", str(tmp_path))
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    for key, session, px in (("p1", "paper", 101.0), ("l1", "live", 99.0)):
        ((c, _),) = box.submit([ApprovedOrder(idem_key=key, strategy="manual", symbol="AAPL", side="buy", qty=10,
                                              stop_price=90.0, session=session)])
        box.record([{"session": "EMP->VENUE", "exec_id": f"E-{key}", "order_id": "O", "clordid": c,
                     "order_clordid": c, "msg_type": "8", "exec_type": "F", "ord_status": "2", "symbol": "AAPL",
                     "side": "1", "order_qty": 10.0, "last_qty": 10.0, "last_px": px, "cum_qty": 10.0,
                     "leaves_qty": 0.0, "avg_px": px, "transact_time": "2026-11-27 14:30:00+00:00"}])
    store = DuckDBStore(tmp_path / "emp.duckdb")
    for session, price in (("paper", 101.0), ("live", 99.0)):
        result = dg.materialize([roi_report], instance=dg.DagsterInstance.ephemeral(),
                                resources={"store": StoreResource(path=str(tmp_path / "emp.duckdb"))},
                                run_config={"ops": {"compliance__roi_report": {"config": {"session": session}}}})
        assert result.success
        fills = store.query("SELECT price FROM compliance.roi_fills")
        assert fills["price"].to_list() == [price], session


def test_the_post_trade_and_roi_checks_fail_on_what_they_exist_for(tmp_path, monkeypatch):
    """post_trade_clean fails on a breach (a fill with no last price to collar it against) and passes once a
    compliance officer resolves it; roi_reconciled fails when trading/pnl's total disagrees with the fills."""
    import polars as pl

    from emp_core.compliance.trade import open_breaches, resolve
    from emp_core.execution.outbox import ApprovedOrder, sqlite_outbox

    monkeypatch.setenv("EMP_HOME", str(tmp_path))
    path = tmp_path / "emp.duckdb"
    store = DuckDBStore(path)
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    ((clordid, _),) = box.submit([ApprovedOrder(idem_key="k1", strategy="manual", symbol="AAPL", side="buy",
                                                qty=10, stop_price=90.0)])
    box.record([{"session": "EMP->VENUE", "exec_id": "E1", "order_id": "O1", "clordid": clordid,
                 "order_clordid": clordid, "msg_type": "8", "exec_type": "F", "ord_status": "2", "symbol": "AAPL",
                 "side": "1", "order_qty": 10.0, "last_qty": 10.0, "last_px": 101.0, "cum_qty": 10.0,
                 "leaves_qty": 0.0, "avg_px": 101.0, "transact_time": "2026-11-27 14:30:00+00:00"}])
    store.append_table("trading.pnl", pl.DataFrame({"capital": [1_000_000.0], "total_pnl": [12_345.0],
                                                    "written_at": [NOW]}))
    _, checks = _reports_run(path)
    assert not checks["post_trade_clean"].passed and "price_collar" in checks["post_trade_clean"].description
    assert not checks["roi_reconciled"].passed and "trading/pnl" in checks["roi_reconciled"].description
    (breach,) = open_breaches(store)["breach_id"].to_list()
    resolve(store, breach, by="J. Smith", reason="no intent on file for a manual order; price checked by hand")
    _, checks = _reports_run(path)
    assert checks["post_trade_clean"].passed

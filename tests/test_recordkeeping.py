"""Dodd-Frank recordkeeping: one record per trade (the order, its risk decision, its FIX messages, its
executions, each with its time), retrievable by ClOrdID, and a completeness check that names each trade and the
record it lacks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from emp_core.compliance.recordkeeping import (
    RecordkeepingError,
    completeness,
    summary_markdown,
    trade_record,
    trade_records,
)
from emp_core.execution.outbox import JOURNAL_COLUMNS, ApprovedOrder, sqlite_outbox

SESSION = "FIX.4.4:EMP->VENUE"
AS_OF = datetime(2026, 3, 3, 12, 0, tzinfo=UTC)
ORDER_COLUMNS = ("clordid", "idem_key", "created_at", "strategy", "symbol", "side", "qty", "ord_type",
                 "limit_price", "stop_price", "session", "policy_version", "state", "sent_at")


def orders(*rows: dict) -> pl.DataFrame:
    base = {"strategy": "champion", "ord_type": "market", "limit_price": None, "stop_price": None,
            "session": "paper", "policy_version": "default-v2", "state": "sent"}
    return pl.DataFrame([{c: ({**base, **r}).get(c) for c in ORDER_COLUMNS} for r in rows],
                        schema={c: pl.Float64 if c in ("limit_price", "stop_price") else
                                pl.Int64 if c == "qty" else pl.String for c in ORDER_COLUMNS})


def journal(*rows: dict) -> pl.DataFrame:
    numeric = ("order_qty", "last_qty", "last_px", "cum_qty", "leaves_qty", "avg_px")
    schema = {"seq": pl.Int64} | {c: pl.Float64 if c in numeric else pl.String for c in JOURNAL_COLUMNS}
    return pl.DataFrame([{c: r.get(c) for c in schema} | {"order_clordid": r.get("orig_clordid") or r["clordid"]}
                         for r in rows], schema=schema)


def er(seq, exec_id, clordid, exec_type, status, *, qty=0.0, px=0.0, at="2026-03-02 14:30:00.100000+00:00",
       received="2026-03-02 14:30:00.200000", **kw) -> dict:
    return {"seq": seq, "session": SESSION, "exec_id": exec_id, "order_id": "V-O1", "clordid": clordid,
            "msg_type": "8", "exec_type": exec_type, "ord_status": status, "symbol": "AAPL", "side": "1",
            "last_qty": qty, "last_px": px, "transact_time": at, "received_at": received, **kw}


ORDERS = orders(
    {"clordid": "CA", "idem_key": "champion|AAPL|2026-03-02|paper", "created_at": "2026-03-02 14:29:00.000001",
     "symbol": "AAPL", "side": "buy", "qty": 100, "sent_at": "2026-03-02 14:29:30.5"},
    {"clordid": "CB", "idem_key": "champion|MSFT|2026-03-02|paper", "created_at": "2026-03-02 14:29:00.000002",
     "symbol": "MSFT", "side": "sell", "qty": 10, "ord_type": "limit", "limit_price": 400.0,
     "sent_at": "2026-03-02 14:29:31"})
JOURNAL = journal(
    er(1, "V-E1", "CA", "0", "0", received="2026-03-02 14:29:31.000000"),
    er(2, "V-E2", "CA", "F", "1", qty=60.0, px=101.0, at="2026-03-02 14:30:00.123000+00:00"),
    er(3, "V-E3", "CB", "0", "0", symbol="MSFT", side="2"),
    er(4, "V-E4", "CA", "F", "2", qty=40.0, px=102.0, at="2026-03-02 14:30:01.5+00:00",
       received="2026-03-02 14:30:02.000000"),
    er(5, "V-E5", "CB-C1", "4", "4", orig_clordid="CB", symbol="MSFT", side="2", received="2026-03-02 14:31:00"))
DECISIONS = pl.DataFrame({"idem_key": ["champion|AAPL|2026-03-02|paper"] * 3 + ["champion|MSFT|2026-03-02|paper"] * 2,
                          "approved": [True] * 5, "policy_version": ["default-v2"] * 5,
                          "check": ["a", "b", "c", "a", "b"]})


@pytest.fixture(scope="module")
def records():
    return trade_records(JOURNAL, ORDERS, DECISIONS)


def test_one_record_per_order_with_every_reference_and_time(records):
    assert records["clordid"].to_list() == ["CA", "CB"] and records["in_outbox"].to_list() == [True, True]
    a = records.row(0, named=True)
    assert a["order_received_at"] == "2026-03-02T14:29:00.000001Z"
    assert a["order_sent_at"] == "2026-03-02T14:29:30.500000Z"
    assert (a["decision_checks"], a["decision_approved"], a["decision_policy_version"]) == (3, True, "default-v2")
    assert a["exec_ids"] == "V-E1;V-E2;V-E4" and a["venue_order_ids"] == "V-O1" and a["fix_sessions"] == SESSION
    assert (a["execution_reports"], a["fills"], a["filled_qty"]) == (3, 2, 100.0)
    assert a["avg_fill_px"] == pytest.approx((60 * 101.0 + 40 * 102.0) / 100)  # 101.4
    assert (a["first_fill_at"], a["last_fill_at"]) == ("2026-03-02T14:30:00.123000Z", "2026-03-02T14:30:01.500000Z")
    assert a["first_report_received_at"] == "2026-03-02T14:29:31.000000Z"
    assert a["last_report_received_at"] == "2026-03-02T14:30:02.000000Z"
    assert a["last_ord_status"] == "2" and a["cancel_clordids"] is None
    b = records.row(1, named=True)
    # the cancel's report (ClOrdID CB-C1, OrigClOrdID CB) belongs to order CB
    assert b["exec_ids"] == "V-E3;V-E5" and b["cancel_clordids"] == "CB-C1" and b["last_ord_status"] == "4"
    assert (b["fills"], b["filled_qty"], b["avg_fill_px"], b["first_fill_at"]) == (0, 0.0, None, None)
    assert b["limit_price"] == 400.0 and b["decision_checks"] == 2


def test_a_complete_set_passes(records):
    passed, findings = completeness(records, as_of=AS_OF)
    assert passed and findings.is_empty()
    assert "**2** trade records: 2 sent, 1 with fills, 0 without an order on file; complete" in \
        summary_markdown(records, findings)


def test_an_order_sent_without_an_execution_report_fails_after_the_grace(records):
    lost = trade_records(JOURNAL.filter(pl.col("order_clordid") != "CB"), ORDERS, DECISIONS)
    passed, findings = completeness(lost, as_of=AS_OF)
    assert not passed
    assert findings.select("clordid", "symbol", "record").rows() == [("CB", "MSFT", "execution")]
    assert "sent at 2026-03-02T14:29:31.000000Z and no execution report journaled" in findings["problem"][0]
    # a minute after sending, the report may still be on its way
    just_sent = datetime(2026, 3, 2, 14, 30, 31, tzinfo=UTC)
    assert completeness(lost, as_of=just_sent)[0]
    assert not completeness(lost, as_of=just_sent, grace=timedelta(seconds=30))[0]
    text = summary_markdown(lost, findings)
    assert "**1 missing record** in 1 trade(s)" in text and "| CB | MSFT | execution |" in text


def test_a_fill_with_no_order_is_a_record_and_a_finding():
    stray = pl.concat([JOURNAL, journal(er(9, "V-E9", "CZ", "F", "2", qty=5.0, px=99.0, symbol="IBM"))])
    made = trade_records(stray, ORDERS, DECISIONS)
    orphan = made.filter(pl.col("clordid") == "CZ").row(0, named=True)
    assert (orphan["in_outbox"], orphan["symbol"], orphan["fills"], orphan["filled_qty"]) == (False, "IBM", 1, 5.0)
    passed, findings = completeness(made, as_of=AS_OF)
    assert not passed and findings.select("clordid", "record").rows() == [("CZ", "order")]
    assert "(V-E9) for an order the outbox does not hold" in findings["problem"][0]


@pytest.mark.parametrize(("decisions", "problem"), [
    (DECISIONS.filter(pl.col("idem_key").str.contains("MSFT")), "no risk decision on file for idem_key "
                                                                "'champion|AAPL|2026-03-02|paper'"),
    (DECISIONS.with_columns(pl.col("approved").not_()), "the risk decision on file did not approve the order"),
    (None, "no risk decision on file"),  # neither the decisions nor the outbox's decision JSON
])
def test_a_missing_or_refusing_risk_decision_is_a_finding(decisions, problem):
    passed, findings = completeness(trade_records(JOURNAL, ORDERS, decisions), as_of=AS_OF)
    assert not passed and problem in findings.filter(pl.col("clordid") == "CA")["problem"][0]
    assert set(findings["record"]) == {"decision"}


def test_the_outbox_decision_json_serves_when_no_decisions_are_given():
    rows = [{"policy_version": "default-v2", "approved": True, "check": c} for c in ("a", "b")]
    with_json = ORDERS.with_columns(pl.lit(json.dumps(rows)).alias("decision"))
    made = trade_records(JOURNAL, with_json)
    assert made["decision_checks"].to_list() == [2, 2] and made["decision_approved"].to_list() == [True, True]
    assert completeness(made, as_of=AS_OF)[0]


@pytest.mark.parametrize(("change", "problem"), [
    ({"sent_at": None}, "marked sent with no send time"),
    ({"state": "approved", "sent_at": None}, "execution report(s) for an order never marked sent"),
    ({"created_at": None}, "no time the order was received"),
    ({"qty": 50}, "fills of 100 exceed the order quantity 50"),
])
def test_gaps_in_the_order_record_are_findings(change, problem):
    changed = ORDERS.with_columns(*[pl.when(pl.col("clordid") == "CA").then(pl.lit(v, dtype=ORDERS[c].dtype))
                                    .otherwise(pl.col(c)).alias(c) for c, v in change.items()])
    passed, findings = completeness(trade_records(JOURNAL, changed, DECISIONS), as_of=AS_OF)
    assert not passed and findings["clordid"].to_list() == ["CA"] and problem in findings["problem"][0]


def test_a_fill_without_its_execution_time_is_a_finding():
    untimed = JOURNAL.with_columns(pl.when(pl.col("seq") == 4).then(None).otherwise(pl.col("transact_time"))
                                   .alias("transact_time"))
    passed, findings = completeness(trade_records(untimed, ORDERS, DECISIONS), as_of=AS_OF)
    assert not passed and findings.select("clordid", "record").rows() == [("CA", "execution")]
    assert "1 fill(s) without the venue's execution time" in findings["problem"][0]


def test_a_trade_is_retrievable_with_its_reports(records):
    record = trade_record(records, "CB", JOURNAL)
    assert record["symbol"] == "MSFT" and record["order_sent_at"] == "2026-03-02T14:29:31.000000Z"
    assert [r["exec_id"] for r in record["reports"]] == ["V-E3", "V-E5"]
    assert "reports" not in trade_record(records, "CB")
    with pytest.raises(RecordkeepingError, match=r"no trade record for ClOrdID 'NOPE' \(2 records held\)"):
        trade_record(records, "NOPE")


def test_bad_input_is_refused_naming_it():
    with pytest.raises(RecordkeepingError, match="execution journal: missing column received_at"):
        trade_records(JOURNAL.drop("received_at"), ORDERS)
    with pytest.raises(RecordkeepingError, match="outbox orders: missing columns created_at, sent_at"):
        trade_records(JOURNAL, ORDERS.drop("created_at", "sent_at"))
    with pytest.raises(RecordkeepingError, match="risk decisions: missing column approved"):
        trade_records(JOURNAL, ORDERS, DECISIONS.drop("approved"))
    with pytest.raises(RecordkeepingError, match=r"order CA: created_at: 'soon' is not a time"):
        trade_records(JOURNAL, ORDERS.with_columns(pl.lit("soon").alias("created_at")))


def test_records_from_a_real_outbox(tmp_path):
    box = sqlite_outbox(tmp_path / "outbox.sqlite")
    try:
        sent = ApprovedOrder(idem_key="k1", strategy="champion", symbol="IBM", side="buy", qty=7,
                             decision=({"policy_version": "v", "approved": True, "check": "x"},))
        waiting = ApprovedOrder(idem_key="k2", strategy="champion", symbol="IBM", side="sell", qty=3)
        box.submit([sent, waiting])
        box.mark_sent([sent.clordid])
        box.record([{"session": SESSION, "exec_id": "E1", "order_id": "O1", "clordid": sent.clordid,
                     "msg_type": "8", "exec_type": "F", "ord_status": "2", "symbol": "IBM", "side": "1",
                     "last_qty": 7.0, "last_px": 150.5,
                     "transact_time": datetime(2026, 3, 2, 14, 30, 0, 42000, tzinfo=UTC)}])
        decisions = pl.DataFrame({"idem_key": ["k1", "k2"], "approved": [True, True]})
        made = trade_records(box.journal(), box.entries(), decisions)
    finally:
        box.close()
    assert made["clordid"].to_list() == [sent.clordid, waiting.clordid]
    assert made["state"].to_list() == ["sent", "approved"] and made["fills"].to_list() == [1, 0]
    assert made["first_fill_at"][0] == "2026-03-02T14:30:00.042000Z"
    assert made["order_received_at"][0].endswith("Z") and made["order_sent_at"][0].endswith("Z")
    passed, findings = completeness(made)
    assert passed, findings  # the waiting order was never sent: nothing is owed for it yet

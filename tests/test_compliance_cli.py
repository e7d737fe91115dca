"""``emp kyc`` and ``emp compliance`` on the embedded tier: exit codes, refusals that write nothing, every
decision in the audit trail."""

from __future__ import annotations

import json
from datetime import datetime

import polars as pl
import pytest

from emp_core.cli import main
from emp_core.compliance import audit_store
from emp_core.compliance.trade import BREACH_SCHEMA, BREACHES, breach_id, open_breaches, record_breaches
from emp_core.store.duckdb_store import DuckDBStore


@pytest.fixture
def store(emp_home):
    return DuckDBStore(emp_home / "emp.duckdb")


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out + out.err


def kinds(store) -> list[str]:
    return audit_store.read(store)["kind"].to_list()


def test_kyc_screen_exit_code_says_whether_a_name_hit(store, capsys):
    code, out = run(capsys, "kyc", "screen", "Dmitriy Volkov", "--json")
    hits = json.loads(out)["hits"]
    assert code == 1 and {h["ent_num"] for h in hits} == {1001}
    code, out = run(capsys, "kyc", "screen", "Wilhelmina Appleby-Hartmann")
    assert code == 0 and "no hit" in out


def test_kyc_review_then_decisions_each_audited_and_a_forbidden_one_writes_nothing(store, capsys):
    code, out = run(capsys, "kyc", "review", "--as-of", "2026-11-27", "--json")
    review = json.loads(out)
    assert code == 0 and review["dossiers"] == len(review["ratings"]) and review["waiting"]
    prohibited = next(d for d, r in review["ratings"].items() if r == "prohibited")
    before = kinds(store)
    assert before.count("kyc.case_transition") == len(review["transitions"])
    code, out = run(capsys, "kyc", "decide", prohibited, "--to", "approved", "--by", "A. Jones", "--reason", "ok")
    assert code == 2 and "prohibited and cannot be approved" in out and kinds(store) == before
    code, out = run(capsys, "kyc", "decide", prohibited, "--to", "rejected", "--by", "A. Jones", "--reason",
                    "SDN match confirmed against the passport")
    assert code == 0 and kinds(store) == [*before, "kyc.case_transition"]
    code, out = run(capsys, "kyc", "decide", prohibited, "--to", "open", "--by", "A. Jones", "--reason", "again")
    assert code == 2 and "rejected" in out  # final
    code, out = run(capsys, "kyc", "cases", "--json")
    assert json.loads(out)[prohibited]["to_state"] == "rejected"
    assert audit_store.verify(store).ok


def test_a_malformed_dossier_file_is_named_and_nothing_is_stored(store, capsys, tmp_path):
    bad = tmp_path / "dossiers.json"
    bad.write_text(json.dumps({"dossiers": [{"id": "X-1", "name": "A", "entity_type": "company",
                                             "jurisdiction": "ZZ", "pep": False, "onboarded": "2026-01-01",
                                             "beneficial_owners": [], "documents": []}]}))
    code, out = run(capsys, "kyc", "review", "--dossiers", str(bad))
    assert code == 2 and str(bad) in out and "X-1" in out and "jurisdiction" in out
    assert kinds(store) == [] and "compliance.kyc_cases" not in store.tables()


def _breach(stage: str, rule: str = "price_collar") -> dict:
    order, exec_id = "C1", ("X1" if stage == "post_trade" else None)
    return {"breach_id": breach_id(stage, rule, order, exec_id), "stage": stage, "rule": rule,
            "policy_version": "compliance-v1", "symbol": "AAPL", "side": "buy", "value": 0.2, "limit": 0.1,
            "order_ref": order, "exec_id": exec_id, "other_ref": None, "at": datetime(2026, 11, 27, 14, 30),
            "detail": "fill 20% off the last price"}


def test_an_open_post_trade_breach_is_listed_until_resolved_with_a_reason(store, capsys):
    post, pre = _breach("post_trade"), _breach("pre_trade", "restricted_list")
    assert record_breaches(store, pl.DataFrame([post, pre], schema=BREACH_SCHEMA)).height == 2
    assert record_breaches(store, pl.DataFrame([post, pre], schema=BREACH_SCHEMA)).is_empty()  # once each
    assert kinds(store) == ["compliance.breach", "compliance.breach"]
    with store.connect() as con:  # the table is a projection: deleting a row there closes nothing
        con.execute(f"DELETE FROM {BREACHES}")
    code, out = run(capsys, "compliance", "breaches")
    assert code == 1 and post["breach_id"] in out and pre["breach_id"] not in out  # a refusal is not open
    record_breaches(store, pl.DataFrame([post, pre], schema=BREACH_SCHEMA))  # the next run makes the table good
    assert store.query(f"SELECT count(*) FROM {BREACHES}").item() == 2 and kinds(store).count("compliance.breach") == 2
    code, out = run(capsys, "compliance", "resolve", pre["breach_id"], "--by", "J. Smith", "--reason", "x")
    assert code == 2 and "pre-trade" in out
    code, out = run(capsys, "compliance", "resolve", post["breach_id"], "--by", "J. Smith", "--reason", "  ")
    assert code == 2 and "reason" in out and "compliance.resolution" not in kinds(store)
    code, out = run(capsys, "compliance", "resolve", post["breach_id"], "--by", "J. Smith", "--reason",
                    "venue print confirmed with the broker")
    assert code == 0 and open_breaches(store).is_empty() and kinds(store)[-1] == "compliance.resolution"
    code, out = run(capsys, "compliance", "resolve", post["breach_id"], "--by", "J. Smith", "--reason", "again")
    assert code == 2 and "already resolved" in out
    code, out = run(capsys, "compliance", "breaches", "--all", "--json")
    assert code == 0 and json.loads(out)["open"] == 0 and len(json.loads(out)["breaches"]) == 2


def test_four_eyes_and_the_periodic_review_counted_from_the_approval(store, capsys):
    """A high-risk case: the person who escalates it cannot approve it, another can; the platform never
    approves. A low-risk customer approved in 2026 is reopened when its review falls due (36 months after the
    approval, or a document's expiry first), not pushed back by every later review."""
    from datetime import date

    from emp_core.compliance import kyc
    from emp_core.compliance.sanctions import load_sdn

    sanctions = load_sdn(kyc.shipped("sdn.csv"), kyc.shipped("alt.csv"))
    lists = kyc.load_jurisdictions(kyc.shipped("jurisdictions.json"))
    first = kyc.review(store, kyc.shipped("dossiers.json"), sanctions, lists, date(2026, 5, 1),
                       now=datetime(2026, 5, 1, 9))
    rated = {r.dossier_id: r for r in first.ratings}
    high = next(d for d, r in rated.items() if r.rating == "high")
    with pytest.raises(kyc.CaseError, match="only after escalation"):
        kyc.decide(store, high, "approved", actor="B. Approver", reason="fine", now=datetime(2026, 5, 1, 10))
    kyc.decide(store, high, "escalated", actor="A. Analyst", reason="hit to clear", now=datetime(2026, 5, 1, 10))
    for who in ("A. Analyst", kyc.SYSTEM_ACTOR):
        with pytest.raises(kyc.CaseError):
            kyc.decide(store, high, "approved", actor=who, reason="cleared", now=datetime(2026, 5, 1, 11))
    kyc.decide(store, high, "approved", actor="B. Approver", reason="false positive: different DOB",
               now=datetime(2026, 5, 1, 11))
    low = next(d for d, r in rated.items() if r.rating == "low"
               and all(doc.expiry is None or doc.expiry > date(2029, 6, 1)
                       for doc in next(x for x in first.dossiers if x.id == d).documents))
    kyc.decide(store, low, "approved", actor="A. Analyst", reason="standard onboarding",
               now=datetime(2026, 5, 1, 12))
    for day in (date(2027, 5, 1), date(2029, 4, 30)):  # before the due date: nothing moves
        later = kyc.review(store, kyc.shipped("dossiers.json"), sanctions, lists, day, now=datetime(2029, 4, 30))
        assert low not in {t.case_id for t in later.made}
        assert next(r for r in later.ratings if r.dossier_id == low).review_due == date(2029, 5, 1)
    due = kyc.review(store, kyc.shipped("dossiers.json"), sanctions, lists, date(2029, 5, 1),
                     now=datetime(2029, 5, 1, 9))
    (reopened,) = [t for t in due.made if t.case_id == low]
    assert reopened.to_state == "open" and "periodic review due on 2029-05-01" in reopened.reason
    assert kyc.audit_mismatches(store) == []

"""KYC/AML (emp_core/compliance/kyc.py): dossiers as data with clear errors, the risk rating and review dates
against a hand-computed table, the case book's rules, and the store (cases appended with their audit entries)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from emp_core.compliance import audit_store, kyc
from emp_core.compliance.kyc import CaseBook, CaseError, DossierError
from emp_core.compliance.sanctions import load_sdn
from emp_core.config import REPO_ROOT
from emp_core.store.duckdb_store import DuckDBStore

KYC_DATA = REPO_ROOT / "data" / "compliance" / "kyc"
SANCTIONS = REPO_ROOT / "data" / "compliance" / "sanctions"
AS_OF = date(2026, 5, 1)
T0 = datetime(2026, 5, 1, 9, 0)


@pytest.fixture(scope="module")
def dossiers():
    return kyc.load_dossiers(KYC_DATA / "dossiers.json")


@pytest.fixture(scope="module")
def lists():
    return kyc.load_jurisdictions(KYC_DATA / "jurisdictions.json")


@pytest.fixture(scope="module")
def hits(dossiers):
    return kyc.screen_dossiers(dossiers, load_sdn(SANCTIONS / "sdn.csv", SANCTIONS / "alt.csv"))


@pytest.fixture(scope="module")
def ratings(dossiers, hits, lists):
    return {d.id: kyc.rate(d, hits, AS_OF, lists) for d in dossiers}


def test_the_sample_dossiers_load(dossiers, lists):
    assert len(dossiers) == 16 and len({d.id for d in dossiers}) == 16
    trust = next(d for d in dossiers if d.id == "D-006")
    assert trust.entity_type == "trust" and trust.jurisdiction == "JE"
    assert [(o.name, o.ownership_pct, o.pep) for o in trust.beneficial_owners] == [
        ("Henrik Aalto", 50.0, True), ("Liisa Aalto", 50.0, False)]
    assert next(d for d in dossiers if d.id == "D-009").documents[0].expiry == date(2025, 4, 1)
    assert lists.as_of == date(2025, 6, 13) and lists.call_for_action == {"KP", "IR", "MM"}
    assert lists.status("NG") == "increased_monitoring" and lists.status("GB") is None


def _bad(tmp_path, mutate):
    doc = json.loads((KYC_DATA / "dossiers.json").read_text(encoding="utf-8"))
    mutate(doc["dossiers"])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


BAD_DOSSIERS = [
    (lambda ds: ds[3].update(jurisdiction="XX"), "dossier D-004, field jurisdiction: 'XX' is not an ISO 3166-1"),
    (lambda ds: ds[3].update(jurisdiction="cy"), "dossier D-004, field jurisdiction: 'cy'"),
    (lambda ds: ds[3].update(jurisdiction="CYP"), "dossier D-004, field jurisdiction: 'CYP'"),
    (lambda ds: ds[1].update(entity_type="llc"), "dossier D-002, field entity_type: 'llc' is not one of"),
    (lambda ds: ds[5]["beneficial_owners"][1].update(ownership_pct=130),
     "dossier D-006, field beneficial_owners[1].ownership_pct: 130 is not a share in (0, 100]"),
    (lambda ds: ds[5]["beneficial_owners"][1].update(ownership_pct=60),
     "dossier D-006, field beneficial_owners: the ownership shares add up to 110%"),
    (lambda ds: ds[5]["beneficial_owners"][0].update(nationality="Finland"),
     "dossier D-006, field beneficial_owners[0].nationality: 'Finland'"),
    (lambda ds: ds[0]["documents"][0].update(expiry="2032-13-01"),
     "dossier D-001, field documents[0].expiry: '2032-13-01' is not an ISO date"),
    (lambda ds: ds[0]["documents"][0].update(expiry="2020-01-01"),
     "dossier D-001, field documents[0].expiry: 2020-01-01 is not after the issue date 2022-03-01"),
    (lambda ds: ds[0].update(pep="no"), "dossier D-001, field pep: 'no' is not true or false"),
    (lambda ds: ds[0].update(name="  "), "dossier D-001, field name: '  ' is not a non-empty text"),
    (lambda ds: ds[0].update(risk="low"), "dossier D-001, field risk: unknown field"),
    (lambda ds: ds[15].update(id="D-001"), "dossier D-001, field id: repeats dossier #1"),
    (lambda ds: ds.append(["not", "an", "object"]), "dossier #17: a dossier must be a JSON object"),
]


@pytest.mark.parametrize(("mutate", "message"), BAD_DOSSIERS)
def test_a_bad_dossier_names_the_file_dossier_and_field(tmp_path, mutate, message):
    path = _bad(tmp_path, mutate)
    with pytest.raises(DossierError) as err:
        kyc.load_dossiers(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_a_file_that_is_not_json_names_the_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"dossiers": [\n  {"id": "D-1",}\n]}', encoding="utf-8")
    with pytest.raises(DossierError, match=r"broken\.json: not valid JSON \(line 2, column"):
        kyc.load_dossiers(path)
    path.write_text('[{"id": "D-1"}]', encoding="utf-8")
    with pytest.raises(DossierError, match=r'must be an object \{"dossiers"'):
        kyc.load_dossiers(path)


def test_a_bad_dossier_file_leaves_the_stored_dossiers_as_they_were(tmp_path, dossiers, hits, ratings):
    store = DuckDBStore(tmp_path / "emp.duckdb")
    kyc.store_kyc(store, dossiers, hits, list(ratings.values()))
    before = store.query(f"SELECT * FROM {kyc.DOSSIERS_TABLE} ORDER BY dossier_id")

    def run(path):  # what a caller does: load, screen, rate, store
        ds = kyc.load_dossiers(path)
        kyc.store_kyc(store, ds, hits, [])

    with pytest.raises(DossierError):
        run(_bad(tmp_path, lambda ds: ds[15]["beneficial_owners"][0].update(ownership_pct=0)))
    assert store.query(f"SELECT * FROM {kyc.DOSSIERS_TABLE} ORDER BY dossier_id").equals(before)


# Worked by hand from the module docstring's table (points, rating, review due) for AS_OF = 2026-05-01.
EXPECTED = {
    "D-001": ("low", 0, date(2029, 5, 1)),  # nothing; 36 months
    "D-002": ("prohibited", 60, AS_OF),  # company 10 + hit 50; the hit scores 100 (legal forms dropped)
    "D-003": ("high", 50, date(2027, 5, 1)),  # hit 50 (Dmitry Volkov ~ VOLKOV, Dmitriy Sergeyevich)
    "D-004": ("high", 60, date(2027, 5, 1)),  # company 10 + hit on an owner written in Cyrillic 50
    "D-005": ("medium", 25, date(2028, 5, 1)),  # PEP 25
    "D-006": ("medium", 45, date(2028, 5, 1)),  # trust 20 + PEP owner 25
    "D-007": ("prohibited", 90, AS_OF),  # IR call for action 50 + IR owner 30 + company 10
    "D-008": ("medium", 40, date(2028, 5, 1)),  # NG grey 20 + NG owner 10 + company 10
    "D-009": ("medium", 20, date(2028, 5, 1)),  # passport expired 2025-04-01: 20
    "D-010": ("medium", 20, date(2028, 5, 1)),  # VE owner 10 + fund 10
    "D-011": ("low", 0, date(2026, 8, 10)),  # 36 months, brought forward to the passport's expiry
    "D-012": ("medium", 20, date(2028, 5, 1)),  # foundation 20
    "D-013": ("high", 60, date(2027, 1, 14)),  # company 10 + hit 50; the licence expires before 12 months
    "D-014": ("prohibited", 50, AS_OF),  # hit 50 scoring 100 on surname + first name
    "D-015": ("low", 10, date(2029, 5, 1)),  # company 10
    "D-016": ("medium", 40, date(2028, 5, 1)),  # KP owner 30 + partnership 10
}


def test_ratings_and_review_dates_match_the_hand_computed_table(ratings):
    assert {i: (r.rating, r.points, r.review_due) for i, r in ratings.items()} == EXPECTED
    assert ratings["D-004"].hits == 1 and "BELOUSOVA, Yelena Andreyevna" in ratings["D-004"].reasons[-1]
    assert any("FATF call for action" in x for x in ratings["D-007"].reasons)


def test_hits_are_screened_for_owners_too(hits):
    owner = hits.filter(pl.col("dossier_id") == "D-004").row(0, named=True)
    assert owner["subject"] == "beneficial_owner" and owner["ent_num"] == 1003
    assert set(hits["dossier_id"]) == {"D-002", "D-003", "D-004", "D-013", "D-014"}


def test_the_rating_moves_with_each_factor(dossiers, hits, lists):
    from dataclasses import replace

    base = next(d for d in dossiers if d.id == "D-001")
    empty = hits.clear()
    assert kyc.rate(base, empty, AS_OF, lists).rating == "low"
    assert kyc.rate(replace(base, pep=True), empty, AS_OF, lists).points == 25
    assert kyc.rate(replace(base, jurisdiction="MM"), empty, AS_OF, lists).rating == "prohibited"
    assert kyc.rate(replace(base, jurisdiction="KE"), empty, AS_OF, lists).rating == "medium"
    assert kyc.rate(base, empty, date(2032, 3, 1), lists).points == 20  # the passport expires that day
    assert kyc.rate(base, empty, date(2032, 2, 29), lists).points == 0


@pytest.mark.parametrize(("day", "months", "expected"), [
    (date(2026, 1, 31), 1, date(2026, 2, 28)), (date(2028, 1, 31), 1, date(2028, 2, 29)),
    (date(2026, 11, 15), 12, date(2027, 11, 15)), (date(2026, 12, 31), 36, date(2029, 12, 31)),
    (date(2026, 5, 1), 0, date(2026, 5, 1))])
def test_add_months(day, months, expected):
    assert kyc.add_months(day, months) == expected


def _opened(book: CaseBook, case: str = "D-003") -> CaseBook:
    book.transition(case, "open", actor="analyst.a", reason="onboarding request", at=T0)
    return book


def test_a_case_runs_open_escalated_approved_with_reasons():
    book = _opened(CaseBook())
    book.transition("D-003", "escalated", actor="analyst.a", reason="sanctions hit 96.3", at=T0 + timedelta(hours=1))
    t = book.transition("D-003", "approved", actor="mlro.b", reason="false positive: different DOB",
                        at=T0 + timedelta(hours=2), rating="high")
    assert (t.seq, t.from_state, t.to_state, t.rating) == (3, "escalated", "approved", "high")
    assert [x.to_state for x in book.history("D-003")] == ["open", "escalated", "approved"]
    assert book.state("D-003") == "approved" and book.state("D-999") is None


REFUSED = [
    ([], "approved", "analyst.a", "ok", "medium", "no such case; open it first"),
    ([("open", "a")], "open", "a", "again", None, "cannot move from open to open"),
    ([("open", "a"), ("rejected", "a")], "open", "a", "retry", None, "cannot move from rejected to open (allowed: "
     "none: it is final)"),
    ([("open", "a"), ("rejected", "a")], "approved", "b", "retry", "low", "cannot move from rejected to approved"),
    ([("open", "a")], "approved", "a", "fine", "prohibited", "rated prohibited and cannot be approved"),
    ([("open", "a"), ("escalated", "a")], "approved", "b", "fine", "prohibited", "rated prohibited"),
    ([("open", "a")], "approved", "b", "fine", "high", "high-risk dossier is approved only after escalation"),
    ([("open", "a"), ("escalated", "a")], "approved", "A ", "fine", "high", "four eyes"),
    ([("open", "a")], "approved", "b", "fine", None, "approval needs the dossier's current rating"),
    ([("open", "a")], "escalated", "a", "   ", None, "needs a reason"),
    ([("open", "a")], "escalated", "", "why", None, "needs an actor"),
    ([("open", "a")], "closed", "a", "why", None, "'closed' is not a state"),
    ([("open", "a")], "approved", "a", "why", "severe", "'severe' is not a rating"),
]


@pytest.mark.parametrize(("before", "to", "actor", "reason", "rating", "message"), REFUSED)
def test_refused_transitions_raise_and_change_nothing(before, to, actor, reason, rating, message):
    book = CaseBook()
    for i, (state, who) in enumerate(before):
        book.transition("D-1", state, actor=who, reason=f"step {i}", at=T0 + timedelta(minutes=i))
    snapshot = list(book.transitions)
    with pytest.raises(CaseError, match="case D-1: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        book.transition("D-1", to, actor=actor, reason=reason, at=T0 + timedelta(hours=1), rating=rating)
    assert book.transitions == snapshot


def test_time_must_not_go_back_and_aware_times_become_naive_utc():
    book = _opened(CaseBook())
    with pytest.raises(CaseError, match="before the case's last transition"):
        book.transition("D-003", "escalated", actor="a", reason="r", at=T0 - timedelta(seconds=1))
    t = book.transition("D-003", "escalated", actor="a", reason="r",
                        at=datetime(2026, 5, 1, 11, 0, tzinfo=UTC) .astimezone())
    assert t.at == datetime(2026, 5, 1, 11, 0) and t.at.tzinfo is None


def test_low_and_medium_dossiers_approve_from_open_and_approved_cases_reopen():
    book = _opened(CaseBook(), "D-001")
    book.transition("D-001", "approved", actor="analyst.a", reason="standard CDD complete", at=T0, rating="low")
    book.transition("D-001", "escalated", actor="analyst.c", reason="periodic review: adverse media", at=T0)
    book.transition("D-001", "open", actor="mlro.b", reason="sent back for documents", at=T0)
    assert book.state("D-001") == "open" and len(book.history("D-001")) == 4


@pytest.fixture
def any_store(tier_store):
    return tier_store


def test_the_store_keeps_dossiers_screening_and_an_audited_case_history(any_store, dossiers, hits, ratings):
    counts = kyc.store_kyc(any_store, dossiers, hits, list(ratings.values()))
    assert counts == {kyc.DOSSIERS_TABLE: 16, kyc.SCREENING_TABLE: hits.height}
    stored = any_store.query(f"SELECT dossier_id, rating, review_due FROM {kyc.DOSSIERS_TABLE} ORDER BY dossier_id")
    assert {r[0]: (r[1], r[2]) for r in stored.iter_rows()} == {k: (v[0], v[2]) for k, v in EXPECTED.items()}

    book = CaseBook()
    first = [book.transition("D-003", "open", actor="analyst.a", reason="onboarding", at=T0),
             book.transition("D-003", "escalated", actor="analyst.a", reason="sanctions hit", at=T0)]
    assert kyc.record_transitions(any_store, first, now=datetime(2026, 5, 1, tzinfo=UTC)) == [1, 2]
    again = kyc.read_cases(any_store)  # a later run continues from the stored book
    last = again.transition("D-003", "rejected", actor="mlro.b", reason="true match: same DOB", at=T0,
                            rating=ratings["D-003"])
    assert kyc.record_transitions(any_store, [last]) == [3]

    rows = any_store.query(f"SELECT case_id, seq, from_state, to_state, actor, reason FROM {kyc.CASES_TABLE} "
                           "ORDER BY seq")
    assert rows.rows() == [("D-003", 1, None, "open", "analyst.a", "onboarding"),
                           ("D-003", 2, "open", "escalated", "analyst.a", "sanctions hit"),
                           ("D-003", 3, "escalated", "rejected", "mlro.b", "true match: same DOB")]
    log = audit_store.read(any_store)
    assert log["kind"].to_list() == [kyc.AUDIT_KIND] * 3
    assert json.loads(log["payload"][2]) == {"case_id": "D-003", "seq": 3, "from_state": "escalated",
                                             "to_state": "rejected", "actor": "mlro.b",
                                             "reason": "true match: same DOB", "at": "2026-05-01T09:00:00",
                                             "rating": "high"}
    assert audit_store.verify(any_store).ok
    assert kyc.read_cases(any_store).state("D-003") == "rejected"


def test_the_markdown_summary(dossiers, ratings):
    book = _opened(CaseBook())
    book.transition("D-003", "escalated", actor="analyst.a", reason="hit | needs review", at=T0)
    text = kyc.summary_markdown(book, list(ratings.values()), dossiers)
    line = next(x for x in text.splitlines() if x.startswith("| D-003 "))
    assert line == ("| D-003 | Dmitry Volkov | high | 50 | 2027-05-01 | escalated | "
                    "2026-05-01 09:00 analyst.a: hit \\| needs review |")
    assert "open: 0 · escalated: 1 · approved: 0 · rejected: 0 · no case: 15" in text
    assert text.count("\n| D-") == 16


def test_stored_transitions_replay_through_the_rules():
    """A tampered cases table (an approval of a prohibited dossier) does not load as a book."""
    bad = CaseBook().frame([kyc.Transition("D-9", 1, None, "open", "a", "r", T0, None),
                            kyc.Transition("D-9", 2, "open", "approved", "a", "r", T0, "prohibited")])
    with pytest.raises(CaseError, match="prohibited"):
        CaseBook.from_frame(bad)
    ok = CaseBook.from_frame(copy.deepcopy(bad.head(1)))
    assert ok.state("D-9") == "open"

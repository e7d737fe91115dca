"""KYC/AML: onboarding dossiers, screening of the customer and its owners, a risk rating with a review date,
and a case book whose every transition carries a reason and goes to the audit trail.

**Dossiers** (:func:`load_dossiers`) are data: a JSON file ``{"dossiers": [...]}``, each with ``id``,
``name``, ``entity_type`` (:data:`ENTITY_TYPES`), ``jurisdiction`` (ISO 3166-1 alpha-2, checked with
pycountry), ``pep``, ``onboarded`` (ISO date), ``beneficial_owners`` (``name``, ``ownership_pct`` in (0, 100],
``nationality`` alpha-2, ``pep``; the shares add up to at most 100) and ``documents`` (``type``, ``number``,
``issued``, ``expiry`` or null; expiry after issue). The whole file is validated before any dossier is
returned; the first problem raises :class:`DossierError` naming the file, the dossier and the field.

**Risk rating** (:func:`rate`), points added up (the risk-based approach of FATF Recommendation 10 and
EU AMLD Art. 18, high-risk third countries per Art. 9; the jurisdiction lists are data,
``data/compliance/kyc/jurisdictions.json``, with the FATF publication date they copy):

=====================================================  ======
factor                                                 points
=====================================================  ======
jurisdiction under increased monitoring (FATF grey)     20
jurisdiction subject to a call for action (FATF black)  50
an owner's nationality grey / black                     10 / 30 (the worst owner)
entity type (:data:`ENTITY_POINTS`)                     0-20
PEP: the customer or any beneficial owner              25
a document expired on the rating date                  20
a screening hit on the customer or an owner            50
=====================================================  ======

Rating: **prohibited** when the customer's jurisdiction is subject to a call for action or a screening hit
scores 100 (the normalised names are the same); else **high** at 50 points or more, **medium** at 20 or more,
**low** below. Review due (:data:`REVIEW_MONTHS`): 12 months after the rating date for high, 24 for medium, 36
for low, at once for prohibited; brought forward to the earliest document expiry after the rating date, so a
document is renewed before it lapses.

**Case book** (:class:`CaseBook`): one case per dossier, states ``open``, ``escalated``, ``approved``,
``rejected``. Rules (each breach raises :class:`CaseError`):

- every transition names an actor and a non-empty reason, and its time is not before the case's last one;
- a case starts ``open``; allowed moves: open -> escalated | approved | rejected; escalated -> approved |
  rejected | open (sent back for information); approved -> escalated | open (reopened: the rating rose or a
  periodic review is due);
  ``rejected`` is final;
- a **prohibited** dossier cannot be approved;
- only a person approves (never :data:`SYSTEM_ACTOR`); a **high** dossier (which every screening hit makes at
  least) is approved only from ``escalated``, escalated by a person, and by someone other than that person
  (four eyes).

:func:`record_transitions` appends the transitions to ``compliance.kyc_cases`` and to the audit trail
(``audit.log``, kind ``kyc.case_transition``); :func:`store_kyc` writes ``compliance.kyc_dossiers`` (with the
rating) and ``compliance.kyc_screening``.
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl

from emp_core.compliance.sanctions import HIT_SCHEMA, THRESHOLD, SanctionsList, screen
from emp_core.errors import EmpError

ENTITY_TYPES = ("individual", "company", "partnership", "fund", "trust", "foundation", "government")
#: Points by entity type: structures that can hide their owners score more (FATF R.24/R.25).
ENTITY_POINTS = {"individual": 0, "government": 0, "company": 10, "partnership": 10, "fund": 10,
                 "trust": 20, "foundation": 20}
JURISDICTION_POINTS = {"increased_monitoring": 20, "call_for_action": 50}
OWNER_NATIONALITY_POINTS = {"increased_monitoring": 10, "call_for_action": 30}
PEP_POINTS = 25
EXPIRED_DOCUMENT_POINTS = 20
HIT_POINTS = 50
RATINGS = ("low", "medium", "high", "prohibited")
HIGH_AT, MEDIUM_AT = 50, 20
REVIEW_MONTHS = {"low": 36, "medium": 24, "high": 12, "prohibited": 0}

STATES = ("open", "escalated", "approved", "rejected")
ALLOWED = {None: ("open",), "open": ("escalated", "approved", "rejected"),
           "escalated": ("approved", "rejected", "open"), "approved": ("escalated", "open"), "rejected": ()}
SYSTEM_ACTOR = "emp kyc review"  # the platform's own transitions: opening and reopening cases, never deciding
AUDIT_KIND = "kyc.case_transition"

DOSSIERS_TABLE = "compliance.kyc_dossiers"
SCREENING_TABLE = "compliance.kyc_screening"
CASES_TABLE = "compliance.kyc_cases"


class DossierError(EmpError):
    """A dossier file that cannot be used; no dossier of it was returned."""

    def __init__(self, path: object, dossier: str | None, fld: str | None, problem: str) -> None:
        self.path, self.dossier, self.field, self.problem = str(path), dossier, fld, problem
        where = self.path + (f": dossier {dossier}" if dossier else "") + (f", field {fld}" if fld else "")
        super().__init__(f"{where}: {problem}")


class CaseError(EmpError):
    """A case transition the rules do not allow; the case book is unchanged."""


# -- dossiers ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BeneficialOwner:
    name: str
    ownership_pct: float
    nationality: str
    pep: bool = False


@dataclass(frozen=True)
class Document:
    type: str
    number: str
    issued: date
    expiry: date | None = None


@dataclass(frozen=True)
class Dossier:
    id: str
    name: str
    entity_type: str
    jurisdiction: str
    onboarded: date
    pep: bool = False
    beneficial_owners: tuple[BeneficialOwner, ...] = ()
    documents: tuple[Document, ...] = ()


def country(code: object) -> str | None:
    """``code`` if it is an ISO 3166-1 alpha-2 country code (upper case, known to pycountry), else None."""
    import pycountry

    if not isinstance(code, str) or len(code) != 2 or not code.isupper():
        return None
    try:
        return code if pycountry.countries.get(alpha_2=code) is not None else None
    except KeyError:  # older pycountry raised instead of returning None
        return None


class _Reader:
    """Field access on one dossier's JSON object, raising :class:`DossierError` with the path to the field."""

    def __init__(self, path: Path, dossier: str | None) -> None:
        self.path, self.dossier = path, dossier

    def fail(self, fld: str, problem: str):
        raise DossierError(self.path, self.dossier, fld, problem)

    def text(self, obj: dict, key: str, where: str = "") -> str:
        value = obj.get(key)
        if not isinstance(value, str) or not value.strip():
            self.fail(where + key, f"{value!r} is not a non-empty text")
        return value.strip()

    def flag(self, obj: dict, key: str, where: str = "") -> bool:
        value = obj.get(key, False)
        if not isinstance(value, bool):
            self.fail(where + key, f"{value!r} is not true or false")
        return value

    def day(self, obj: dict, key: str, where: str = "", optional: bool = False) -> date | None:
        value = obj.get(key)
        if value is None and optional:
            return None
        try:
            return date.fromisoformat(value)
        except (TypeError, ValueError):
            self.fail(where + key, f"{value!r} is not an ISO date (YYYY-MM-DD)")

    def country(self, obj: dict, key: str, where: str = "") -> str:
        value = obj.get(key)
        if country(value) is None:
            self.fail(where + key, f"{value!r} is not an ISO 3166-1 alpha-2 country code")
        return value


def _dossier(raw: object, path: Path, i: int) -> Dossier:
    if not isinstance(raw, dict):
        raise DossierError(path, f"#{i + 1}", None, "a dossier must be a JSON object")
    r = _Reader(path, raw.get("id") if isinstance(raw.get("id"), str) else f"#{i + 1}")
    did = r.text(raw, "id")
    unknown = set(raw) - {"id", "name", "entity_type", "jurisdiction", "onboarded", "pep", "beneficial_owners",
                          "documents"}
    if unknown:
        r.fail(sorted(unknown)[0], "unknown field")
    kind = raw.get("entity_type")
    if kind not in ENTITY_TYPES:
        r.fail("entity_type", f"{kind!r} is not one of {', '.join(ENTITY_TYPES)}")
    owners, total = [], 0.0
    raw_owners = raw.get("beneficial_owners", [])
    if not isinstance(raw_owners, list):
        r.fail("beneficial_owners", "not a list")
    for j, o in enumerate(raw_owners):
        where = f"beneficial_owners[{j}]."
        if not isinstance(o, dict):
            r.fail(where[:-1], "not a JSON object")
        pct = o.get("ownership_pct")
        if isinstance(pct, bool) or not isinstance(pct, int | float) or not 0 < pct <= 100:
            r.fail(where + "ownership_pct", f"{pct!r} is not a share in (0, 100]")
        total += pct
        owners.append(BeneficialOwner(r.text(o, "name", where), float(pct), r.country(o, "nationality", where),
                                      r.flag(o, "pep", where)))
    if total > 100 + 1e-9:
        r.fail("beneficial_owners", f"the ownership shares add up to {total:g}%, over 100%")
    docs = []
    raw_docs = raw.get("documents", [])
    if not isinstance(raw_docs, list):
        r.fail("documents", "not a list")
    for j, d in enumerate(raw_docs):
        where = f"documents[{j}]."
        if not isinstance(d, dict):
            r.fail(where[:-1], "not a JSON object")
        issued, expiry = r.day(d, "issued", where), r.day(d, "expiry", where, optional=True)
        if expiry is not None and expiry <= issued:
            r.fail(where + "expiry", f"{expiry} is not after the issue date {issued}")
        docs.append(Document(r.text(d, "type", where), r.text(d, "number", where), issued, expiry))
    return Dossier(did, r.text(raw, "name"), kind, r.country(raw, "jurisdiction"), r.day(raw, "onboarded"),
                   r.flag(raw, "pep"), tuple(owners), tuple(docs))


def load_dossiers(path: str | Path) -> list[Dossier]:
    """Every dossier of the JSON file at ``path`` (module docstring), validated; ids unique."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DossierError(path, None, None, f"cannot read the file ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise DossierError(path, None, None, f"not valid JSON (line {exc.lineno}, column {exc.colno}: "
                           f"{exc.msg})") from None
    except UnicodeDecodeError:
        raise DossierError(path, None, None, "not UTF-8 text") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("dossiers"), list):
        raise DossierError(path, None, "dossiers", 'the file must be an object {"dossiers": [...]}')
    out, seen = [], {}
    for i, raw in enumerate(doc["dossiers"]):
        d = _dossier(raw, path, i)
        if d.id in seen:
            raise DossierError(path, d.id, "id", f"repeats dossier #{seen[d.id] + 1}")
        seen[d.id] = i
        out.append(d)
    return out


@dataclass(frozen=True)
class JurisdictionLists:
    """FATF's lists as of ``as_of``: ``call_for_action`` (black) and ``increased_monitoring`` (grey)."""

    as_of: date
    source: str
    call_for_action: frozenset[str]
    increased_monitoring: frozenset[str]

    def status(self, code: str) -> str | None:
        if code in self.call_for_action:
            return "call_for_action"
        if code in self.increased_monitoring:
            return "increased_monitoring"
        return None


def load_jurisdictions(path: str | Path) -> JurisdictionLists:
    """The jurisdiction lists file (``as_of``, ``source``, ``call_for_action``, ``increased_monitoring``: alpha-2
    codes), validated."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DossierError(path, None, None, f"cannot read the jurisdiction lists ({exc})") from None
    r = _Reader(path, None)
    lists = {}
    for key in ("call_for_action", "increased_monitoring"):
        codes = doc.get(key)
        if not isinstance(codes, list):
            r.fail(key, "not a list of country codes")
        for j, c in enumerate(codes):
            if country(c) is None:
                r.fail(f"{key}[{j}]", f"{c!r} is not an ISO 3166-1 alpha-2 country code")
        lists[key] = frozenset(codes)
    both = lists["call_for_action"] & lists["increased_monitoring"]
    if both:
        r.fail("increased_monitoring", f"{sorted(both)[0]} is on both lists")
    return JurisdictionLists(r.day(doc, "as_of"), r.text(doc, "source"), lists["call_for_action"],
                             lists["increased_monitoring"])


# -- screening and rating ---------------------------------------------------------------------------------------

def screen_dossiers(dossiers: Sequence[Dossier], sanctions: SanctionsList, *,
                    threshold: float = THRESHOLD) -> pl.DataFrame:
    """Screen each dossier's customer and beneficial owners: the hits of :func:`screen` with ``dossier_id``,
    ``subject`` (``customer`` or ``beneficial_owner``) and ``subject_name`` in front."""
    subjects = [(d.id, "customer", d.name) for d in dossiers]
    subjects += [(d.id, "beneficial_owner", o.name) for d in dossiers for o in d.beneficial_owners]
    hits = screen([s[2] for s in subjects], sanctions, threshold=threshold)
    frame = pl.DataFrame(subjects, schema={"dossier_id": pl.String, "subject": pl.String,
                                           "subject_name": pl.String}, orient="row").with_row_index("query_index")
    return (frame.with_columns(pl.col("query_index").cast(pl.Int64))
            .join(hits, on="query_index").drop("query_index", "query")
            .sort("dossier_id", "subject", "score", descending=[False, False, True]))


SCREENING_SCHEMA = {"dossier_id": pl.String, "subject": pl.String, "subject_name": pl.String} | {
    k: v for k, v in HIT_SCHEMA.items() if k not in ("query_index", "query")}


@dataclass(frozen=True)
class Rating:
    dossier_id: str
    as_of: date
    rating: str
    points: int
    review_due: date
    reasons: tuple[str, ...]
    hits: int = 0
    best_hit_score: float | None = None


def add_months(day: date, months: int) -> date:
    """``day`` plus ``months`` calendar months, the day clamped to the month's last (Jan 31 + 1 = Feb 28/29)."""
    y, m = divmod(day.month - 1 + months, 12)
    year, month = day.year + y, m + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def rate(dossier: Dossier, hits: pl.DataFrame, as_of: date, jurisdictions: JurisdictionLists) -> Rating:
    """The dossier's rating on ``as_of`` (module docstring: points, thresholds, review date). ``hits``: the
    screening hits of this dossier (rows of :func:`screen_dossiers`; other dossiers' rows are ignored)."""
    mine = hits.filter(pl.col("dossier_id") == dossier.id) if "dossier_id" in hits.columns else hits
    points, reasons = 0, []
    status = jurisdictions.status(dossier.jurisdiction)
    if status:
        points += JURISDICTION_POINTS[status]
        reasons.append(f"jurisdiction {dossier.jurisdiction}: FATF {status.replace('_', ' ')} "
                       f"(+{JURISDICTION_POINTS[status]})")
    flagged = [(OWNER_NATIONALITY_POINTS[s], o.name, o.nationality, s) for o in dossier.beneficial_owners
               if (s := jurisdictions.status(o.nationality))]
    if flagged:
        worst = max(flagged)
        points += worst[0]
        reasons.append(f"owner {worst[1]}: nationality {worst[2]}, FATF {worst[3].replace('_', ' ')} (+{worst[0]})")
    if ENTITY_POINTS[dossier.entity_type]:
        points += ENTITY_POINTS[dossier.entity_type]
        reasons.append(f"entity type {dossier.entity_type} (+{ENTITY_POINTS[dossier.entity_type]})")
    peps = ([dossier.name] if dossier.pep else []) + [o.name for o in dossier.beneficial_owners if o.pep]
    if peps:
        points += PEP_POINTS
        reasons.append(f"PEP: {', '.join(peps)} (+{PEP_POINTS})")
    expired = [d for d in dossier.documents if d.expiry is not None and d.expiry <= as_of]
    if expired:
        points += EXPIRED_DOCUMENT_POINTS
        reasons.append("expired: " + ", ".join(f"{d.type} {d.number} ({d.expiry})" for d in expired)
                       + f" (+{EXPIRED_DOCUMENT_POINTS})")
    best = float(mine["score"].max()) if mine.height else None
    if mine.height:
        points += HIT_POINTS
        top = mine.sort("score", descending=True).row(0, named=True)
        reasons.append(f"{mine.height} screening hit(s), best {top.get('subject_name', '')!s} ~ "
                       f"{top['matched_name']} (ent_num {top['ent_num']}, {top['program']}, score {top['score']:.1f})"
                       f" (+{HIT_POINTS})")
    if status == "call_for_action" or (best is not None and best >= 100.0):
        rating = "prohibited"
    elif points >= HIGH_AT:
        rating = "high"
    elif points >= MEDIUM_AT:
        rating = "medium"
    else:
        rating = "low"
    due = add_months(as_of, REVIEW_MONTHS[rating])
    upcoming = [d.expiry for d in dossier.documents if d.expiry is not None and d.expiry > as_of]
    if upcoming and min(upcoming) < due:
        due = min(upcoming)
        reasons.append(f"review brought forward to the first document expiry {due}")
    return Rating(dossier.id, as_of, rating, points, due, tuple(reasons), mine.height, best)


# -- cases ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Transition:
    case_id: str
    seq: int
    from_state: str | None
    to_state: str
    actor: str
    reason: str
    at: datetime
    rating: str | None = None

    def payload(self) -> dict:
        out = asdict(self)
        out["at"] = self.at.isoformat()
        return out


CASE_SCHEMA = {"case_id": pl.String, "seq": pl.Int64, "from_state": pl.String, "to_state": pl.String,
               "actor": pl.String, "reason": pl.String, "at": pl.Datetime("us"), "rating": pl.String}


@dataclass
class CaseBook:
    """Every case's transitions, in order. :meth:`transition` checks the rules (module docstring) and appends;
    a refused transition raises :class:`CaseError` and changes nothing."""

    transitions: list[Transition] = field(default_factory=list)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> CaseBook:
        """The book from stored transitions (``compliance.kyc_cases`` rows), replayed through the rules."""
        book = cls()
        for row in frame.sort("case_id", "seq").iter_rows(named=True):
            book.transition(row["case_id"], row["to_state"], actor=row["actor"], reason=row["reason"],
                            at=row["at"], rating=row["rating"])
        return book

    def history(self, case_id: str) -> list[Transition]:
        return [t for t in self.transitions if t.case_id == case_id]

    def state(self, case_id: str) -> str | None:
        h = self.history(case_id)
        return h[-1].to_state if h else None

    def states(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for t in self.transitions:
            out[t.case_id] = t.to_state
        return out

    def transition(self, case_id: str, to: str, *, actor: str, reason: str, at: datetime,
                   rating: str | Rating | None = None) -> Transition:
        """Move ``case_id`` to ``to`` (``open`` starts a case), for ``reason``, by ``actor``, at ``at``.
        ``rating``: the dossier's current rating (required to approve)."""
        level = rating.rating if isinstance(rating, Rating) else rating
        history = self.history(case_id)
        current = history[-1].to_state if history else None
        label = f"case {case_id}"
        _check_inputs(label, to, actor, reason, at, level)
        if at.tzinfo is not None:  # the platform keeps naive UTC
            at = at.astimezone(UTC).replace(tzinfo=None)
        _check_rules(label, history, to, actor, at, level)
        t = Transition(case_id, len(history) + 1, current, to, actor.strip(), reason.strip(), at, level)
        self.transitions.append(t)
        return t

    def frame(self, transitions: Iterable[Transition] | None = None) -> pl.DataFrame:
        """The transitions (all, or ``transitions``) as rows of ``compliance.kyc_cases``."""
        rows = self.transitions if transitions is None else list(transitions)
        return pl.DataFrame([asdict(t) for t in rows], schema=CASE_SCHEMA)


def _check_inputs(label: str, to: str, actor: str, reason: str, at: datetime, level: str | None) -> None:
    if to not in STATES:
        raise CaseError(f"{label}: {to!r} is not a state ({', '.join(STATES)})")
    if not isinstance(reason, str) or not reason.strip():
        raise CaseError(f"{label}: moving to {to} needs a reason")
    if not isinstance(actor, str) or not actor.strip():
        raise CaseError(f"{label}: moving to {to} needs an actor")
    if not isinstance(at, datetime):
        raise CaseError(f"{label}: the transition time {at!r} is not a datetime")
    if level is not None and level not in RATINGS:
        raise CaseError(f"{label}: {level!r} is not a rating ({', '.join(RATINGS)})")


def _check_rules(label: str, history: list[Transition], to: str, actor: str, at: datetime,
                 level: str | None) -> None:
    """The case rules of the module docstring: allowed moves, time order, approval conditions."""
    current = history[-1].to_state if history else None
    if to not in ALLOWED[current]:
        if current is None:
            raise CaseError(f"{label}: there is no such case; open it first")
        allowed = ", ".join(ALLOWED[current]) or "none: it is final"
        raise CaseError(f"{label}: cannot move from {current} to {to} (allowed: {allowed})")
    if history and at < history[-1].at:
        raise CaseError(f"{label}: {at} is before the case's last transition ({history[-1].at})")
    if to != "approved":
        return
    if level is None:
        raise CaseError(f"{label}: approval needs the dossier's current rating")
    if level == "prohibited":
        raise CaseError(f"{label}: the dossier is rated prohibited and cannot be approved")
    if actor.strip().casefold() == SYSTEM_ACTOR:
        raise CaseError(f"{label}: only a person approves a case")
    if level == "high":
        if current != "escalated":
            raise CaseError(f"{label}: a high-risk dossier is approved only after escalation")
        escalator = history[-1].actor
        if escalator.casefold() == SYSTEM_ACTOR:
            raise CaseError(f"{label}: the platform escalated the case; a person must escalate it before another "
                            "approves (four eyes)")
        if escalator.casefold() == actor.strip().casefold():
            raise CaseError(f"{label}: {actor} escalated the case and cannot also approve it (four eyes)")


# -- store ------------------------------------------------------------------------------------------------------

def dossier_frame(dossiers: Sequence[Dossier], ratings: Sequence[Rating] = ()) -> pl.DataFrame:
    """One row per dossier: its fields (owners and documents as JSON text) and, where given, its rating."""
    by_id = {r.dossier_id: r for r in ratings}
    rows = []
    for d in dossiers:
        r = by_id.get(d.id)
        rows.append({
            "dossier_id": d.id, "name": d.name, "entity_type": d.entity_type, "jurisdiction": d.jurisdiction,
            "pep": d.pep, "onboarded": d.onboarded,
            "beneficial_owners": json.dumps([asdict(o) for o in d.beneficial_owners], ensure_ascii=False),
            "documents": json.dumps([asdict(x) for x in d.documents], default=str, ensure_ascii=False),
            "as_of": r.as_of if r else None, "rating": r.rating if r else None,
            "points": r.points if r else None, "review_due": r.review_due if r else None,
            "reasons": "; ".join(r.reasons) if r else None, "hits": r.hits if r else None})
    return pl.DataFrame(rows, schema={"dossier_id": pl.String, "name": pl.String, "entity_type": pl.String,
                                      "jurisdiction": pl.String, "pep": pl.Boolean, "onboarded": pl.Date,
                                      "beneficial_owners": pl.String, "documents": pl.String, "as_of": pl.Date,
                                      "rating": pl.String, "points": pl.Int64, "review_due": pl.Date,
                                      "reasons": pl.String, "hits": pl.Int64})


def store_kyc(store, dossiers: Sequence[Dossier], screening: pl.DataFrame, ratings: Sequence[Rating]) -> dict:
    """Write ``compliance.kyc_dossiers`` (dossiers with their ratings) and ``compliance.kyc_screening`` (the
    latest screening), each replaced whole; row counts."""
    frame = dossier_frame(dossiers, ratings)
    hits = screening.select(list(SCREENING_SCHEMA)).cast(SCREENING_SCHEMA) if screening.height else \
        pl.DataFrame(schema=SCREENING_SCHEMA)
    return {DOSSIERS_TABLE: store.overwrite_table(DOSSIERS_TABLE, frame),
            SCREENING_TABLE: store.overwrite_table(SCREENING_TABLE, hits)}


def record_transitions(store, transitions: Sequence[Transition], *, now: datetime | None = None) -> list[int]:
    """Append ``transitions`` to the audit trail (kind ``kyc.case_transition``) and then to
    ``compliance.kyc_cases``; the audit seq numbers. The audit log goes first: it is the record, and the cases
    table is a projection of it (every row's payload is in the log)."""
    from emp_core.compliance import audit_store, trail

    if not transitions:
        return []
    seqs = audit_store.append(trail.primary(store), [(AUDIT_KIND, t.payload()) for t in transitions], now=now)
    store.append_table(CASES_TABLE, CaseBook().frame(transitions))
    return seqs


def read_cases(store) -> CaseBook:
    """The case book stored in ``compliance.kyc_cases`` (empty when the table does not exist)."""
    if CASES_TABLE not in store.tables():
        return CaseBook()
    return CaseBook.from_frame(store.query(f"SELECT * FROM {CASES_TABLE}"))


def shipped(name: str, cfg=None) -> Path:
    """A shipped KYC/AML data file under ``<data dir>/compliance`` (``EMP_DATA_DIR``): ``dossiers.json``,
    ``jurisdictions.json`` (under ``kyc/``), ``sdn.csv``, ``alt.csv`` (under ``sanctions/``)."""
    from emp_core.config import settings

    folder = "sanctions" if name.endswith(".csv") else "kyc"
    return (cfg or settings()).data_dir / "compliance" / folder / name


@dataclass(frozen=True)
class Review:
    """One KYC review: the dossiers, their screening and ratings, the case book after it, and the transitions
    this review made."""

    dossiers: list[Dossier]
    screening: pl.DataFrame
    ratings: list[Rating]
    book: CaseBook
    made: list[Transition]

    def waiting(self) -> dict[str, str]:
        """Cases waiting for a person's decision (open or escalated): case id -> state."""
        return {c: s for c, s in self.book.states().items() if s in ("open", "escalated")}


def review_due(approved_at: date, rating: Rating, dossier: Dossier) -> date:
    """When an approved customer is due for review: :data:`REVIEW_MONTHS` of its current rating after the
    approval, brought forward to the first document expiry after the approval."""
    due = add_months(approved_at, REVIEW_MONTHS[rating.rating])
    expiries = [d.expiry for d in dossier.documents if d.expiry is not None and d.expiry > approved_at]
    return min([due, *expiries])


def review(store, dossiers_path: str | Path, sanctions: SanctionsList, jurisdictions: JurisdictionLists,
           as_of: date, *, now: datetime | None = None) -> Review:
    """Screen and rate every dossier on ``as_of``, store them (:func:`store_kyc`), and move the case book where
    the rules leave it to the platform (actor :data:`SYSTEM_ACTOR`), each with its reason, audited:

    - a dossier without a case gets one, ``open`` ("onboarding"), its rating and the reasons in the reason;
    - an ``approved`` case is reopened (``open``) when its dossier is now rated high or prohibited, or its review
      is due (:func:`review_due`: counted from the approval; a document expiring brings it forward); its
      stored review date is the one counted from the approval.

    Escalating, approving and rejecting are people's decisions (:func:`decide`, ``emp kyc decide``): the
    platform never escalates, so the four-eyes rule on high-risk approvals always sees two people. A bad
    dossier file raises :class:`DossierError` before anything is written."""
    from dataclasses import replace

    from emp_core.clock import utcnow

    dossiers = load_dossiers(dossiers_path)
    hits = screen_dossiers(dossiers, sanctions)
    ratings = [rate(d, hits, as_of, jurisdictions) for d in dossiers]
    book = read_cases(store)
    at = now or utcnow()
    made = []
    for i, (d, r) in enumerate(zip(dossiers, ratings, strict=True)):
        state = book.state(d.id)
        if state is None:
            made.append(book.transition(d.id, "open", actor=SYSTEM_ACTOR, at=at, rating=r,
                                        reason=f"onboarding: dossier {d.id} ({d.entity_type}, {d.jurisdiction}) "
                                               f"received; rated {r.rating} ({r.points} points"
                                               + (f": {'; '.join(r.reasons)})" if r.reasons else ")")))
            continue
        if state != "approved":
            continue
        approved_at = max(t.at for t in book.history(d.id) if t.to_state == "approved").date()
        due = review_due(approved_at, r, d)
        current = ratings[i] = replace(r, review_due=due)
        why = []
        if current.rating in ("high", "prohibited"):
            why.append(f"now rated {current.rating} ({current.points} points: {'; '.join(current.reasons)})")
        if due <= as_of:
            why.append(f"periodic review due on {due} (approved {approved_at})")
        if why:
            made.append(book.transition(d.id, "open", actor=SYSTEM_ACTOR, at=at, rating=current,
                                        reason="reopened: " + "; ".join(why)))
    store_kyc(store, dossiers, hits, ratings)
    record_transitions(store, made)
    return Review(dossiers, hits, ratings, book, made)


def decide(store, case_id: str, to: str, *, actor: str, reason: str, now: datetime | None = None) -> Transition:
    """A person's transition of ``case_id`` (approve, reject, escalate, send back), judged by the case rules on
    the dossier's stored rating, then audited and stored. Raises :class:`CaseError` (nothing written)."""
    from emp_core.clock import utcnow

    book = read_cases(store)
    if book.state(case_id) is None:
        raise CaseError(f"case {case_id}: no such case (a KYC review opens one per dossier: emp kyc review)")
    rating = None
    if DOSSIERS_TABLE in store.tables():
        rows = store.query(f"SELECT rating FROM {DOSSIERS_TABLE} WHERE dossier_id = $d", {"d": case_id})
        rating = rows["rating"][0] if rows.height else None
    t = book.transition(case_id, to, actor=actor, reason=reason, at=now or utcnow(), rating=rating)
    record_transitions(store, [t])
    return t


def audit_mismatches(store) -> list[str]:
    """Where ``compliance.kyc_cases`` and the audit trail's ``kyc.case_transition`` entries disagree: a row the
    log lacks, an entry the table lacks, or a field that differs (the table is a projection of the log, so an
    edit of the table shows here); and a table the case rules refuse on replay. Empty when they agree."""
    from emp_core.compliance import audit_store, trail

    log = audit_store.read(trail.primary(store))
    logged = {}
    for text in log.filter(pl.col("kind") == AUDIT_KIND)["payload"].to_list():
        entry = json.loads(text)
        logged[(entry["case_id"], entry["seq"])] = entry
    table = (store.query(f"SELECT * FROM {CASES_TABLE}") if CASES_TABLE in store.tables()
             else pl.DataFrame(schema=CASE_SCHEMA))
    problems = []
    stored = {}
    for row in table.iter_rows(named=True):
        stored[(row["case_id"], row["seq"])] = row
    for key in sorted(set(stored) | set(logged)):
        if key not in logged:
            problems.append(f"case {key[0]} transition {key[1]}: in {CASES_TABLE} but not in the audit trail")
        elif key not in stored:
            problems.append(f"case {key[0]} transition {key[1]}: in the audit trail but not in {CASES_TABLE}")
        else:
            row = stored[key]
            mine = Transition(**{k: row[k] for k in CASE_SCHEMA}).payload()
            differ = sorted(k for k in mine if mine[k] != logged[key].get(k))
            if differ:
                problems.append(f"case {key[0]} transition {key[1]}: {', '.join(differ)} differ from the audit trail")
    try:
        CaseBook.from_frame(table)
    except CaseError as exc:
        problems.append(f"{CASES_TABLE} breaks the case rules: {exc}")
    return problems


def summary_markdown(book: CaseBook, ratings: Sequence[Rating] = (), dossiers: Sequence[Dossier] = ()) -> str:
    """A Markdown table of the case book: each case's state, rating, review date and last transition."""
    by_rating = {r.dossier_id: r for r in ratings}
    names = {d.id: d.name for d in dossiers}
    last: dict[str, Transition] = {}
    for t in book.transitions:
        last[t.case_id] = t
    ids = sorted(set(last) | set(by_rating))
    counts = {s: sum(1 for t in last.values() if t.to_state == s) for s in STATES}
    lines = ["# KYC case book", "",
             " · ".join(f"{s}: {n}" for s, n in counts.items()) + f" · no case: {len(set(by_rating) - set(last))}",
             "", "| dossier | name | rating | points | review due | state | last change |",
             "|---|---|---|---|---|---|---|"]
    for i in ids:
        r, t = by_rating.get(i), last.get(i)
        change = f"{t.at:%Y-%m-%d %H:%M} {t.actor}: {t.reason}" if t else ""
        lines.append("| " + " | ".join(_cell(x) for x in (
            i, names.get(i, ""), r.rating if r else "", r.points if r else "", r.review_due if r else "",
            t.to_state if t else "", change)) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


__all__ = [
    "CASES_TABLE",
    "DOSSIERS_TABLE",
    "SCREENING_TABLE",
    "BeneficialOwner",
    "CaseBook",
    "CaseError",
    "Document",
    "Dossier",
    "DossierError",
    "JurisdictionLists",
    "Rating",
    "Review",
    "Transition",
    "decide",
    "load_dossiers",
    "load_jurisdictions",
    "rate",
    "read_cases",
    "record_transitions",
    "review",
    "screen_dossiers",
    "store_kyc",
    "summary_markdown",
]

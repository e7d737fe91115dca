"""The compliance commands behind ``emp audit`` (typed ``run_*`` functions; emp_core/cli.py parses)."""

from __future__ import annotations

import json

from emp_core.errors import EmpError


def _store():
    from emp_core.store import open_store

    # the log must never fork: no failover to another store, no cache
    return open_store(failover=False, cache=False)


def parse_witness(text: str | None) -> tuple[int, str] | None:
    """``SEQ:HASH`` (a head an earlier verification printed) as (seq, hash)."""
    if text is None:
        return None
    seq, sep, digest = text.partition(":")
    if not sep or not seq.isdigit() or len(digest) != 64:
        raise EmpError(f"--witness {text!r}: expected SEQ:HASH, the head an earlier `emp audit verify` printed")
    return int(seq), digest.lower()


def run_audit_verify(*, witness: str | None = None, as_json: bool = False) -> int:
    """Verify the whole audit log where it is stored; exit 0 when intact, 1 naming the first bad entry."""
    from emp_core.compliance import audit_store

    store = _store()
    result = audit_store.verify(store, witness=parse_witness(witness))
    if as_json:
        print(json.dumps({"store": str(store), **result.as_dict()}))
    elif result.ok:
        print(f"{store}: audit.log intact, {result.entries} entries; head {result.head_seq}:{result.head_hash}")
    else:
        print(f"{store}: audit.log is NOT intact ({result.entries} entries): {result.problem}")
    return 0 if result.ok else 1


def run_audit_append(*, kind: str, payload: str, as_json: bool = False) -> int:
    """Append one entry (the only writer the command line offers); prints its seq."""
    from emp_core.compliance import audit_store
    from emp_core.compliance.trail import PLATFORM_KINDS

    if kind in PLATFORM_KINDS:
        raise EmpError(f"--kind {kind}: the platform writes these entries itself ({', '.join(PLATFORM_KINDS)}); "
                       "the command line appends notes and other kinds only")
    try:
        value = json.loads(payload)
    except ValueError as exc:
        raise EmpError(f"--payload is not JSON: {exc}") from None
    store = _store()
    (seq,) = audit_store.append(store, [(kind, value)])
    if as_json:
        print(json.dumps({"store": str(store), "seq": seq, "kind": kind}))
    else:
        print(f"{store}: appended audit entry {seq} ({kind})")
    return 0


def run_breaches(*, show_all: bool = False, as_json: bool = False) -> int:
    """List the open post-trade compliance breaches (``show_all``: every breach recorded, pre-trade too);
    exit 1 while any post-trade breach is open (it blocks the next trading plan), else 0."""
    from emp_core.compliance.trade import BREACHES, open_breaches

    store = _store()
    still_open = open_breaches(store)
    shown = still_open
    if show_all:
        shown = store.query(f"SELECT * FROM {BREACHES} ORDER BY \"at\"") if BREACHES in set(store.tables()) \
            else still_open
    if as_json:
        print(json.dumps({"store": str(store), "open": still_open.height,
                          "breaches": shown.to_dicts()}, default=str))
    else:
        print(f"{store}: {still_open.height} open post-trade breach(es)"
              + (f"; {shown.height} recorded in all" if show_all else ""))
        for r in shown.iter_rows(named=True):
            print(f"  {r['breach_id']}  {r['stage']:<10} {r['rule']:<15} {r['symbol']:<6} {r['side']:<4} "
                  f"{r['exec_id'] or r['order_ref']}: {r['detail']}")
    return 1 if still_open.height else 0


def run_resolve(*, breach_id: str, by: str, reason: str, as_json: bool = False) -> int:
    """Resolve an open post-trade breach (audited); the next trading plan is no longer blocked by it."""
    from emp_core.compliance.trade import open_breaches, resolve

    store = _store()
    row = resolve(store, breach_id, reason=reason, by=by)
    remaining = open_breaches(store).height
    if as_json:
        print(json.dumps({"store": str(store), **row, "open": remaining}, default=str))
    else:
        print(f"{store}: breach {breach_id} resolved by {row['resolved_by']}; {remaining} still open")
    return 0


def _sanctions(sdn: str | None, alt: str | None):
    from emp_core.compliance.kyc import shipped
    from emp_core.compliance.sanctions import load_sdn

    if sdn is None:
        return load_sdn(shipped("sdn.csv"), shipped("alt.csv"))
    return load_sdn(sdn, alt)


def run_kyc_screen(*, names: list[str], sdn: str | None = None, alt: str | None = None,
                   threshold: float | None = None, as_json: bool = False) -> int:
    """Screen names against the sanctions list; exit 1 when any name hits, else 0."""
    from emp_core.compliance.sanctions import THRESHOLD, screen

    hits = screen(names, _sanctions(sdn, alt), threshold=THRESHOLD if threshold is None else threshold)
    if as_json:
        print(json.dumps({"threshold": THRESHOLD if threshold is None else threshold, "hits": hits.to_dicts()},
                         default=str))
    else:
        for i, name in enumerate(names):
            mine = hits.filter(hits["query_index"] == i)
            print(f"{name}: " + ("no hit" if mine.is_empty() else f"{mine.height} hit(s)"))
            for r in mine.iter_rows(named=True):
                print(f"  {r['score']:5.1f}  SDN {r['ent_num']}  {r['matched_name']}  "
                      f"({r['sdn_type']}, {r['program']})")
    return 1 if hits.height else 0


def run_kyc_review(*, dossiers: str | None = None, sdn: str | None = None, alt: str | None = None,
                   as_of: str | None = None, as_json: bool = False) -> int:
    """Screen and rate the dossiers, open and reopen cases (audited); exit 0, printing what waits for a
    decision."""
    from datetime import date

    from emp_core.clock import utcnow
    from emp_core.compliance.kyc import load_jurisdictions, review, shipped

    try:
        day = date.fromisoformat(as_of) if as_of else utcnow().date()
    except ValueError:
        raise EmpError(f"--as-of {as_of!r} is not a date (YYYY-MM-DD)") from None
    store = _store()
    result = review(store, dossiers or shipped("dossiers.json"), _sanctions(sdn, alt),
                    load_jurisdictions(shipped("jurisdictions.json")), day)
    waiting = result.waiting()
    if as_json:
        print(json.dumps({"store": str(store), "dossiers": len(result.dossiers), "hits": result.screening.height,
                          "ratings": {r.dossier_id: r.rating for r in result.ratings},
                          "transitions": [t.payload() for t in result.made], "waiting": waiting}))
    else:
        print(f"{store}: {len(result.dossiers)} dossier(s) screened and rated on {day}; "
              f"{result.screening.height} screening hit(s); {len(result.made)} case transition(s) made; "
              f"{len(waiting)} case(s) waiting for a decision")
        for t in result.made:
            print(f"  {t.case_id}: {t.from_state or '-'} -> {t.to_state}: {t.reason}")
    return 0


def run_kyc_cases(*, as_json: bool = False) -> int:
    """The case book: each case's state and last transition."""
    from emp_core.compliance.kyc import read_cases

    book = read_cases(_store())
    last = {t.case_id: t for t in book.transitions}
    if as_json:
        print(json.dumps({c: t.payload() for c, t in sorted(last.items())}))
    else:
        for c, t in sorted(last.items()):
            print(f"{c:<12} {t.to_state:<10} {t.at:%Y-%m-%d %H:%M} {t.actor}: {t.reason}")
    return 0


def run_kyc_decide(*, case_id: str, to: str, by: str, reason: str, as_json: bool = False) -> int:
    """A person's decision on a case (audited); the case rules refuse what they forbid (exit 2)."""
    from emp_core.compliance.kyc import decide

    t = decide(_store(), case_id, to, actor=by, reason=reason)
    print(json.dumps(t.payload()) if as_json else f"case {case_id}: {t.from_state} -> {t.to_state} by {t.actor}")
    return 0

"""The audit trail's hash chain (emp_core/compliance/audit.py): entries hashed as documented (checked with
hashlib directly), and every kind of tampering (an edit, a deletion, an insertion, a reordering, a forged
re-chain, the end cut off) found and the first bad entry named, over many random logs and tamperings."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime, timedelta, timezone

import polars as pl
import pytest

from emp_core.compliance.audit import COLUMNS, GENESIS, AuditError, canonical, chain, timestamp, verify, verify_frame

NOW = datetime(2026, 11, 27, 18, 0, 0, 123456, tzinfo=UTC)


def events(n: int, rng: random.Random) -> list[tuple[str, object]]:
    kinds = ("risk.decision", "order", "execution", "compliance.breach", "kyc.case_transition")
    return [(rng.choice(kinds), {"i": i, "value": rng.random(), "text": rng.choice(["a|b", "é", "x\ny", "", "{"])})
            for i in range(n)]


def columns(entries) -> list[list]:
    return [[getattr(e, c) for e in entries] for c in ("seq", "ts", "kind", "payload", "prev_hash", "hash")]


def frame(rows: list[list]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"seq": pl.Int64} | dict.fromkeys(COLUMNS[1:], pl.String), orient="row")


def check(rows: list[list], witness=None):
    return verify(*(list(c) for c in zip(*rows, strict=True)) if rows else [[]] * 6, witness=witness)


def test_entries_are_hashed_as_documented_and_linked():
    entries = chain([("order", {"b": 2, "a": [1.5, None]}), ("execution", {"z": "é"})], head=None, now=NOW)
    assert [e.seq for e in entries] == [1, 2] and entries[0].prev_hash == GENESIS == "0" * 64
    assert entries[0].ts == "2026-11-27T18:00:00.123456Z" and entries[0].payload == '{"a":[1.5,null],"b":2}'
    for e in entries:
        text = f"{e.seq}|{e.ts}|{e.kind}|{e.prev_hash}|{e.payload}".encode()
        assert e.hash == hashlib.sha256(text).hexdigest()
    assert entries[1].prev_hash == entries[0].hash
    more = chain([("order", {})], head=(2, entries[1].hash), now=NOW)  # appended after a head
    assert (more[0].seq, more[0].prev_hash) == (3, entries[1].hash)


def test_payloads_are_canonical_json_and_bad_entries_are_refused():
    assert canonical({"b": 1, "a": {"d": 2, "c": "é"}}) == '{"a":{"c":"é","d":2},"b":1}'
    assert canonical({"t": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)}) == '{"t":"2026-01-02T03:04:05+00:00"}'
    assert chain([("order", '{"a":1}')], head=None, now=NOW)[0].payload == '{"a":1}'  # canonical text kept
    assert chain([("order", '{"a": 1}')], head=None, now=NOW)[0].payload == '"{\\"a\\": 1}"'  # else a string
    with pytest.raises(AuditError, match="not JSON"):
        canonical({"x": float("nan")})
    with pytest.raises(AuditError, match="not JSON"):
        canonical({"x": object()})
    for kind in ("Order", "risk decision", "", "a|b", "a..b", "order."):
        with pytest.raises(AuditError, match="audit kind"):
            chain([(kind, {})], head=None, now=NOW)
    with pytest.raises(AuditError, match="not UTC"):
        timestamp(datetime(2026, 1, 1))
    with pytest.raises(AuditError, match="not UTC"):
        timestamp(datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=1))))


def test_an_untampered_log_verifies_and_gives_its_head():
    rng = random.Random(1)
    entries = chain(events(50, rng), head=None, now=NOW)
    result = verify(*columns(entries))
    assert result.ok and (result.entries, result.head_seq, result.head_hash) == (50, 50, entries[-1].hash)
    empty = verify([], [], [], [], [], [])
    assert empty.ok and empty.empty and (empty.entries, empty.head_seq, empty.head_hash) == (0, 0, GENESIS)
    assert not result.empty
    assert verify(*columns(entries), witness=(50, entries[-1].hash)).ok
    assert verify(*columns(entries), witness=(20, entries[19].hash)).ok
    rows = [list(r) for r in zip(*columns(entries), strict=True)]
    assert verify_frame(frame(rows)) == result and verify_frame(frame([])) == empty


def _tamper(kind: str, rows: list[list], rng: random.Random) -> int:  # noqa: PLR0911, PLR0912
    """Tamper with ``rows`` (each [seq, ts, kind, payload, prev_hash, hash]) in place; the first entry the
    verification must name."""
    n = len(rows)
    i = rng.randrange(1, n - 1)
    if kind == "edit_payload":
        rows[i][3] = canonical({"forged": rng.random()})
        return rows[i][0]
    if kind == "edit_ts":
        rows[i][1] = "2020-01-01T00:00:00.000000Z"
        return rows[i][0]
    if kind == "edit_kind":
        rows[i][2] = "order" if rows[i][2] != "order" else "execution"
        return rows[i][0]
    if kind == "edit_prev_hash":  # the stored link alone (the hash is over the verified previous hash)
        rows[i][4] = "a" * 64
        return rows[i][0]
    if kind == "edit_and_rehash":  # the forger recomputes the edited entry's hash: the next link breaks
        rows[i][3] = canonical({"forged": 1})
        rows[i][5] = hashlib.sha256(f"{rows[i][0]}|{rows[i][1]}|{rows[i][2]}|{rows[i][4]}|{rows[i][3]}".encode()
                                    ).hexdigest()
        return rows[i + 1][0]
    if kind == "delete":
        del rows[i]
        return i + 2  # the entry after the deleted one now stands at position i
    if kind == "delete_first":
        del rows[0]
        return 2
    if kind == "insert":  # a forged entry with the next seq, the rest renumbered
        forged = [rows[i][0], NOW.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "order", "{}", rows[i][4], "f" * 64]
        rows.insert(i, forged)
        for k in range(i + 1, len(rows)):
            rows[k][0] += 1
        return rows[i][0]
    if kind == "swap_seq":  # two entries exchange their numbers (read back in seq order: reordered)
        j = i + 1
        rows[i][0], rows[j][0] = rows[j][0], rows[i][0]
        rows[i], rows[j] = rows[j], rows[i]
        return rows[i][0]
    if kind == "reorder_renumbered":  # moved, and the numbers rewritten to look contiguous
        j = rng.randrange(i + 1, n)
        moved = rows.pop(j)
        rows.insert(i, moved)
        for k, r in enumerate(rows):
            r[0] = k + 1
        return i + 1
    if kind == "separator_shift":  # a field edited to hold the separator, its hash recomputed
        rows[i][2] = rows[i][2] + "|x"
        rows[i][5] = hashlib.sha256(f"{rows[i][0]}|{rows[i][1]}|{rows[i][2]}|{rows[i][4]}|{rows[i][3]}".encode()
                                    ).hexdigest()
        return rows[i][0]
    raise AssertionError(kind)


TAMPERINGS = ("edit_payload", "edit_ts", "edit_kind", "edit_prev_hash", "edit_and_rehash", "delete", "delete_first",
              "insert", "swap_seq", "reorder_renumbered", "separator_shift")


@pytest.mark.parametrize("kind", TAMPERINGS)
def test_every_tampering_is_found_and_the_first_bad_entry_named(kind):
    rng = random.Random(TAMPERINGS.index(kind))
    for _ in range(40):
        entries = chain(events(rng.randrange(5, 60), rng), head=None, now=NOW)
        rows = [list(r) for r in zip(*columns(entries), strict=True)]
        first_bad = _tamper(kind, rows, rng)
        result = check(rows)
        assert not result.ok, kind
        assert result.bad_seq == first_bad, (kind, result.problem)
        assert result.head_seq is None and str(result.bad_seq) in result.problem
        assert verify_frame(frame(rows)) == result  # the column-wise verification: the same verdict


def test_a_log_rechained_after_an_edit_passes_alone_and_fails_against_an_earlier_witness():
    """Rewriting every hash from the edit on leaves a valid chain: only the head an earlier verification saw
    (kept outside the log) shows it; so does the end cut off."""
    rng = random.Random(7)
    entries = chain(events(30, rng), head=None, now=NOW)
    witness = (30, entries[-1].hash)
    forged = entries[:10] + chain([("order", {"forged": True})] + [(e.kind, json.loads(e.payload))
                                                                    for e in entries[11:]],
                                  head=(10, entries[9].hash), now=NOW)
    assert verify(*columns(forged)).ok
    bad = verify(*columns(forged), witness=witness)
    assert not bad.ok and bad.bad_seq == 30 and "changed" in bad.problem
    forged_rows = [list(r) for r in zip(*columns(forged), strict=True)]
    assert verify_frame(frame(forged_rows), witness=witness) == bad
    cut = verify(*columns(entries[:25]), witness=witness)
    assert not cut.ok and cut.bad_seq == 30 and "cut off" in cut.problem

"""The audit trail: an append-only, hash-chained log of every risk decision, compliance breach, order,
execution and case transition.

Each entry carries ``seq`` (1, 2, ... with no gap), ``ts`` (UTC, ISO 8601 with microseconds and a ``Z``),
``kind`` (``risk.decision``, ``order``, ...), ``payload`` (canonical JSON text: keys sorted, no spaces), the
hash of the entry before it (``prev_hash``; 64 zeros before the first) and its own ``hash``: SHA-256 (hex) of
the UTF-8 text ``seq|ts|kind|prev_hash|payload``. Only the payload, last, is free text: ``seq`` is a number,
``prev_hash`` the verified hash before (hex), and :func:`verify` checks that ``kind`` and ``ts`` hold no ``|``
(the one edit that keeps the hashed text: a field boundary moved), so the text says where each field ends; a SQL
engine computes the same hash (``sha256(seq || '|' || ...)``) to verify a large log where it is stored.
Editing any field of an entry changes its hash; deleting, inserting or reordering entries breaks ``seq`` or
the ``prev_hash`` link of the entry after the change; :func:`verify` names the first bad entry.

What a chain alone cannot show is its end cut off (the last entries deleted, the rest intact): for that a
verification records the head it saw (seq and hash) somewhere the log's writer does not control (the Dagster
event log, a file elsewhere), and the next verification is given it as ``witness``: the witnessed entry must
still be there with the same hash.

This module is the chain's arithmetic, on plain rows; :mod:`emp_core.compliance.audit_store` keeps the log
in the tier's store (table ``audit.log``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from emp_core.errors import EmpError

GENESIS = "0" * 64
COLUMNS = ("seq", "ts", "kind", "payload", "prev_hash", "hash")
_KIND = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")


class AuditError(EmpError):
    """An entry that cannot be appended (a bad kind, a payload that is not JSON, a time that is not UTC)."""


def canonical(payload: Mapping | Sequence | str | float | None) -> str:
    """The payload as canonical JSON text: keys sorted, no whitespace, UTF-8 kept; datetimes in ISO form.
    Refuses NaN and infinities (not JSON)."""
    try:
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                          default=_jsonable)
    except (TypeError, ValueError) as exc:
        raise AuditError(f"the payload is not JSON: {exc}") from None


def _jsonable(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON")


def timestamp(ts: datetime) -> str:
    """``ts`` as the log writes it: UTC, microseconds, ``Z``. A naive or non-UTC time is refused."""
    if ts.tzinfo is None or ts.utcoffset() != UTC.utcoffset(None):
        raise AuditError(f"audit time {ts!r} is not UTC")
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_hash(seq: int, ts: str, kind: str, payload: str, prev_hash: str) -> str:
    """The entry's SHA-256 (hex) of the UTF-8 text ``seq|ts|kind|prev_hash|payload`` (module docstring)."""
    return hashlib.sha256(f"{seq}|{ts}|{kind}|{prev_hash}|{payload}".encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    seq: int
    ts: str
    kind: str
    payload: str
    prev_hash: str
    hash: str


def chain(events: Iterable[tuple[str, object]], *, head: tuple[int, str] | None, now: datetime) -> list[Entry]:
    """The entries for ``events`` ((kind, payload) pairs), appended after ``head`` ((seq, hash) of the last
    entry, None for an empty log), all stamped ``now``."""
    seq, prev = head if head is not None else (0, GENESIS)
    ts = timestamp(now)
    out = []
    for kind, payload in events:
        if not isinstance(kind, str) or not _KIND.fullmatch(kind):
            raise AuditError(f"audit kind {kind!r}: lower-case words joined by dots (e.g. risk.decision)")
        text = payload if isinstance(payload, str) and _is_canonical(payload) else canonical(payload)
        seq += 1
        digest = entry_hash(seq, ts, kind, text, prev)
        out.append(Entry(seq, ts, kind, text, prev, digest))
        prev = digest
    return out


def _is_canonical(text: str) -> bool:
    try:
        return canonical(json.loads(text)) == text
    except (ValueError, AuditError):
        return False


@dataclass(frozen=True)
class Verification:
    """What :func:`verify` found: ``ok``; the entries read; the head (last seq and hash) when ``ok``; else the
    first bad entry's seq and what is wrong with it.

    An empty log verifies (nothing in it contradicts the chain) with ``entries == 0``, ``head_seq == 0`` and
    ``head_hash == GENESIS``: :attr:`empty` says so; whether an empty log is acceptable (a witness from an
    earlier verification makes it fail) is the caller's policy."""

    ok: bool
    entries: int
    head_seq: int | None
    head_hash: str | None
    bad_seq: int | None = None
    problem: str | None = None

    @property
    def empty(self) -> bool:
        """No entry was read (an intact empty log, or a log whose every entry is gone)."""
        return self.entries == 0

    def as_dict(self) -> dict:
        return asdict(self)


def verify(seqs: Sequence[int], ts: Sequence[str], kinds: Sequence[str], payloads: Sequence[str],
           prev_hashes: Sequence[str], hashes: Sequence[str], *,
           witness: tuple[int, str] | None = None) -> Verification:
    """Check the chain given as columns in ``seq`` order (as stored: the caller orders by seq). The first
    problem found, in order: a seq that is not the one after the previous (an entry deleted, inserted or moved),
    a prev_hash that is not the previous entry's hash (inserted, deleted or reordered), a hash that does not
    match the entry (edited); and, with ``witness`` (seq, hash) from an earlier verification,
    that entry missing or changed (the end cut off)."""
    n = len(seqs)
    if not (len(ts) == len(kinds) == len(payloads) == len(prev_hashes) == len(hashes) == n):
        raise AuditError("verify: the columns differ in length")
    expected_seq, prev = 1, GENESIS
    sha = hashlib.sha256
    for i in range(n):
        seq, h = seqs[i], hashes[i]
        if seq != expected_seq:
            what = ("missing" if seq > expected_seq else "repeated or out of order")
            return Verification(False, n, None, None, seq,
                                f"entry {seq} follows entry {expected_seq - 1}: entries {what} (deleted, "
                                "inserted or reordered)")
        if prev_hashes[i] != prev:
            return Verification(False, n, None, None, seq,
                                f"entry {seq}: its prev_hash is not entry {seq - 1}'s hash (an entry before it "
                                "was inserted, deleted, reordered or edited)")
        if sha(f"{seq}|{ts[i]}|{kinds[i]}|{prev}|{payloads[i]}".encode()).hexdigest() != h:
            return Verification(False, n, None, None, seq, f"entry {seq}: its hash does not match its content "
                                "(edited)")
        if "|" in kinds[i] or "|" in ts[i]:  # the same text with a field boundary moved: hash and links hold
            return Verification(False, n, None, None, seq, f"entry {seq}: a field holds the separator | (edited)")
        prev = h
        expected_seq = seq + 1
    problem = _witness_problem(witness, n, lambda seq: hashes[seq - 1])
    if problem is not None:
        return Verification(False, n, None, None, witness[0], problem)
    return Verification(True, n, seqs[-1] if n else 0, prev if n else GENESIS)


def verify_frame(log, *, witness: tuple[int, str] | None = None) -> Verification:
    """:func:`verify` for a log held as a Polars frame (the columns of :data:`COLUMNS`), the fast way:
    :func:`entry_checks` then :func:`verdict`."""
    return verdict(entry_checks(log), witness=witness)


def entry_checks(log):
    """The checks that need one entry only, for a frame of log entries in any order (a batch of a larger log):
    ``seq``, ``prev_hash``, ``hash``, ``hash_ok`` (the hash of ``seq|ts|kind|prev_hash|payload``, SHA-256 over
    the whole column in Rust: polars-hash, on every core) and ``format_ok`` (no ``|`` in kind or ts).

    The text is built from the entry's own stored ``prev_hash``; :func:`verify` builds it from the verified hash
    before. They agree where it matters: :func:`verdict` checks the link (``prev_hash`` is the previous entry's
    hash) first, and up to the first bad entry the previous stored hash is the verified one."""
    import polars as pl
    import polars_hash  # noqa: F401 - registers the chash namespace

    text = pl.concat_str([pl.col("seq").cast(pl.String), "ts", "kind", "prev_hash", "payload"], separator="|")
    return log.select(  # a null anywhere (a table without NOT NULL) fails its check, as in verify
        "seq", "prev_hash", "hash",
        (text.chash.sha2_256() == pl.col("hash")).fill_null(False).alias("hash_ok"),
        ~(pl.col("kind").str.contains("|", literal=True) | pl.col("ts").str.contains("|", literal=True))
        .fill_null(True).alias("format_ok"))


def verdict(checks, *, witness: tuple[int, str] | None = None) -> Verification:
    """The verification of a whole log from its :func:`entry_checks` (batches concatenated, any order): in
    seq order, seq contiguity and the links added, the first bad entry named as :func:`verify` names it."""
    import polars as pl

    if not checks["seq"].is_sorted():  # batches read in parallel may come out of order
        checks = checks.sort("seq", maintain_order=True)
    n = checks.height
    if n == 0:
        problem = _witness_problem(witness, 0, None)
        return (Verification(False, 0, None, None, witness[0], problem) if problem
                else Verification(True, 0, 0, GENESIS))
    flags = checks.with_columns(
        (pl.col("seq") == pl.int_range(1, n + 1, dtype=pl.Int64)).fill_null(False).alias("seq_ok"),
        (pl.col("prev_hash") == pl.col("hash").shift(1, fill_value=GENESIS)).fill_null(False).alias("link_ok"))
    bad = ~(flags["seq_ok"] & flags["link_ok"] & flags["hash_ok"] & flags["format_ok"])
    if bad.any():
        i = int(bad.arg_true()[0])
        seq, pos = int(flags["seq"][i]), i + 1
        if not flags["seq_ok"][i]:
            what = "missing" if seq > pos else "repeated or out of order"
            problem = f"entry {seq} follows entry {pos - 1}: entries {what} (deleted, inserted or reordered)"
        elif not flags["link_ok"][i]:
            problem = (f"entry {seq}: its prev_hash is not entry {seq - 1}'s hash (an entry before it was "
                       "inserted, deleted, reordered or edited)")
        elif not flags["hash_ok"][i]:
            problem = f"entry {seq}: its hash does not match its content (edited)"
        else:
            problem = f"entry {seq}: a field holds the separator | (edited)"
        return Verification(False, n, None, None, seq, problem)
    problem = _witness_problem(witness, n, lambda seq: flags["hash"][seq - 1])
    if problem is not None:
        return Verification(False, n, None, None, witness[0], problem)
    return Verification(True, n, int(flags["seq"][-1]), flags["hash"][-1])


@dataclass(frozen=True)
class Span:
    """A run of entries as read in a row (one batch of a larger log, in storage order), summed up by
    :func:`span`: ``whole`` when, within it, the seqs count up by one, each prev_hash is the hash before and
    every entry's hash and format hold; its ends (first seq and prev_hash, last seq and hash) to join it to
    its neighbours; the witnessed entry's hash if it lies within."""

    entries: int
    whole: bool
    first_seq: int | None = None
    first_prev: str | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    witness_hash: str | None = None


def span(checks, *, witness_seq: int | None = None) -> Span:
    """The :class:`Span` of :func:`entry_checks` for entries in the order they were read."""
    import polars as pl

    n = checks.height
    if n == 0:
        return Span(0, True)
    first_seq = checks["seq"][0]
    if first_seq is None:
        return Span(n, False)
    whole = checks.select(
        ((pl.col("seq") - first_seq) == pl.int_range(0, n, dtype=pl.Int64)).fill_null(False).all()
        & (pl.col("prev_hash").slice(1) == pl.col("hash").slice(0, n - 1)).fill_null(False).all()
        & pl.col("hash_ok").all() & pl.col("format_ok").all()).item()
    last_seq = first_seq + n - 1
    inside = whole and witness_seq is not None and first_seq <= witness_seq <= last_seq
    return Span(n, bool(whole), first_seq, checks["prev_hash"][0], last_seq, checks["hash"][-1],
                checks["hash"][witness_seq - first_seq] if inside else None)


def join_spans(spans: Sequence[Span], *, witness: tuple[int, str] | None = None) -> Verification | None:
    """The verification of a whole log read as ``spans`` (in read order), when they show it whole: each span
    whole and taking up where the one before left off (the next seq, its prev_hash the hash before) from seq 1
    and GENESIS; the witness then checked. ``None`` when they do not: the caller then runs :func:`verdict`
    over the checks (in seq order), which names the first bad entry as :func:`verify` does. A log that reads
    whole in storage order is whole in seq order with the same head, so the two agree."""
    expected_seq, prev, n, w_hash = 1, GENESIS, 0, None
    for s in spans:
        if not s.whole:
            return None
        if s.entries == 0:
            continue
        if s.first_seq != expected_seq or s.first_prev != prev:
            return None
        expected_seq, prev, n = s.last_seq + 1, s.last_hash, n + s.entries
        w_hash = s.witness_hash if s.witness_hash is not None else w_hash
    problem = _witness_problem(witness, n, lambda seq: w_hash)
    if problem is not None:
        return Verification(False, n, None, None, witness[0], problem)
    return Verification(True, n, expected_seq - 1, prev)


def _witness_problem(witness: tuple[int, str] | None, entries: int, hash_of) -> str | None:
    """What is wrong with the witnessed entry in a whole log of ``entries`` entries (``hash_of(seq)``: the hash
    of the entry ``seq``), or None."""
    if witness is None or witness[0] < 1:
        return None
    w_seq, w_hash = witness
    if w_seq > entries:
        return (f"entry {w_seq}, seen by an earlier verification, is gone: the log ends at {entries} (its end "
                "was cut off)")
    if hash_of(w_seq) != w_hash:
        return f"entry {w_seq} is not the one an earlier verification saw (its hash changed)"
    return None

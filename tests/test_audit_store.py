"""The audit trail in the store (emp_core/compliance/audit_store.py): appends continue the chain, and the
store's one-pass SQL verification gives the same verdict as the reference (emp_core/compliance/audit.py) on
every kind of tampering, done to the table itself."""

from __future__ import annotations

import random

import polars as pl
import pytest

from emp_core.compliance import audit, audit_store
from emp_core.store.duckdb_store import DuckDBStore
from tests.test_audit_chain import NOW, TAMPERINGS, _tamper, columns, events


@pytest.fixture
def store(tier_store):
    return tier_store


def _tamper_sql(store, sql: str) -> None:
    if store.dialect == "duckdb":
        with store.connect() as con:
            con.execute(sql)
    else:
        with store.cursor() as cur:
            cur.execute(sql)


def _write(store, rows: list[list]) -> None:
    """Put ``rows`` into audit.log as they are (a tamperer with write access to the table)."""
    if store.dialect != "duckdb":
        with store.cursor() as cur:
            cur.execute("ALTER TABLE audit.log DROP CONSTRAINT IF EXISTS log_pkey")  # a tamperer's table
            cur.execute("DELETE FROM audit.log")
            with cur.copy(f"COPY audit.log ({', '.join(audit.COLUMNS)}) FROM STDIN") as copy:
                for r in rows:
                    copy.write_row(r)
        return
    frame = pl.DataFrame(rows, schema={"seq": pl.Int64} | dict.fromkeys(audit.COLUMNS[1:], pl.String), orient="row")
    with store.connect() as con:
        con.execute("DROP TABLE IF EXISTS audit.log")  # a tamperer's table: no key to stop a repeated seq
        con.execute("CREATE TABLE audit.log (seq BIGINT, ts VARCHAR, kind VARCHAR, payload VARCHAR, "
                    "prev_hash VARCHAR, hash VARCHAR)")
        con.register("rows_in", frame.to_arrow())
        con.execute("INSERT INTO audit.log SELECT * FROM rows_in")


def test_appends_continue_the_chain_and_verify(store):
    empty = audit_store.verify(store)  # an empty log is whole, and says it is empty
    assert empty.ok and empty.empty and (empty.entries, empty.head_seq, empty.head_hash) == (0, 0, audit.GENESIS)
    assert empty == audit.verify([], [], [], [], [], []) and audit_store.read(store).is_empty()
    assert audit_store.append(store, [("order", {"a": 1}), ("execution", {"b": "é|x"})], now=NOW) == [1, 2]
    assert audit_store.append(store, [("order", {"a": 2})]) == [3]
    log = audit_store.read(store)
    reference = audit.verify(*[log[c].to_list() for c in audit.COLUMNS])
    stored = audit_store.verify(store)
    assert stored == reference and stored.ok and stored.head_seq == 3 and stored.head_hash == log["hash"][2]
    assert log["prev_hash"][0] == audit.GENESIS and log["prev_hash"][2] == log["hash"][1]


def test_a_bad_event_appends_nothing(store):
    audit_store.append(store, [("order", {"a": 1})])
    with pytest.raises(audit.AuditError, match="audit kind"):
        audit_store.append(store, [("order", {"a": 2}), ("Bad Kind", {})])
    with pytest.raises(audit.AuditError, match="not JSON"):
        audit_store.append(store, [("order", {"x": float("inf")})])
    assert audit_store.read(store)["seq"].to_list() == [1]


@pytest.mark.parametrize("kind", TAMPERINGS)
def test_the_stores_verification_agrees_with_the_reference_on_every_tampering(store, kind):
    rng = random.Random(100 + TAMPERINGS.index(kind))
    for _ in range(8):
        entries = audit.chain(events(rng.randrange(5, 40), rng), head=None, now=NOW)
        rows = [list(r) for r in zip(*columns(entries), strict=True)]
        first_bad = _tamper(kind, rows, rng)
        _write(store, rows)
        reference = audit.verify(*(list(c) for c in zip(*rows, strict=True)))
        stored = audit_store.verify(store)
        assert not stored.ok and stored.bad_seq == first_bad == reference.bad_seq, (kind, stored, reference)
        assert stored.problem == reference.problem


def test_a_witness_finds_a_cut_off_end_in_the_store(store):
    audit_store.append(store, [("order", {"i": i}) for i in range(10)])
    head = audit_store.verify(store)
    _tamper_sql(store, "DELETE FROM audit.log WHERE seq > 7")
    assert audit_store.verify(store).ok  # a shorter chain is still a chain
    cut = audit_store.verify(store, witness=(head.head_seq, head.head_hash))
    assert not cut.ok and cut.bad_seq == 10 and "cut off" in cut.problem


def test_a_log_read_in_many_batches_gives_the_same_verdicts(tmp_path, monkeypatch):
    """DuckDB's log is verified part by part (rowid ranges read and hashed on several threads): with parts of
    7 entries, tamperings across part boundaries are named as the reference names them, and a witness inside
    any part is checked."""
    monkeypatch.setattr(audit_store, "BATCH", 7)
    store = DuckDBStore(tmp_path / "emp.duckdb")
    rng = random.Random(5)
    for kind in TAMPERINGS:
        entries = audit.chain(events(rng.randrange(20, 60), rng), head=None, now=NOW)
        rows = [list(r) for r in zip(*columns(entries), strict=True)]
        _write(store, rows)
        assert audit_store.verify(store) == audit.verify(*columns(entries))  # intact, many batches
        w = rng.randrange(1, len(entries) + 1)
        witness = (w, entries[w - 1].hash)
        assert audit_store.verify(store, witness=witness).ok
        changed = audit_store.verify(store, witness=(w, "0" * 64))
        assert changed == audit.verify(*columns(entries), witness=(w, "0" * 64)) and "changed" in changed.problem
        _tamper(kind, rows, rng)
        _write(store, rows)
        reference = audit.verify(*(list(c) for c in zip(*rows, strict=True)), witness=witness)
        assert audit_store.verify(store, witness=witness) == reference, kind


def test_a_whole_log_stored_out_of_order_or_with_gaps_in_rowid_verifies(tmp_path, monkeypatch):
    """The parts are rowid ranges: a whole chain stored in another order (read back sorted by seq) still
    verifies with its head, and rows deleted (gaps in rowid) are no entry lost to the parts."""
    monkeypatch.setattr(audit_store, "BATCH", 5)
    store = DuckDBStore(tmp_path / "emp.duckdb")
    rng = random.Random(11)
    entries = audit.chain(events(40, rng), head=None, now=NOW)
    rows = [list(r) for r in zip(*columns(entries), strict=True)]
    shuffled = rows[:]
    rng.shuffle(shuffled)
    _write(store, shuffled)
    assert audit_store.verify(store) == audit.verify(*columns(entries))
    _write(store, [["0", *r[1:]] for r in rows[:13]] + rows)  # 13 decoys, then the log: rowids 13..52
    _tamper_sql(store, "DELETE FROM audit.log WHERE seq = 0")
    assert audit_store.verify(store) == audit.verify(*columns(entries))
    _tamper_sql(store, "DELETE FROM audit.log WHERE seq > 30")
    assert audit_store.verify(store) == audit.verify(*columns(entries[:30]))


@pytest.mark.parametrize("column", ["hash", "prev_hash", "payload", "kind", "ts"])
def test_a_null_in_a_tamperers_table_is_found(store, column):
    """A table without NOT NULL: an entry's field set to NULL (its payload edited and its hash nulled, say)
    fails as in the reference, which compares the None; it is not skipped as an unknown."""
    entries = audit.chain(events(12, random.Random(3)), head=None, now=NOW)
    rows = [list(r) for r in zip(*columns(entries), strict=True)]
    rows[5][audit.COLUMNS.index(column)] = None
    if column == "hash":
        rows[5][3] = audit.canonical({"forged": True})
    if store.dialect != "duckdb":
        audit_store.read(store)  # the store's schema in place before the tamperer alters it
        _tamper_sql(store, f"ALTER TABLE audit.log ALTER COLUMN {column} DROP NOT NULL")
    _write(store, rows)
    reference = audit.verify(*(list(c) for c in zip(*rows, strict=True)))
    stored = audit_store.verify(store)
    assert not stored.ok and stored == reference and stored.bad_seq == 6, (stored, reference)

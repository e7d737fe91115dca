"""The audit trail in the tier's store: table ``audit.log`` (``seq``, ``ts``, ``kind``, ``payload``,
``prev_hash``, ``hash``: :mod:`emp_core.compliance.audit`), readable by any SQL client.

``append`` is the one writer: it reads the head and appends the new entries in one transaction under the
store's single-writer guard (DuckDB: the file lock, one process at a time; PostgreSQL: a table lock that
queues appenders and lets readers read), so two writers can never fork the chain. ``verify`` checks the whole
log where it is stored, in one SQL pass (the engine's own SHA-256, in parallel), with the same definition
and the same verdicts as :func:`emp_core.compliance.audit.verify` (the tests hold the two against each other
on tampered logs).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

import polars as pl

from emp_core.clock import utcnow
from emp_core.compliance.audit import COLUMNS, GENESIS, AuditError, Verification, chain

TABLE = "audit.log"
_DDL = ("CREATE TABLE IF NOT EXISTS audit.log (seq BIGINT PRIMARY KEY, ts VARCHAR NOT NULL, kind VARCHAR NOT NULL, "
        "payload VARCHAR NOT NULL, prev_hash VARCHAR NOT NULL, hash VARCHAR NOT NULL)")
_TS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"
_KIND = r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*"


def append(store, events: Iterable[tuple[str, object]], *, now: datetime | None = None) -> list[int]:
    """Append (kind, payload) events as one group; their seq numbers. Nothing is appended if any is bad."""
    events = list(events)
    if not events:
        return []
    now = now or utcnow().replace(tzinfo=UTC)  # the platform's clock is naive UTC
    if store.dialect == "duckdb":
        with store.connect() as con:
            con.execute("CREATE SCHEMA IF NOT EXISTS audit")
            con.execute(_DDL)
            con.execute("BEGIN TRANSACTION")
            try:
                head = con.execute("SELECT seq, hash FROM audit.log ORDER BY seq DESC LIMIT 1").fetchone()
                entries = chain(events, head=tuple(head) if head else None, now=now)
                con.register("audit_new", _frame(entries).to_arrow())
                con.execute("INSERT INTO audit.log SELECT * FROM audit_new")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
    else:
        with store.cursor() as cur:
            cur.execute("LOCK TABLE audit.log IN SHARE ROW EXCLUSIVE MODE")  # appenders queue; readers read
            cur.execute("SELECT seq, hash FROM audit.log ORDER BY seq DESC LIMIT 1")
            head = cur.fetchone()
            entries = chain(events, head=(int(head[0]), head[1]) if head else None, now=now)
            with cur.copy(f"COPY audit.log ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for e in entries:
                    copy.write_row((e.seq, e.ts, e.kind, e.payload, e.prev_hash, e.hash))
    return [e.seq for e in entries]


def _frame(entries) -> pl.DataFrame:
    return pl.DataFrame({c: [getattr(e, c) for e in entries] for c in COLUMNS},
                        schema={"seq": pl.Int64} | dict.fromkeys(COLUMNS[1:], pl.String))


def read(store) -> pl.DataFrame:
    """The whole log in seq order (empty, with its columns, before the first entry)."""
    if not _exists(store):
        return pl.DataFrame(schema={"seq": pl.Int64} | dict.fromkeys(COLUMNS[1:], pl.String))
    return store.query("SELECT seq, ts, kind, payload, prev_hash, hash FROM audit.log ORDER BY seq")


def _exists(store) -> bool:
    found = store.query("SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'audit' AND "
                        "table_name = 'log'")
    return bool(found["n"][0])


def _sha(store, text: str) -> str:
    if store.dialect == "duckdb":
        return f"sha256({text})"
    return f"encode(sha256(convert_to({text}, 'UTF8')), 'hex')"


def _matches(store, column: str, pattern: str) -> str:
    if store.dialect == "duckdb":
        return f"regexp_full_match({column}, '{pattern}')"
    return f"({column} ~ '^({pattern})$')"


def verify(store, *, witness: tuple[int, str] | None = None) -> Verification:
    """Verify ``audit.log`` where it is stored (module docstring): the first bad entry, as
    :func:`emp_core.compliance.audit.verify` names it, or the head."""
    if not _exists(store):
        rows = 0
        flags = None
    else:
        text = "seq::VARCHAR || '|' || ts || '|' || kind || '|' || prev || '|' || payload"
        sql = f"""
            WITH x AS (
                SELECT seq, ts, kind, payload, prev_hash, hash,
                       row_number() OVER (ORDER BY seq) AS pos,
                       coalesce(lag(hash) OVER (ORDER BY seq), '{GENESIS}') AS prev
                FROM audit.log),
            f AS (
                SELECT pos, seq, hash, seq = pos AS seq_ok, prev_hash = prev AS link_ok,
                       {_sha(store, text)} = hash AS hash_ok,
                       {_matches(store, 'kind', _KIND)} AND {_matches(store, 'ts', _TS)}
                           AND {_matches(store, 'hash', '[0-9a-f]{64}')} AS format_ok
                FROM x)
            SELECT (SELECT count(*) FROM f) AS n,
                   (SELECT max(seq) FROM f) AS last_seq,
                   (SELECT hash FROM f ORDER BY pos DESC LIMIT 1) AS last_hash,
                   b.pos, b.seq, b.seq_ok, b.link_ok, b.hash_ok
            FROM (SELECT 1) one LEFT JOIN (
                SELECT * FROM f WHERE NOT (seq_ok AND link_ok AND hash_ok AND format_ok) ORDER BY pos LIMIT 1) b
            ON true"""
        flags = store.query(sql.replace("seq::VARCHAR", "seq::VARCHAR" if store.dialect == "duckdb"
                                        else "seq::text")).row(0, named=True)
        rows = int(flags["n"])
    if flags is not None and flags["pos"] is not None:
        pos, seq = int(flags["pos"]), int(flags["seq"])
        if not flags["seq_ok"]:
            what = "missing" if seq > pos else "repeated or out of order"
            problem = f"entry {seq} follows entry {pos - 1}: entries {what} (deleted, inserted or reordered)"
        elif not flags["link_ok"]:
            problem = (f"entry {seq}: its prev_hash is not entry {seq - 1}'s hash (an entry before it was "
                       "inserted, deleted, reordered or edited)")
        elif not flags["hash_ok"]:
            problem = f"entry {seq}: its hash does not match its content (edited)"
        else:
            problem = f"entry {seq}: a malformed kind, time or hash (edited)"
        return Verification(False, rows, None, None, seq, problem)
    if witness is not None and witness[0] >= 1:
        w_seq, w_hash = witness
        found = store.query("SELECT hash FROM audit.log WHERE seq = $seq", {"seq": w_seq}) if rows else None
        if found is None or found.is_empty():
            return Verification(False, rows, None, None, w_seq,
                                f"entry {w_seq}, seen by an earlier verification, is gone: the log ends at {rows} "
                                "(its end was cut off)")
        if found["hash"][0] != w_hash:
            return Verification(False, rows, None, None, w_seq,
                                f"entry {w_seq} is not the one an earlier verification saw (its hash changed)")
    if not rows:
        return Verification(True, 0, 0, GENESIS)
    return Verification(True, rows, int(flags["last_seq"]), flags["last_hash"])


__all__ = ["AuditError", "append", "read", "verify"]

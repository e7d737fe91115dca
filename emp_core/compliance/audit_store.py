"""The audit trail in the tier's store: table ``audit.log`` (``seq``, ``ts``, ``kind``, ``payload``,
``prev_hash``, ``hash``: :mod:`emp_core.compliance.audit`), readable by any SQL client.

``append`` is the one writer: it reads the head and appends the new entries in one transaction under the
store's single-writer guard (DuckDB: the file lock, one process at a time; PostgreSQL: a table lock that
queues appenders and lets readers read), so two writers can never fork the chain. ``verify`` reads the log
and recomputes it column-wise (:func:`emp_core.compliance.audit.entry_checks` per part, joined by
:func:`~emp_core.compliance.audit.join_spans`, or :func:`~emp_core.compliance.audit.verdict` to name the first
bad entry; the tests hold it against the entry-by-entry reference on tampered logs). Recomputing in SQL was
tried and was slower: DuckDB's SHA-256 hashed at about a third of hashlib's rate here.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from datetime import UTC, datetime

import polars as pl

from emp_core.clock import utcnow
from emp_core.compliance.audit import COLUMNS, AuditError, Verification, chain, entry_checks, join_spans, span, verdict

TABLE = "audit.log"


def append(store, events: Iterable[tuple[str, object]], *, now: datetime | None = None) -> list[int]:
    """Append (kind, payload) events as one group; their seq numbers. Nothing is appended if any is bad."""
    events = list(events)
    if not events:
        return []
    now = now or utcnow().replace(tzinfo=UTC)  # the platform's clock is naive UTC
    if store.dialect == "duckdb":
        with store.connect() as con:
            con.execute("BEGIN TRANSACTION")  # the store's schema holds audit.log
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
    return pl.DataFrame({c: [getattr(e, c) for e in entries] for c in COLUMNS}, schema=SCHEMA)


SCHEMA = {"seq": pl.Int64} | dict.fromkeys(COLUMNS[1:], pl.String)


def read(store) -> pl.DataFrame:
    """The whole log in seq order; PostgreSQL's through COPY."""
    sql = f"SELECT {', '.join(COLUMNS)} FROM audit.log"  # sorted here: DuckDB's ORDER BY cost a third of a read
    log = store.query(sql) if store.dialect == "duckdb" else store.copy_out(sql, {}, SCHEMA)
    return log.sort("seq", maintain_order=True)


BATCH = 122_880  # entries per part: one DuckDB row group
WORKERS = max(2, min(4, os.cpu_count() or 2))
_SELECT = f"SELECT {', '.join(COLUMNS)} FROM audit.log"
# DuckDB settings for the read (all global to the database instance: set, then restored): one thread per query
# (each worker runs its own query; DuckDB's own pool only added hand-offs) and Arrow string views, which Polars
# takes over without a copy.
_READ_SETTINGS = {"threads": "1", "arrow_output_version": "'1.5'", "produce_arrow_string_view": "true"}


def verify(store, *, witness: tuple[int, str] | None = None) -> Verification:
    """Verify ``audit.log`` (module docstring): every entry's hash recomputed, then the order and the links;
    the first bad entry, or the head.

    DuckDB: the table is cut into parts by ``rowid`` (``BATCH`` rows each, the first and last open-ended, so
    every row is in exactly one), and ``WORKERS`` threads each read a part on their own cursor and hash it
    (:func:`~emp_core.compliance.audit.entry_checks`; DuckDB and Polars both release the GIL), keeping only
    its :func:`~emp_core.compliance.audit.span`: memory stays that of the parts in flight. The parts in
    rowid order joined show a whole log (the common case) with its head. When they do not (an entry bad, the
    table out of seq order), the checks are recomputed and kept, and
    :func:`~emp_core.compliance.audit.verdict` names the first bad entry as the reference does. The reads
    are one snapshot: this connection holds the store's lock (in-process writers wait on it) and the database
    file (no other process can open it) until the verification ends.

    PostgreSQL: the log is read whole, by COPY."""
    if store.dialect != "duckdb":
        return verdict(entry_checks(read(store)), witness=witness)
    with store.connect() as con:
        saved = {name: con.execute("SELECT current_setting(?)", [name]).fetchone()[0] for name in _READ_SETTINGS}
        try:
            for name, value in _READ_SETTINGS.items():
                con.execute(f"SET {name} = {value}")
            top = con.execute("SELECT max(rowid) FROM audit.log").fetchone()[0]
            bounds = list(range(BATCH, (top or 0) + 1, BATCH))
            parts = [(lo, hi) for lo, hi in zip([None, *bounds], [*bounds, None], strict=True)]
            w_seq = witness[0] if witness is not None else None
            result = join_spans(_each_part(con, parts, lambda checks: span(checks, witness_seq=w_seq)),
                                witness=witness)
            if result is None:  # not whole: every entry's checks, for the first bad one in seq order
                result = verdict(pl.concat(_each_part(con, parts, lambda checks: checks)), witness=witness)
        finally:
            for name, value in saved.items():
                con.execute(f"SET {name} = {_literal(value)}")
    return result


def _literal(value) -> str:
    return str(value).lower() if isinstance(value, bool) else f"'{value}'" if isinstance(value, str) else str(value)


def _each_part(con, parts: list[tuple[int | None, int | None]], keep) -> list:
    """``keep(entry_checks(part))`` for each rowid range in ``parts``, in that order, by ``WORKERS`` threads."""
    out: list = [None] * len(parts)
    todo = iter(range(len(parts)))
    guard = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with con.cursor() as cur:
                while not errors:
                    with guard:
                        i = next(todo, None)
                    if i is None:
                        return
                    lo, hi = parts[i]
                    where = " AND ".join([f"rowid >= {lo}"] * (lo is not None) + [f"rowid < {hi}"] * (hi is not None))
                    # the relation API's to_arrow_table: ~25% less CPU than a streamed reader here (no buffered copy)
                    table = cur.sql(_SELECT + (f" WHERE {where}" if where else "")).to_arrow_table(16_384)
                    out[i] = keep(entry_checks(pl.from_arrow(table)))
        except BaseException as exc:  # handed over, raised on the verifying thread
            errors.append(exc)

    threads = [threading.Thread(target=work, name=f"audit-verify-{k}", daemon=True)
               for k in range(min(WORKERS, len(parts)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return out


__all__ = ["AuditError", "append", "read", "verify"]

"""The audit trail in the tier's store: table ``audit.log`` (``seq``, ``ts``, ``kind``, ``payload``,
``prev_hash``, ``hash``: :mod:`emp_core.compliance.audit`), readable by any SQL client.

``append`` is the one writer: it reads the head and appends the new entries in one transaction under the
store's single-writer guard (DuckDB: the file lock, one process at a time; PostgreSQL: a table lock that
queues appenders and lets readers read), so two writers can never fork the chain. ``verify`` reads the log
and recomputes it column-wise (:func:`emp_core.compliance.audit.entry_checks` per batch, then
:func:`~emp_core.compliance.audit.verdict`; the tests hold it against the entry-by-entry reference on tampered
logs). Recomputing in SQL was tried and was slower: DuckDB's SHA-256 hashed at about a third of hashlib's
rate here.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable
from datetime import UTC, datetime

import polars as pl

from emp_core.clock import utcnow
from emp_core.compliance.audit import COLUMNS, AuditError, Verification, chain, entry_checks, verdict

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


BATCH = 100_000


def verify(store, *, witness: tuple[int, str] | None = None) -> Verification:
    """Verify ``audit.log`` (module docstring): every entry's hash recomputed, then the order and the links;
    the first bad entry, or the head. DuckDB's log is read in batches on one thread while the batch before is
    hashed on this one (each side in native code, so the two overlap); PostgreSQL's is read whole, by COPY."""
    if store.dialect != "duckdb":
        return verdict(entry_checks(read(store)), witness=witness)
    batches: queue.Queue = queue.Queue(maxsize=4)

    def produce() -> None:
        try:
            with store.connect() as con:
                reader = con.execute(f"SELECT {', '.join(COLUMNS)} FROM audit.log").to_arrow_reader(BATCH)
                for batch in reader:
                    batches.put(batch)
        except BaseException as exc:  # handed over, raised on the verifying thread
            batches.put(exc)
        batches.put(None)

    reader = threading.Thread(target=produce, name="audit-read", daemon=True)
    reader.start()
    parts = []
    while (batch := batches.get()) is not None:
        if isinstance(batch, BaseException):
            reader.join()
            raise batch
        parts.append(entry_checks(pl.from_arrow(batch)))
    reader.join()
    return verdict(pl.concat(parts) if parts else entry_checks(pl.DataFrame(schema=SCHEMA)), witness=witness)


__all__ = ["AuditError", "append", "read", "verify"]

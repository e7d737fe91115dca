"""``emp db`` (the institutional store: ``migrate``, ``catch-up``) and ``emp status``."""

from __future__ import annotations

import json
import logging

from emp_core.config import settings
from emp_core.errors import EmpError

log = logging.getLogger("emp")


def run_db_migrate(url: str | None = None, *, as_json: bool = False) -> int:
    """Apply the versioned DDL of ``sql/postgres/`` to the database of ``url`` (default ``$EMP_PG_URL``)."""
    from emp_core.store.migrations import migrate

    report = migrate(url or settings().pg_url)
    if as_json:
        print(json.dumps(report.as_dict()))
        return 0
    if report.created_database:
        log.info("db migrate: created the database (%s)", report.database)
    print(f"{report.database}: applied {len(report.applied)} migration(s)"
          + (f" ({', '.join(map(str, report.applied))})" if report.applied else "")
          + f", {len(report.already)} already applied, in {report.seconds:.2f}s")
    return 0


def run_status(*, as_json: bool = False) -> int:
    """Print the platform's health (:mod:`emp_core.health`); 0 when every item is ok."""
    from emp_core.health import evaluate, table
    from emp_core.store import open_store

    cfg = settings()
    store = open_store(cfg)
    if cfg.tier == "embedded" and not store.exists():
        raise EmpError(f"{store.location}: no store yet; run `emp demo` or `emp ingest` first")
    items = evaluate(store, cfg)
    ok = all(h.passed for h in items)
    if as_json:
        print(json.dumps({"tier": cfg.tier, "store": store.location, "ok": ok,
                          "items": [h.as_dict() for h in items]}, default=str))
    else:
        print(f"tier {cfg.tier}, store {store.location}")
        print(table(items))
    return 0 if ok else 1


def run_catch_up(*, as_json: bool = False, keep_primary=(), force=()) -> int:
    """Replay the failover log onto PostgreSQL and check parity (:func:`emp_core.store.failover.catch_up`)."""
    from emp_core.store import DuckDBStore
    from emp_core.store.failover import catch_up, invalidate_cache
    from emp_core.store.postgres_store import PostgresStore

    cfg = settings()
    fallback = cfg.home / "failover.duckdb"
    if not fallback.exists():
        print(json.dumps({"pending_before": 0, "replayed": [], "parity": True}) if as_json
              else f"{fallback}: no failover has happened here; nothing to catch up")
        return 0
    primary = PostgresStore(cfg.pg_url)
    try:
        report = catch_up(primary, DuckDBStore(fallback), keep_primary=keep_primary, force=force)
    finally:  # whatever was replayed before a failure also went behind the cache's back
        invalidate_cache(primary)
    if as_json:
        print(json.dumps(report.as_dict(), default=str))
    else:
        print(f"catch-up: {len(report.replayed)} write(s) replayed; parity {'holds' if report.parity else 'FAILED'}")
        for r in report.replayed:
            print(f"  #{r['seq']} {r['operation']} {r['target']} run {r['run_id']}: parity {r['parity']}"
                  + (f" ({r['note']})" if r.get("note") else ""))
    return 0 if report.parity else 1

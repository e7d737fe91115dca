"""``emp db``: the institutional store's schema (``emp db migrate``)."""

from __future__ import annotations

import json
import logging

from emp_core.config import settings

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

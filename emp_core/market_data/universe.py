"""The universe table: what the store holds per (dataset, symbol), for people and notebooks."""

from __future__ import annotations

import polars as pl

from emp_core.store import BAR_TABLES, DuckDBStore


def build_universe(store: DuckDBStore) -> pl.DataFrame:
    """One row per (dataset, symbol): first and last bar, bar count, rows ever quarantined, the run that
    wrote its latest bar and when that run finished."""
    bars = " UNION ALL ".join(
        f"SELECT '{t}' AS dataset, symbol, min(ts) AS first_ts, max(ts) AS last_ts, count(*) AS bars, "
        f"arg_max(run_id, ts) AS last_run_id FROM market.{t} GROUP BY symbol"
        for t in BAR_TABLES
    )
    return store.query(f"""
        WITH b AS ({bars}),
        q AS (SELECT dataset, symbol, count(*) AS quarantined FROM market.quarantine GROUP BY ALL),
        j AS (SELECT run_id, max(finished_at) AS last_ingested_at FROM market.ingest_journal GROUP BY run_id)
        SELECT b.dataset, b.symbol, b.first_ts, b.last_ts, b.bars, coalesce(q.quarantined, 0) AS quarantined,
               b.last_run_id, j.last_ingested_at
        FROM b LEFT JOIN q USING (dataset, symbol) LEFT JOIN j ON j.run_id = b.last_run_id
        ORDER BY b.dataset, b.symbol""")

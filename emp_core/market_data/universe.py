"""The universe table: what the store holds per (dataset, symbol), for people and notebooks."""

from __future__ import annotations

import polars as pl

from emp_core.store import BAR_TABLES, DuckDBStore


def build_universe(store: DuckDBStore) -> pl.DataFrame:
    """One row per (dataset, symbol): first and last bar, bar count, rows ever quarantined, the run that
    wrote its latest bar and when that run finished."""
    bars = " UNION ALL ".join(  # the run of the latest bar: the row at (symbol, max ts), one per symbol
        f"SELECT '{t}' AS dataset, s.symbol, s.first_ts, s.last_ts, s.bars, x.run_id AS last_run_id "
        f"FROM (SELECT symbol, min(ts) AS first_ts, max(ts) AS last_ts, count(*) AS bars FROM market.{t} "
        f"GROUP BY symbol) s JOIN market.{t} x ON x.symbol = s.symbol AND x.ts = s.last_ts"
        for t in BAR_TABLES
    )
    return store.query(f"""
        WITH b AS ({bars}),
        q AS (SELECT dataset, symbol, count(*) AS quarantined FROM market.quarantine GROUP BY dataset, symbol),
        j AS (SELECT run_id, max(finished_at) AS last_ingested_at FROM market.ingest_journal GROUP BY run_id)
        SELECT b.dataset, b.symbol, b.first_ts, b.last_ts, b.bars, coalesce(q.quarantined, 0) AS quarantined,
               b.last_run_id, j.last_ingested_at
        FROM b LEFT JOIN q USING (dataset, symbol) LEFT JOIN j ON j.run_id = b.last_run_id
        ORDER BY b.dataset, b.symbol""")

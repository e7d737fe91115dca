-- The universe table of the embedded store (emp_core/store/duckdb_store.py): one row per dataset and
-- symbol, rebuilt by the universe asset.
CREATE TABLE IF NOT EXISTS market.universe (
    dataset text NOT NULL, symbol text NOT NULL, first_ts timestamp, last_ts timestamp, bars bigint,
    quarantined bigint, last_run_id text, last_ingested_at timestamp
);

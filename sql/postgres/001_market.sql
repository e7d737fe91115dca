-- Institutional tier (PostgreSQL): the same tables as the embedded DuckDB store
-- (emp_core/store/duckdb_store.py), with bars range-partitioned by time.
-- Idempotent: every statement can run again. Yearly partitions are created by
-- the institutional store's migration command as data arrives.
CREATE SCHEMA IF NOT EXISTS market;
CREATE SCHEMA IF NOT EXISTS macro;

CREATE TABLE IF NOT EXISTS market.bars_1d (
    symbol text NOT NULL, ts timestamp NOT NULL,
    open double precision NOT NULL, high double precision NOT NULL,
    low double precision NOT NULL, close double precision NOT NULL, volume double precision NOT NULL,
    source text NOT NULL, run_id text NOT NULL,
    PRIMARY KEY (symbol, ts)
) PARTITION BY RANGE (ts);

CREATE TABLE IF NOT EXISTS market.bars_1h (LIKE market.bars_1d INCLUDING ALL) PARTITION BY RANGE (ts);

CREATE TABLE IF NOT EXISTS market.quarantine (
    run_id text NOT NULL, dataset text NOT NULL, source text NOT NULL, input text NOT NULL,
    row_number bigint NOT NULL, symbol text, ts text, ts_utc timestamp, reason text NOT NULL,
    raw jsonb NOT NULL, quarantined_at timestamp NOT NULL
);

CREATE TABLE IF NOT EXISTS market.ingest_journal (
    run_id text NOT NULL, dataset text NOT NULL, partition_key text,
    window_start timestamp, window_end timestamp, source text NOT NULL, input text NOT NULL, symbols text,
    rows_in bigint NOT NULL, rows_stored bigint NOT NULL, rows_quarantined bigint NOT NULL,
    latest_ts timestamp, freshness_lag_bars bigint, status text NOT NULL, message text,
    started_at timestamp NOT NULL, finished_at timestamp NOT NULL
);

CREATE TABLE IF NOT EXISTS macro.series (
    series_id text NOT NULL, period_start date NOT NULL, period_end date NOT NULL, available_at date NOT NULL,
    value double precision NOT NULL, frequency text NOT NULL, source text NOT NULL, run_id text NOT NULL,
    PRIMARY KEY (series_id, period_start)
);

CREATE TABLE IF NOT EXISTS macro.treasury_curve (
    date date PRIMARY KEY, available_at date NOT NULL,
    m1 double precision, m3 double precision, m6 double precision, y1 double precision, y2 double precision,
    y3 double precision, y5 double precision, y7 double precision, y10 double precision,
    y20 double precision, y30 double precision, run_id text NOT NULL
);

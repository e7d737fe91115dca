-- The sensory and evolution schemas of the embedded store, and ops (the platform's own records).
-- sensory.*: one table per dimension and the fused signal, columns as emp_core/sensory/pipeline.py
-- table_columns() lays them out (a contract test holds this file to the code). Keyed by (dataset, symbol, ts):
-- the pipeline replaces a [start, end) window of one dataset at a time.
-- evolution.trials: the trial registry (emp_core/evolution/registry.py SCHEMA and KEY). The other evolution
-- tables are results each run replaces whole; the store creates them from their frames (SQLAlchemy Core).
CREATE SCHEMA IF NOT EXISTS sensory;
CREATE SCHEMA IF NOT EXISTS evolution;
CREATE SCHEMA IF NOT EXISTS ops;

CREATE TABLE IF NOT EXISTS sensory.why (
    dataset text NOT NULL,
    symbol text NOT NULL,
    ts timestamp NOT NULL,
    why_score double precision,
    why_confidence double precision,
    why_slope double precision,
    why_slope_change double precision,
    why_real_rate double precision,
    why_inflation_trend double precision,
    why_vol_regime double precision,
    run_id text NOT NULL,
    PRIMARY KEY (dataset, symbol, ts)
);

CREATE TABLE IF NOT EXISTS sensory.how (
    dataset text NOT NULL,
    symbol text NOT NULL,
    ts timestamp NOT NULL,
    how_score double precision,
    how_confidence double precision,
    how_amihud double precision,
    how_spread double precision,
    how_participation double precision,
    how_pressure double precision,
    run_id text NOT NULL,
    PRIMARY KEY (dataset, symbol, ts)
);

CREATE TABLE IF NOT EXISTS sensory.what (
    dataset text NOT NULL,
    symbol text NOT NULL,
    ts timestamp NOT NULL,
    what_score double precision,
    what_confidence double precision,
    what_trend_21 double precision,
    what_trend_63 double precision,
    what_trend_126 double precision,
    what_breakout double precision,
    run_id text NOT NULL,
    PRIMARY KEY (dataset, symbol, ts)
);

CREATE TABLE IF NOT EXISTS sensory.when (
    dataset text NOT NULL,
    symbol text NOT NULL,
    ts timestamp NOT NULL,
    when_score double precision,
    when_confidence double precision,
    when_weekday smallint,
    when_month_phase text,
    when_release_eve boolean,
    when_days_to_release bigint,
    when_t_weekday double precision,
    when_t_month_phase double precision,
    when_t_release_eve double precision,
    when_session text,
    when_t_session double precision,
    run_id text NOT NULL,
    PRIMARY KEY (dataset, symbol, ts)
);

CREATE TABLE IF NOT EXISTS sensory.anomaly (
    dataset text NOT NULL,
    symbol text NOT NULL,
    ts timestamp NOT NULL,
    anomaly_score double precision,
    anomaly_confidence double precision,
    anomaly_return_z double precision,
    anomaly_volume_z double precision,
    anomaly_gap_z double precision,
    anomaly_mahalanobis double precision,
    anomaly_flag boolean,
    anomaly_explanation text,
    run_id text NOT NULL,
    PRIMARY KEY (dataset, symbol, ts)
);

CREATE TABLE IF NOT EXISTS sensory.fused (
    dataset text NOT NULL,
    symbol text NOT NULL,
    ts timestamp NOT NULL,
    signal double precision,
    signal_confidence double precision,
    why_score double precision,
    why_confidence double precision,
    how_score double precision,
    how_confidence double precision,
    what_score double precision,
    what_confidence double precision,
    when_score double precision,
    when_confidence double precision,
    anomaly_score double precision,
    anomaly_confidence double precision,
    run_id text NOT NULL,
    PRIMARY KEY (dataset, symbol, ts)
);

CREATE TABLE IF NOT EXISTS evolution.trials (
    dataset text,
    dataset_version text,
    config_hash text,
    run_id text,
    window_id bigint,
    phase text,
    span_start timestamp,
    span_end timestamp,
    genome_hash text,
    costs text,
    w_why double precision,
    w_how double precision,
    w_what double precision,
    w_when double precision,
    w_anomaly double precision,
    entry double precision,
    exit double precision,
    min_confidence double precision,
    holding_period double precision,
    stop_loss double precision,
    take_profit double precision,
    position_size double precision,
    long_only boolean,
    sharpe_lb double precision,
    max_drawdown double precision,
    turnover double precision,
    trades bigint,
    n_bars bigint,
    ret_mean double precision,
    ret_std double precision,
    ret_skew double precision,
    ret_kurtosis double precision,
    sharpe_per_bar double precision,
    recorded_at timestamp,
    PRIMARY KEY (dataset, dataset_version, config_hash, window_id, phase, genome_hash)
);

CREATE INDEX IF NOT EXISTS quarantine_run ON market.quarantine (run_id);
CREATE INDEX IF NOT EXISTS ingest_journal_run ON market.ingest_journal (run_id);

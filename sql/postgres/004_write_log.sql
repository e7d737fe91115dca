-- Every write to a table the failover catch-up may replay into, stamped with the server's clock in the
-- write's own transaction (emp_core/store/postgres_store.py writes it; emp_core/store/failover.py reads it).
-- A catch-up refuses to replay an outage write over a scope that a write here touched later: the server's
-- clock orders writes from every host, which the hosts' own clocks cannot.
-- target: schema.table; symbols NULL: every symbol; ts_lo/ts_end NULL: unbounded ([ts_lo, ts_end)).
-- replay_of: '<fallback id>:<log seq>' when a catch-up wrote it; original_at: that outage write's time, on this
-- server's clock (the catch-up measures the host's offset), which is what orders it among the others.
CREATE TABLE IF NOT EXISTS ops.write_log (
    seq bigserial PRIMARY KEY,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    operation text NOT NULL,
    target text NOT NULL,
    run_id text,
    symbols text[],
    ts_lo timestamp,
    ts_end timestamp,
    replay_of text,
    original_at timestamptz
);
CREATE INDEX IF NOT EXISTS write_log_target ON ops.write_log (target, committed_at);

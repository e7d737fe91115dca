-- The failover catch-up's conflict test (emp_core/store/failover.py) looks up, under a table's write lock, the
-- stamps of a target later than a time: on the effective time of each stamp (a replay's original time, else
-- its commit stamp), which the (target, committed_at) index cannot serve.
CREATE INDEX IF NOT EXISTS write_log_target_at ON ops.write_log (target, (coalesce(original_at, committed_at)));
-- A catch-up finds whether a write was already applied by its replay tag.
CREATE INDEX IF NOT EXISTS write_log_replay_of ON ops.write_log (replay_of) WHERE replay_of IS NOT NULL;

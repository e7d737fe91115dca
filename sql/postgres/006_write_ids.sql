-- Every write through the failover store carries an id chosen before its first attempt (emp_core/store/
-- failover.py): the primary's own commit and a catch-up's replay of the same write share it, so a write whose
-- commit was acknowledged to nobody (the connection lost at COMMIT) is found applied, not applied twice.
-- dataset: the dataset of a feature-window replace, part of its scope.
ALTER TABLE ops.write_log ADD COLUMN IF NOT EXISTS write_id text;
ALTER TABLE ops.write_log ADD COLUMN IF NOT EXISTS dataset text;
CREATE INDEX IF NOT EXISTS write_log_write_id ON ops.write_log (write_id) WHERE write_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS write_log_committed ON ops.write_log (committed_at);

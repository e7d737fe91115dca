-- A write's stamp carries the server's clock at its COMMIT, not at its lock: a deferred constraint trigger
-- sets committed_at when the server processes the COMMIT (after a long COPY, and after a COMMIT held up on the
-- network reaches it). The failover catch-up orders outage writes against these times (emp_core/store/
-- failover.py): a write that took its lock before an outage write but committed after it is later.
-- A row inserted with a time of its own from well before its transaction (a hand-made or data-only restored
-- row: an hour or more) keeps it; any other is stamped at COMMIT, also when the server's clock stepped back a
-- little between BEGIN and the stamp.
CREATE OR REPLACE FUNCTION ops.write_log_commit_time() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.committed_at >= transaction_timestamp() - interval '1 hour' THEN
        UPDATE ops.write_log SET committed_at = clock_timestamp() WHERE seq = NEW.seq;
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS write_log_commit_time ON ops.write_log;
CREATE CONSTRAINT TRIGGER write_log_commit_time AFTER INSERT ON ops.write_log
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ops.write_log_commit_time();

-- The execution journal's high-water mark per FIX session (emp_core/execution/executor.py, "Every report
-- journaled"): the executor journals reports in groups, one commit per group, and writes here, in the same
-- transaction, the sequence number after the last report it holds. On restart it winds quickfix's expected
-- incoming number back to this one when quickfix's store is ahead of it (the reports in between were received
-- but not committed), and the venue resends them. store_epoch is the creation time of quickfix's store the
-- numbers count in (a sequence reset starts a new one): a mark from another epoch says nothing of this one.
CREATE TABLE IF NOT EXISTS trading.journal_cursor (
    session text PRIMARY KEY,              -- the FIX session (SenderCompID->TargetCompID)
    store_epoch text NOT NULL,
    next_target_seq bigint NOT NULL CHECK (next_target_seq >= 1),
    updated_at timestamp NOT NULL
);

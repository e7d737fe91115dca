-- The audit trail (emp_core/compliance/audit.py, audit_store.py): an append-only, hash-chained log of every
-- risk decision, compliance breach, order, execution and case transition. hash = SHA-256 (hex) of the UTF-8
-- text seq|ts|kind|prev_hash|payload; prev_hash is the entry before's hash (64 zeros before the first).
-- `emp audit append` (and the platform's own steps, through audit_store.append) is the only writer;
-- `emp audit verify` recomputes the chain here, in one pass.
CREATE SCHEMA IF NOT EXISTS audit;

CREATE TABLE IF NOT EXISTS audit.log (
    seq bigint PRIMARY KEY,                -- 1, 2, ... with no gap
    ts text NOT NULL,                      -- UTC, ISO 8601 with microseconds and Z (hashed as written)
    kind text NOT NULL,                    -- risk.decision, order, execution, compliance.breach, ...
    payload text NOT NULL,                 -- canonical JSON text (keys sorted, no whitespace)
    prev_hash text NOT NULL,
    hash text NOT NULL
);

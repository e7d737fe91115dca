-- The order path of the institutional tier (emp_core/execution/outbox.py): risk-approved orders waiting for
-- the executor (the outbox), cancel requests, and the execution journal (every ExecutionReport received,
-- once: keyed by the venue session and its ExecID, so a resent report is not journaled twice).
CREATE SCHEMA IF NOT EXISTS trading;

CREATE TABLE IF NOT EXISTS trading.outbox (
    entry_id bigserial PRIMARY KEY,
    clordid text NOT NULL UNIQUE,          -- deterministic from idem_key: a restart never makes a second id
    idem_key text NOT NULL UNIQUE,         -- what the order is (strategy, symbol, bar, decision)
    created_at timestamp NOT NULL,
    strategy text NOT NULL,
    symbol text NOT NULL,
    side text NOT NULL CHECK (side IN ('buy', 'sell')),
    qty bigint NOT NULL CHECK (qty > 0),
    ord_type text NOT NULL CHECK (ord_type IN ('market', 'limit')),
    limit_price double precision,
    stop_price double precision,
    session text NOT NULL CHECK (session IN ('paper', 'live')),
    policy_version text NOT NULL,
    decision text NOT NULL,                -- the risk decision's rows, JSON
    state text NOT NULL DEFAULT 'approved' CHECK (state IN ('approved', 'sent')),
    sent_at timestamp,
    CHECK ((ord_type = 'limit') = (limit_price IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS outbox_to_send ON trading.outbox (entry_id) WHERE state = 'approved';

CREATE TABLE IF NOT EXISTS trading.cancels (
    cancel_id bigserial PRIMARY KEY,
    clordid text NOT NULL UNIQUE,          -- the cancel request's own ClOrdID: <order's>-C<n>
    orig_clordid text NOT NULL REFERENCES trading.outbox (clordid),
    created_at timestamp NOT NULL,
    state text NOT NULL DEFAULT 'requested' CHECK (state IN ('requested', 'sent')),
    sent_at timestamp
);
CREATE INDEX IF NOT EXISTS cancels_to_send ON trading.cancels (cancel_id) WHERE state = 'requested';

CREATE TABLE IF NOT EXISTS trading.executions (
    seq bigserial PRIMARY KEY,             -- the order the journal received reports in
    session text NOT NULL,                 -- the FIX session (SenderCompID->TargetCompID) it came on
    exec_id text NOT NULL,
    order_id text,
    clordid text NOT NULL,                 -- the message's ClOrdID (11): a cancel's own for a cancel's answer
    orig_clordid text,                     -- OrigClOrdID (41)
    order_clordid text NOT NULL,           -- the order it is about: 41 when there, else 11
    msg_type text NOT NULL,                -- 8 ExecutionReport, 9 OrderCancelReject
    exec_type text,
    ord_status text NOT NULL,
    symbol text,
    side text,
    order_qty double precision,
    last_qty double precision,
    last_px double precision,
    cum_qty double precision,
    leaves_qty double precision,
    avg_px double precision,
    reject_reason text,
    text text,
    transact_time timestamp,
    received_at timestamp NOT NULL,
    UNIQUE (session, exec_id)
);
CREATE INDEX IF NOT EXISTS executions_order ON trading.executions (order_clordid, seq);

-- The venue's drop copy of every ExecutionReport it sent, as received (reconciled against the journal): the
-- journal's shape (its seq numbers drawn from the journal's sequence: they only order each table's rows).
CREATE TABLE IF NOT EXISTS trading.dropcopy (LIKE trading.executions INCLUDING ALL);

-- 0007: the simulated chain's durable state. `chain_state` is its head (one
-- row: slot 0's Unix time in ms, the tip slot); `chain_txs` every
-- transaction it has seen, by signature (amounts: u128 as decimal TEXT;
-- `error`: JSON); `chain_pools` each pool's state (JSON, as the venues
-- encode it) and the cumulative flows of its landed swaps (u128 TEXT).
-- Same version as the PostgreSQL migration.
CREATE TABLE chain_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    genesis_ms  INTEGER NOT NULL,
    tip         INTEGER NOT NULL
);
CREATE TABLE chain_txs (
    signature       TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL,
    leg             INTEGER NOT NULL,
    venue           TEXT NOT NULL,
    token_in        TEXT NOT NULL,
    token_out       TEXT NOT NULL,
    amount_in       TEXT NOT NULL,
    min_amount_out  TEXT NOT NULL,
    blockhash       TEXT NOT NULL,
    last_valid_slot INTEGER NOT NULL,
    priority_fee    INTEGER NOT NULL,
    sent_slot       INTEGER NOT NULL,
    planned_slot    INTEGER,
    state           TEXT NOT NULL,
    landed_slot     INTEGER,
    amount_out      TEXT,
    error           TEXT,
    rebroadcasts    INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL
);
CREATE INDEX chain_txs_due ON chain_txs (planned_slot) WHERE state = 'pending';
CREATE INDEX chain_txs_order ON chain_txs (order_id);
CREATE INDEX chain_txs_landed ON chain_txs (landed_slot) WHERE landed_slot IS NOT NULL;
CREATE TABLE chain_pools (
    pool        TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    base_in     TEXT NOT NULL,
    base_out    TEXT NOT NULL,
    quote_in    TEXT NOT NULL,
    quote_out   TEXT NOT NULL,
    swaps       INTEGER NOT NULL
);

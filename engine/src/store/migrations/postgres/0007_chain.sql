-- 0007: the simulated chain's durable state. `chain_state` is its head (one
-- row: slot 0's Unix time in ms, the tip slot); `chain_txs` every
-- transaction it has seen, by signature; `chain_pools` each pool's state
-- (JSON text, as the venues encode it) and the cumulative flows of its
-- landed swaps. Amounts are u128 base units.
-- Same version as the SQLite migration.
CREATE TABLE chain_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    genesis_ms  BIGINT NOT NULL,
    tip         BIGINT NOT NULL
);
CREATE TABLE chain_txs (
    signature       TEXT PRIMARY KEY,
    order_id        UUID NOT NULL,
    leg             INTEGER NOT NULL,
    venue           TEXT NOT NULL,
    token_in        TEXT NOT NULL,
    token_out       TEXT NOT NULL,
    amount_in       NUMERIC(39, 0) NOT NULL,
    min_amount_out  NUMERIC(39, 0) NOT NULL,
    blockhash       TEXT NOT NULL,
    last_valid_slot BIGINT NOT NULL,
    priority_fee    BIGINT NOT NULL,
    sent_slot       BIGINT NOT NULL,
    planned_slot    BIGINT,
    state           TEXT NOT NULL,
    landed_slot     BIGINT,
    amount_out      NUMERIC(39, 0),
    error           JSONB,
    rebroadcasts    INTEGER NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX chain_txs_due ON chain_txs (planned_slot) WHERE state = 'pending';
CREATE INDEX chain_txs_order ON chain_txs (order_id);
CREATE INDEX chain_txs_landed ON chain_txs (landed_slot) WHERE landed_slot IS NOT NULL;
CREATE TABLE chain_pools (
    pool        TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    base_in     NUMERIC(39, 0) NOT NULL,
    base_out    NUMERIC(39, 0) NOT NULL,
    quote_in    NUMERIC(39, 0) NOT NULL,
    quote_out   NUMERIC(39, 0) NOT NULL,
    swaps       BIGINT NOT NULL
);

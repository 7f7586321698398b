-- 0001: orders, their numbered events, and the venue's execution ledger.
-- Same version as the SQLite migration. Amounts are integer base units in
-- NUMERIC(39, 0) (fits u128), never floats.
CREATE TABLE orders (
    id              UUID PRIMARY KEY,
    created_seq     BIGSERIAL NOT NULL UNIQUE,
    job_id          TEXT NOT NULL,
    order_type      TEXT NOT NULL,
    token_in        TEXT NOT NULL,
    token_out       TEXT NOT NULL,
    amount_in       NUMERIC(39, 0) NOT NULL CHECK (amount_in > 0),
    slippage_bps    INTEGER NOT NULL,
    status          TEXT NOT NULL,
    last_kind       TEXT NOT NULL,
    last_seq        BIGINT NOT NULL,
    quotes          JSONB NOT NULL DEFAULT '[]',
    quoted_at       TIMESTAMPTZ,
    route           JSONB,
    strategy        JSONB,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      JSONB,
    tx_hash         TEXT,
    dex             TEXT,
    amount_out      NUMERIC(39, 0),
    executed_price  TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX orders_status_created ON orders (status, created_seq);

CREATE TABLE order_events (
    order_id    UUID NOT NULL REFERENCES orders (id),
    seq         BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    body        JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (order_id, seq)
);

CREATE TABLE executions (
    signature   TEXT PRIMARY KEY,
    order_id    UUID NOT NULL,
    venue       TEXT NOT NULL,
    amount_in   NUMERIC(39, 0) NOT NULL,
    outcome     JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX executions_order ON executions (order_id);

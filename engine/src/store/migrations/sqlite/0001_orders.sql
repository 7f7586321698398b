-- 0001: orders, their numbered events, and the venue's execution ledger.
-- Amounts are integer base units; timestamps RFC 3339 UTC text.
CREATE TABLE orders (
    id              TEXT PRIMARY KEY,
    created_seq     INTEGER NOT NULL UNIQUE,
    job_id          TEXT NOT NULL,
    order_type      TEXT NOT NULL,
    token_in        TEXT NOT NULL,
    token_out       TEXT NOT NULL,
    amount_in       INTEGER NOT NULL CHECK (amount_in > 0),
    slippage_bps    INTEGER NOT NULL,
    status          TEXT NOT NULL,
    last_kind       TEXT NOT NULL,
    last_seq        INTEGER NOT NULL,
    quotes          TEXT NOT NULL DEFAULT '[]',
    quoted_at       TEXT,
    route           TEXT,
    strategy        TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    tx_hash         TEXT,
    dex             TEXT,
    amount_out      INTEGER,
    executed_price  TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX orders_status_created ON orders (status, created_seq);

CREATE TABLE order_events (
    order_id    TEXT NOT NULL REFERENCES orders (id),
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (order_id, seq)
) WITHOUT ROWID;

CREATE TABLE executions (
    signature   TEXT PRIMARY KEY,
    order_id    TEXT NOT NULL,
    venue       TEXT NOT NULL,
    amount_in   INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX executions_order ON executions (order_id);

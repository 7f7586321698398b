-- 0003: API keys (secrets kept only as SHA-256 digests), single-use
-- WebSocket tickets, and the key that owns each order.
CREATE TABLE api_keys (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    scopes              TEXT NOT NULL,
    orders_per_minute   INTEGER,
    secret_hash         BLOB NOT NULL UNIQUE,
    created_at          TEXT NOT NULL,
    revoked_at          TEXT
);

-- expires_at: Unix milliseconds, so expiry compares as a number.
CREATE TABLE ws_tickets (
    hash        BLOB PRIMARY KEY,
    order_id    TEXT NOT NULL,
    key_id      TEXT,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX ws_tickets_expires ON ws_tickets (expires_at);

-- NULL: created without a key (auth off). A key's list reads this index.
ALTER TABLE orders ADD COLUMN owner TEXT;
CREATE INDEX orders_owner_created ON orders (owner, created_seq);

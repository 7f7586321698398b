-- 0003: API keys (secrets kept only as SHA-256 digests), single-use
-- WebSocket tickets, and the key that owns each order. Same version as the
-- SQLite migration.
CREATE TABLE api_keys (
    id                  UUID PRIMARY KEY,
    name                TEXT NOT NULL,
    scopes              TEXT NOT NULL,
    orders_per_minute   INTEGER,
    secret_hash         BYTEA NOT NULL UNIQUE,
    created_at          TIMESTAMPTZ NOT NULL,
    revoked_at          TIMESTAMPTZ
);

-- expires_at: Unix milliseconds, as in SQLite.
CREATE TABLE ws_tickets (
    hash        BYTEA PRIMARY KEY,
    order_id    UUID NOT NULL,
    key_id      UUID,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX ws_tickets_expires ON ws_tickets (expires_at);

-- NULL: created without a key (auth off). A key's list reads this index.
ALTER TABLE orders ADD COLUMN owner UUID;
CREATE INDEX orders_owner_created ON orders (owner, created_seq);

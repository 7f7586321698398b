-- 0004: Idempotency-Key records. A record is written in the transaction
-- that creates its order (so racing duplicates on any number of API nodes
-- make one order), holds the answer to replay (status and body exactly as
-- sent), and is kept until expires_at (orders.idempotency_ttl), then swept.
-- Same version as the SQLite migration.
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    order_id     UUID NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT NOT NULL,
    completed    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);

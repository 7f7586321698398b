-- 0004: Idempotency-Key records. A record is written in the transaction
-- that creates its order (so racing duplicates make one order), holds the
-- answer to replay (status and body exactly as sent), and is kept until
-- expires_at (orders.idempotency_ttl), then swept. Timestamps RFC 3339 UTC
-- text with milliseconds, which compare correctly as text.
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    order_id     TEXT NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT NOT NULL,
    completed    INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    PRIMARY KEY (scope, idem_key)
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);

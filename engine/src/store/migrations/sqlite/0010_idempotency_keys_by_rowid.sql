-- 0010: idempotency records kept in insertion order (a rowid table), found
-- by a unique index on (scope, idem_key). As a WITHOUT ROWID table keyed by
-- random client keys, every record (~600 bytes with its stored answer) went
-- to a random leaf page, and its settle rewrote that page again in a later
-- commit: two scattered 4 KiB page writes per keyed order (a perf diff of
-- trusted against plain intake put the extra writer time there). Now a
-- record lands beside the ones just before it, its settle touches the same
-- recent pages, and only the small index entry is scattered.
CREATE TABLE idempotency_keys_by_rowid (
    scope        TEXT NOT NULL,
    idem_key     TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    order_id     TEXT NOT NULL,
    status       INTEGER NOT NULL,
    body         TEXT NOT NULL,
    completed    INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL
);
INSERT INTO idempotency_keys_by_rowid
    (scope, idem_key, fingerprint, order_id, status, body, completed, created_at, expires_at)
SELECT scope, idem_key, fingerprint, order_id, status, body, completed, created_at, expires_at
FROM idempotency_keys ORDER BY created_at;
DROP TABLE idempotency_keys;
ALTER TABLE idempotency_keys_by_rowid RENAME TO idempotency_keys;
CREATE UNIQUE INDEX idempotency_keys_key ON idempotency_keys (scope, idem_key);
CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);

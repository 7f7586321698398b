-- 0005: secrets the API nodes share, such as the key that signs WebSocket
-- tickets. The first open writes a random one; every later open reads it.
-- ws_tickets from 0003 now records *used* tickets (a ticket is stateless
-- until it is used), so a ticket opens one stream once.
-- Same version as the PostgreSQL migration.
CREATE TABLE signing_secrets (
    name        TEXT PRIMARY KEY,
    secret      BLOB NOT NULL,
    created_at  TEXT NOT NULL
);

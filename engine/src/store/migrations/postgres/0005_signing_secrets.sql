-- 0005: secrets the API nodes share, such as the key that signs WebSocket
-- tickets. The first node to start writes a random one; every node then
-- reads the same. ws_tickets from 0003 now records *used* tickets (a
-- ticket is stateless until it is used), so a ticket opens one stream once.
-- Same version as the SQLite migration.
CREATE TABLE signing_secrets (
    name        TEXT PRIMARY KEY,
    secret      BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

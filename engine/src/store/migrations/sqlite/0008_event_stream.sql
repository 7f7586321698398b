-- 0008: one commit-safe stream of every order's events (GET /api/stream;
-- see store/stream.rs). SQLite has one writer, so a position taken inside
-- the write transaction (the largest so far plus one, by trigger) is in
-- commit order. `owner` copies the order's owner so one key's stream is an
-- index range scan. Events already stored are numbered first, oldest first.
-- Same version as the PostgreSQL migration (0007 is another change's).
ALTER TABLE order_events ADD COLUMN position INTEGER;
ALTER TABLE order_events ADD COLUMN owner TEXT;
UPDATE order_events SET position = numbered.n, owner = numbered.owner
FROM (
    SELECT e.order_id, e.seq, o.owner,
           ROW_NUMBER() OVER (ORDER BY e.created_at, e.order_id, e.seq) AS n
    FROM order_events e JOIN orders o ON o.id = e.order_id
) AS numbered
WHERE order_events.order_id = numbered.order_id AND order_events.seq = numbered.seq;

CREATE UNIQUE INDEX order_events_position ON order_events (position);
CREATE INDEX order_events_owner_position ON order_events (owner, position);

CREATE TRIGGER order_events_stream_place AFTER INSERT ON order_events
BEGIN
    UPDATE order_events SET
        position = (SELECT COALESCE(MAX(position), 0) + 1 FROM order_events),
        owner = (SELECT owner FROM orders WHERE id = NEW.order_id)
    WHERE order_id = NEW.order_id AND seq = NEW.seq;
END;

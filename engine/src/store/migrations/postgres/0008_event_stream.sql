-- 0008: one commit-safe stream of every order's events (GET /api/stream;
-- see store/stream.rs). An event's place is (stream_xid, position):
-- `position` is taken at insert, `stream_xid` is the writing transaction's
-- id, raised to the previous event's of the same order when that is larger
-- (so an order's events keep their seq order). A reader returns only events
-- whose stream_xid is below its snapshot's xmin: nothing at or before them
-- can still commit. `owner` copies the order's owner so one key's stream is
-- an index range scan. Events already stored come first (stream_xid 0),
-- numbered by (created_at, order_id, seq) as on SQLite.
-- Same version as the SQLite migration (0007 is another change's).
ALTER TABLE order_events ADD COLUMN position BIGSERIAL;
-- The column numbered the stored rows 1..N in physical order; renumber them
-- (the same 1..N, so the sequence stays right) by (created_at, order_id,
-- seq), so old events replay oldest first and each order's in seq order.
UPDATE order_events e SET position = numbered.n
FROM (
    SELECT order_id, seq, ROW_NUMBER() OVER (ORDER BY created_at, order_id, seq) AS n
    FROM order_events
) AS numbered
WHERE e.order_id = numbered.order_id AND e.seq = numbered.seq;
ALTER TABLE order_events ADD COLUMN stream_xid xid8 NOT NULL DEFAULT '0';
ALTER TABLE order_events ADD COLUMN owner UUID;
UPDATE order_events e SET owner = o.owner FROM orders o WHERE o.id = e.order_id AND o.owner IS NOT NULL;

CREATE FUNCTION order_events_stream_place() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    NEW.owner := (SELECT owner FROM orders WHERE id = NEW.order_id);
    NEW.stream_xid := GREATEST(
        pg_current_xact_id(),
        COALESCE(
            (SELECT stream_xid FROM order_events WHERE order_id = NEW.order_id AND seq = NEW.seq - 1),
            '0'::xid8));
    RETURN NEW;
END
$$;
CREATE TRIGGER order_events_stream_place BEFORE INSERT ON order_events
    FOR EACH ROW EXECUTE FUNCTION order_events_stream_place();

CREATE INDEX order_events_stream ON order_events (stream_xid, position);
CREATE INDEX order_events_owner_stream ON order_events (owner, stream_xid, position);

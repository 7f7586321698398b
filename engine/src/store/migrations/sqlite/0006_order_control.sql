-- 0006: order control. `expires_at`: the order is never submitted after it
-- (RFC 3339 UTC text, NULL: no deadline); `retry_of` / `retried_by` link a
-- retried order and its retry both ways (NULL: none). `cancelled` is a new
-- terminal status, so the partial index of unfinished orders from 0002 is
-- rebuilt with it among the finished ones.
-- Same version as the PostgreSQL migration.
ALTER TABLE orders ADD COLUMN expires_at TEXT;
ALTER TABLE orders ADD COLUMN retry_of TEXT;
ALTER TABLE orders ADD COLUMN retried_by TEXT;
DROP INDEX orders_unfinished_updated;
CREATE INDEX orders_unfinished_updated ON orders (updated_at)
    WHERE status NOT IN ('confirmed', 'failed', 'cancelled');

-- 0010: nothing to do on PostgreSQL. SQLite's 0010 moves its idempotency
-- records from a table clustered on (scope, idem_key) to one in insertion
-- order with a unique index; a PostgreSQL table is a heap in insertion order
-- already, with its primary key as a separate index. The version exists so
-- both backends keep the same list.
SELECT 1;

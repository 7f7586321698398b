-- 0002: the monitor's stuck-order check and the reconciler's sweep read only
-- unfinished orders; a partial index keeps them cheap as history grows.
CREATE INDEX orders_unfinished_updated ON orders (updated_at)
    WHERE status NOT IN ('confirmed', 'failed');

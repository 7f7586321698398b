-- 0009: the venues' execution ledger is gone. Legs land as transactions on
-- the simulated chain (0007), which deduplicates them by signature, so
-- nothing reads or writes `executions` any more (its index goes with it).
DROP TABLE IF EXISTS executions;

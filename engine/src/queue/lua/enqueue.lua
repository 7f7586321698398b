-- Adds a job unless its order already has one (queued, delayed or running).
-- KEYS[1] the jobs stream
-- KEYS[2] the order's marker key (<prefix>:{q<n>}:queued:<order id>: the same
-- partition hash tag as KEYS[1], so one Redis Cluster slot)
-- ARGV[1] job id
-- ARGV[2] order id
-- Returns 1 when added, 0 when the order already had a job.
if not redis.call('SET', KEYS[2], ARGV[1], 'NX') then
  return 0
end
redis.call('XADD', KEYS[1], '*', 'job', ARGV[1], 'order', ARGV[2])
return 1

-- Finishes a job held by this consumer and frees its order's marker.
-- KEYS[1] the jobs stream
-- KEYS[2] the order's marker key
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] consumer
-- Returns 1 when finished, 0 when the lease was lost.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if pending[1] == nil or pending[1][2] ~= ARGV[3] then
  return 0
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
return 1

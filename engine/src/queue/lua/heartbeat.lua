-- Extends a lease: resets the entry's idle time if this consumer holds it.
-- KEYS[1] the jobs stream
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] consumer
-- Returns 1 when extended, 0 when the lease was lost.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if pending[1] == nil or pending[1][2] ~= ARGV[3] then
  return 0
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
return 1

-- Puts a job held by this consumer back, due after a delay; its order keeps
-- its marker, so no second job is created meanwhile.
-- KEYS[1] the jobs stream
-- KEYS[2] the delayed sorted set
-- ARGV[1] group, ARGV[2] entry id, ARGV[3] consumer
-- ARGV[4] delay in ms, ARGV[5] member ("<job id>|<order id>")
-- Returns 1 when scheduled, 0 when the lease was lost.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if pending[1] == nil or pending[1][2] ~= ARGV[3] then
  return 0
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[5])
return 1

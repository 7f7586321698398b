-- Moves delayed jobs whose time has come onto the stream.
-- KEYS[1] the delayed sorted set (score: due time, ms since the epoch)
-- KEYS[2] the jobs stream
-- ARGV[1] most jobs to move
-- Returns how many moved.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local sep = string.find(member, '|', 1, true)
  redis.call('XADD', KEYS[2], '*', 'job', string.sub(member, 1, sep - 1), 'order', string.sub(member, sep + 1))
  redis.call('ZREM', KEYS[1], member)
end
return #due

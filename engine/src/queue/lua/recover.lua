-- Hands jobs whose worker stopped heartbeating back to everyone: each entry
-- idle longer than the lease is re-added as a new entry and the old one
-- removed, so any worker can claim it.
-- KEYS[1] the jobs stream
-- ARGV[1] group, ARGV[2] minimum idle ms, ARGV[3] most entries, ARGV[4] a
-- consumer name used only for the hand-over
-- Returns how many jobs were handed back.
local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[4], ARGV[2], '0-0', 'COUNT', tonumber(ARGV[3]))
local moved = 0
for _, entry in ipairs(claimed[2]) do
  local id, fields = entry[1], entry[2]
  if type(fields) == 'table' and #fields > 0 then
    redis.call('XADD', KEYS[1], '*', unpack(fields))
    moved = moved + 1
  end
  redis.call('XACK', KEYS[1], ARGV[1], id)
  redis.call('XDEL', KEYS[1], id)
end
return moved

-- Takes one token from a bucket shared by every node: the worker claim
-- limit (one bucket) and the per-client request limit (a bucket per client).
-- KEYS[1] the bucket hash (<prefix>:rate, <prefix>:requests:<client scope>)
-- ARGV[1] capacity (requests a minute), ARGV[2] refill per millisecond
-- Returns {allowed (1 or 0), whole tokens left, ms until a token is left,
-- ms until the bucket is full}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or capacity
local ts = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
local full = math.ceil((capacity - tokens) / rate)
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
-- A full bucket is the same as no bucket: let it go.
redis.call('PEXPIRE', KEYS[1], full + 1000)
local next_token = 0
if tokens < 1 then
  next_token = math.ceil((1 - tokens) / rate)
end
return {allowed, math.floor(tokens), next_token, full}

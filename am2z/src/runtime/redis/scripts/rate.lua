-- Takes a start from a processor's cluster-wide rate limit (a sliding log of starts).
--- @include "time"
local starts_key = KEYS[1]
local start = ARGV[1]
local max = tonumber(ARGV[2])
local window_ms = tonumber(ARGV[3])
-- Returns {'wait_ms', 0 (start now) or how long to wait before asking again}.

local now = now_ms()
redis.call('ZREMRANGEBYSCORE', starts_key, '-inf', now - window_ms)
if redis.call('ZCARD', starts_key) < max then
  redis.call('ZADD', starts_key, now, start)
  redis.call('PEXPIRE', starts_key, window_ms)
  return {'wait_ms', 0}
end
local oldest = redis.call('ZRANGE', starts_key, 0, 0, 'WITHSCORES')
return {'wait_ms', math.max(1, tonumber(oldest[2]) + window_ms - now)}

-- Takes a start from a processor's cluster-wide rate limit (a sliding log of starts).
-- KEYS: 1 the processor's recent starts (zset: start id -> start time, ms on Redis' clock)
-- ARGV: 1 start id, 2 starts allowed per window, 3 window (ms)
-- Returns 0 (start now) or how many ms to wait before asking again.
local now = now_ms()
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], window)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)

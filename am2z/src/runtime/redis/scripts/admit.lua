-- Takes one of a processor's cluster-wide concurrency permits, if one is free.
-- KEYS: 1 the processor's permits (zset: permit id -> expiry, ms on Redis' clock)
-- ARGV: 1 permit id, 2 the processor's concurrency, 3 hold (ms; renewed while the step runs)
-- Returns 1 (taken) or 0 (all taken). Permits of dead workers expire by themselves.
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1

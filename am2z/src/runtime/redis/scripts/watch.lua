-- Makes sure the sweeper will look at a session by its new lease's deadline.
-- KEYS: 1 leasing (zset: session -> when the sweeper should look, ms on Redis' clock)
-- ARGV: 1 session id, 2 the new lease's deadline, 3 the index's ttl (ms)
-- A score already in the past is stale (the sweeper is about to settle it): replace it, so
-- the sweeper's settle step sees the session moved on and keeps it.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not current or tonumber(current) <= now then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
else
  redis.call('ZADD', KEYS[1], 'LT', ARGV[2], ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1

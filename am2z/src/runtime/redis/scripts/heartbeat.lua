-- Registers a live worker and the contracts it serves, until its heartbeat lapses.
-- KEYS: 1 workers (zset: worker id -> expiry, ms on Redis' clock), 2 this worker's contracts
-- ARGV: 1 worker id, 2 time to live (ms), 3.. contract fingerprints it serves
-- Both keys share the `{:workers}` hash tag (one slot). Lapsed workers are pruned here.
local now = now_ms()
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('DEL', KEYS[2])
if #ARGV >= 3 then
  redis.call('SADD', KEYS[2], unpack(ARGV, 3))
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1

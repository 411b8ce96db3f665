-- Gives a leased job back at once (a draining worker), without consuming a delivery.
-- KEYS: 1 leases, 2 job, 3 queue
-- ARGV: 1 run id, 2 fencing token
-- Returns 1 (released) or 0 (the caller did not hold the lease).
local f = redis.call('HMGET', KEYS[2], 'token', 'state', 'priority')
if f[1] ~= ARGV[2] or f[2] ~= 'leased' then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'state', 'queued')
redis.call('HINCRBY', KEYS[2], 'deliveries', -1)
redis.call('ZADD', KEYS[3], queue_score(f[3]), ARGV[1])
expire_like(KEYS[3], KEYS[2])
return 1

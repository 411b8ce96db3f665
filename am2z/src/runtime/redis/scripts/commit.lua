-- Commits a run's terminal outcome, if the caller still holds the lease (fencing).
-- KEYS: 1 leases, 2 job, 3 result, 4 index, 5 results, 6 dead (only for an undecodable job)
-- ARGV: 1 run id, 2 fencing token, 3 outcome (JSON), 4 result ttl (ms), 5 done channel,
--       6 done message, 7 session ttl (ms), 8 the largest outcome the done message carries
--       (bytes; a larger one is only named, and waiters elsewhere read the result key)
-- Returns 1 (committed) or 0 (refused: stale token, or the job is gone).
local f = redis.call('HMGET', KEYS[2], 'token', 'state')
if f[1] ~= ARGV[2] or f[2] ~= 'leased' then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[4], KEYS[2])
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
-- Result keys are tracked with their expiry (not in the index), and expired entries are
-- trimmed here, so a long-lived session's bookkeeping stays bounded by its live results.
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
redis.call('ZADD', KEYS[5], now + tonumber(ARGV[4]), KEYS[3])
redis.call('PEXPIRE', KEYS[5], ARGV[7])
if KEYS[6] then
  redis.call('RPUSH', KEYS[6], ARGV[1])
  redis.call('PEXPIRE', KEYS[6], ARGV[7])
end
if #ARGV[3] <= tonumber(ARGV[8]) then
  redis.call('PUBLISH', ARGV[5], ARGV[6] .. ' ' .. ARGV[3])
else
  redis.call('PUBLISH', ARGV[5], ARGV[6])
end
return 1

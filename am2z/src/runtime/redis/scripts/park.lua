-- Puts a leased step job into the session's due-time set: its step waits (its `delay`, or a
-- retry's backoff) in Redis instead of in its worker's slot, then resumes at `attempt`.
-- KEYS: 1 leases, 2 job, 3 delayed, 4 meta
-- ARGV: 1 job id, 2 fencing token, 3 the attempt that follows the wait, 4 the wait (ms),
--       5 attempts the job made (added to its run's count when it commits)
-- Returns the due time (ms on Redis' clock), or 0 (refused: stale token or the job is gone).
-- The delivery is given back, as a release does: waiting is not a worker's death.
local f = redis.call('HMGET', KEYS[2], 'token', 'state')
if f[1] ~= ARGV[2] or f[2] ~= 'leased' then
  return 0
end
local due = now_ms() + tonumber(ARGV[4])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'state', 'queued', 'attempt', ARGV[3])
redis.call('HINCRBY', KEYS[2], 'deliveries', -1)
redis.call('HINCRBY', KEYS[2], 'attempts', ARGV[5])
redis.call('ZADD', KEYS[3], due, ARGV[1])
expire_like(KEYS[3], KEYS[4])
return due

-- Registers a session and marks it as having work (at the current least-served score, so a
-- newcomer is served next but cannot jump ahead of others), then wakes idle workers.
-- KEYS: 1 sched, 2 sessions
-- ARGV: 1 session id, 2 wake channel, 3 registry ttl (ms): longer than a session's, so the
--       registry outlives an idle session and the sweeper can tell everyone it expired
-- A session already scheduled is left as it is and wakes nobody: a worker that looked at the
-- schedule since it was scheduled saw it, and one that could not take its work then (quota,
-- contract) looks again by its idle poll. The registry's TTL is refreshed when a sixteenth
-- of it has run down.
-- Returns 1 (scheduled now) or 0 (already scheduled).
local ttl = tonumber(ARGV[3])
local scheduled = redis.call('ZSCORE', KEYS[1], ARGV[1])
local added = redis.call('SADD', KEYS[2], ARGV[1]) == 1
if not scheduled then
  local least = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local score = 0
  if #least > 0 then
    score = tonumber(least[2])
  end
  redis.call('ZADD', KEYS[1], score, ARGV[1])
end
-- A key this call may have created has no TTL yet: refresh then too.
local low = ttl - math.floor(ttl / 16)
if added or not scheduled or redis.call('PTTL', KEYS[1]) < low
    or redis.call('PTTL', KEYS[2]) < low then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if scheduled then
  return 0
end
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1

-- Registers a session and marks it as having work (at the current least-served score, so a
-- newcomer is served next but cannot jump ahead of others), then wakes idle workers.
-- KEYS: 1 sched, 2 sessions
-- ARGV: 1 session id, 2 wake channel, 3 registry ttl (ms): longer than a session's, so the
--       registry outlives an idle session and the sweeper can tell everyone it expired
local low = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local score = 0
if #low > 0 then
  score = tonumber(low[2])
end
redis.call('ZADD', KEYS[1], 'NX', score, ARGV[1])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1

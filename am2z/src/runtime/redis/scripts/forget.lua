-- Forgets a session that is gone (stopped, or expired): takes it out of the registry and the
-- schedule, unless it was registered again since `score` was read (a new session under the
-- same id), or registered less than `min_age_ms` ago (a submission may be creating it).
--- @include "time"
local sessions_key = KEYS[1]
local sched_key = KEYS[2]
local gens_key = KEYS[3]
local session = ARGV[1]
local score = tonumber(ARGV[2])
local min_age_ms = tonumber(ARGV[3])
-- Returns {'forgotten', 0|1}.

local current = redis.call('ZSCORE', sessions_key, session)
if current and (tonumber(current) > score or tonumber(current) + min_age_ms > now_ms()) then
  return {'forgotten', 0}
end
redis.call('ZREM', sessions_key, session)
redis.call('ZREM', sched_key, session)
redis.call('HDEL', gens_key, session)
return {'forgotten', 1}

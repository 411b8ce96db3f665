-- Schedules a session that has ready jobs (at the current least-served score, so a newcomer
-- is served next but cannot jump ahead of others), then wakes idle workers.
--- @include "publish"
local sched_key = KEYS[1]
local gens_key = KEYS[2]
local session = ARGV[1]
-- The scheduling generation the session's ready jobs have (see `ready.lua`).
local generation = tonumber(ARGV[2])
-- The wake message (`Wake`) and its channel.
local wake_channel = ARGV[3]
local wake = ARGV[4]
-- Returns {'enlisted', 1} when the session was added (and workers woken), 0 when it was
-- scheduled already or a newer generation was enlisted. The same generation enlisted again
-- (the sweeper making good a lost enlist) adds the session back if it is missing.

local known = tonumber(redis.call('HGET', gens_key, session) or '0')
if generation < known then
  return {'enlisted', 0}
end
redis.call('HSET', gens_key, session, string.format('%.0f', generation))
if redis.call('ZSCORE', sched_key, session) then
  return {'enlisted', 0}
end
local least = redis.call('ZRANGE', sched_key, 0, 0, 'WITHSCORES')
local score = 0
if #least > 0 then
  score = tonumber(least[2])
end
redis.call('ZADD', sched_key, score, session)
publish(wake_channel, wake)
return {'enlisted', 1}

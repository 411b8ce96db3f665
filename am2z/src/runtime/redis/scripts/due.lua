-- Takes the sessions whose earliest delayed job is due (at most `most`), for the promoter.
--- @include "time"
local timers_key = KEYS[1]
local most = tonumber(ARGV[1])
-- Returns {'sessions', {ids}}; each is re-armed by the promoter if it still has delayed jobs.

local due = redis.call('ZRANGEBYSCORE', timers_key, '-inf', now_ms(), 'LIMIT', 0, most)
if #due > 0 then
  redis.call('ZREM', timers_key, unpack(due))
end
return {'sessions', due}

-- Takes a session out of the schedule once a claim took its last ready job, unless a newer
-- generation of ready jobs was enlisted since.
local sched_key = KEYS[1]
local gens_key = KEYS[2]
local session = ARGV[1]
local generation = tonumber(ARGV[2])
-- Returns {'retired', 0|1}.

local known = tonumber(redis.call('HGET', gens_key, session) or '0')
if known > generation then
  return {'retired', 0}
end
redis.call('ZREM', sched_key, session)
redis.call('HDEL', gens_key, session)
return {'retired', 1}

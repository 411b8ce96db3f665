-- Sets a session's timer to `due` unless an earlier one is set.
local timers_key = KEYS[1]
local session = ARGV[1]
local due = ARGV[2]
-- Returns {'armed', 1}.

redis.call('ZADD', timers_key, 'LT', due, session)
return {'armed', 1}

-- Registers a session (before its first submission from a process, and again after one that
-- created it): the sweeper's full pass walks the registry, so a session whose scheduling was
-- lost is still found.
--- @include "time"
local sessions_key = KEYS[1]
local session = ARGV[1]
-- Returns {'score', the registration's score}: strictly larger than any before it, so that
-- `forget.lua` can tell a registration made after it looked.

local score = now_ms()
local current = redis.call('ZSCORE', sessions_key, session)
if current and tonumber(current) >= score then
  score = tonumber(current) + 1
end
redis.call('ZADD', sessions_key, score, session)
return {'score', score}

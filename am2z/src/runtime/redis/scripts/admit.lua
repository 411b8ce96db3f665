-- Takes one of a processor's cluster-wide concurrency permits, if one is free. Permits of
-- dead workers expire by themselves.
--- @include "time"
local permits_key = KEYS[1]
local permit = ARGV[1]
local limit = tonumber(ARGV[2])
-- How long the permit holds unless renewed (ms; renewed while the step runs).
local hold_ms = tonumber(ARGV[3])
-- Returns {'admitted', 0|1}.

local now = now_ms()
redis.call('ZREMRANGEBYSCORE', permits_key, '-inf', now)
if redis.call('ZCARD', permits_key) >= limit then
  return {'admitted', 0}
end
redis.call('ZADD', permits_key, now + hold_ms, permit)
redis.call('PEXPIRE', permits_key, hold_ms)
return {'admitted', 1}

-- Takes the sessions whose earliest delayed job is due (at most 100), for the promoter.
-- KEYS: 1 timers (zset: session -> earliest due time, ms on Redis' clock)
-- Returns the session ids; each is re-armed by the promoter if it still has delayed jobs.
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
end
return due

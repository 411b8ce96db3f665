-- Picks the least-served session that may have work, and charges it one claim.
-- KEYS: 1 sched
-- Returns the session id, or false when no session has work.
local top = redis.call('ZRANGE', KEYS[1], 0, 0)
if #top == 0 then
  return false
end
redis.call('ZINCRBY', KEYS[1], 1, top[1])
return top[1]

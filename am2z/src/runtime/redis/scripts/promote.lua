-- Moves a session's due delayed jobs to its ready queue (at most 500 per call).
-- KEYS: 1 delayed, 2 queue, 3 meta
-- ARGV: 1 job key prefix
-- Returns {moved, next_due}: next_due is the earliest due time left (0: none).
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 500)
local moved = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local priority = redis.call('HGET', ARGV[1] .. id, 'priority')
  if priority then
    redis.call('ZADD', KEYS[2], queue_score(priority), id)
    -- The session's lifetime, not the delayed set's: taking its last job deletes it.
    expire_like(KEYS[2], KEYS[3])
    moved = moved + 1
  end
end
return {moved, first_score(KEYS[1])}

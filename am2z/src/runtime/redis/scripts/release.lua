-- Gives leased jobs back at once (a draining or stopping worker), without consuming their
-- deliveries: at the head of their priority, so they run next.
--- @include "time"
--- @include "session"
--- @include "header"
--- @include "ready"
-- ARGV[1..]: pairs of job id and lease token
local FIRST = 1
-- Returns {'released', how many, 'enlist', generation (0: the session was already ready)}.
-- A job whose lease this worker no longer holds is left alone (and not counted).

local released = 0
for at = FIRST, #ARGV, 2 do
  local job, token = ARGV[at], ARGV[at + 1]
  local raw = redis.call('HGET', jobs_key, job)
  local set = held_by(raw, token)
  if set then
    local h = read_header(raw)
    redis.call('ZREM', set, job)
    h.deliveries = math.max(h.deliveries - 1, 0)
    h.state = 'Q'
    redis.call('HSET', jobs_key, job, write_header(h))
    redis.call('ZADD', queue_key, queue_score(h.priority, 0), job)
    released = released + 1
  end
end
local gen = 0
if released > 0 then
  gen = mark_ready()
end
return {'released', released, 'enlist', gen}

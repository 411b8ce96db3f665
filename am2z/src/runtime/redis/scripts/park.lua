-- A leased job waits in the session's due-time set (its step's `delay`, or a retry's backoff)
-- instead of in its worker's slot, then resumes at `attempt`.
--- @include "time"
--- @include "session"
--- @include "header"
local job = ARGV[1]
local token = ARGV[2]
local attempt = tonumber(ARGV[3])
local wait_ms = tonumber(ARGV[4])
-- The attempts the job made before it waits (added to its run's count when it commits).
local attempts = tonumber(ARGV[5])
-- Returns {'due', due time in ms on Redis' clock} or {'due', 0} (refused: stale token, the
-- job is gone, or the session is stopping). The delivery is given back: waiting is not a
-- worker's death.

local raw = redis.call('HGET', jobs_key, job)
local set = held_by(raw, token)
if not set then
  return {'due', 0}
end
local h = read_header(raw)
local due = now_ms() + wait_ms
redis.call('ZREM', set, job)
h.attempt = attempt
h.state = 'Q'
h.attempts = h.attempts + attempts
h.deliveries = math.max(h.deliveries - 1, 0)
redis.call('HSET', jobs_key, job, write_header(h))
redis.call('ZADD', delayed_key, due, job)
return {'due', due}

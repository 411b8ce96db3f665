-- Moves a session's due delayed jobs to its ready queue (at most `most` per call).
--- @include "time"
--- @include "session"
--- @include "header"
--- @include "ready"
local most = tonumber(ARGV[1])
-- Returns {'moved', how many, 'next_due', the earliest due time left (0: none), 'enlist',
-- generation (0: already ready)}.

if stopping() then
  return {'moved', 0, 'next_due', 0, 'enlist', 0}
end
local due = redis.call('ZRANGEBYSCORE', delayed_key, '-inf', now_ms(), 'LIMIT', 0, most)
local moved = 0
if #due > 0 then
  redis.call('ZREM', delayed_key, unpack(due))
  local raw = redis.call('HMGET', jobs_key, unpack(due))
  for i, job in ipairs(due) do
    local h = read_header(raw[i])
    if h then
      redis.call('ZADD', queue_key, queue_score(h.priority, 0), job)
      moved = moved + 1
    end
  end
end
local gen = 0
if moved > 0 then
  gen = mark_ready()
end
return {'moved', moved, 'next_due', first_score(delayed_key), 'enlist', gen}

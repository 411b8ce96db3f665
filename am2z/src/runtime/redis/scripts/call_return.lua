-- A step whose ctx.call ended goes on: its lease moves back from `calls` to `leases`, where it
-- counts in the session's concurrency quota again.
--- @include "time"
--- @include "session"
--- @include "header"
local job = ARGV[1]
local token = ARGV[2]
-- Returns {'status', 'ok' | 'lost'}.

local raw = redis.call('HGET', jobs_key, job)
local set = held_by(raw, token)
local h = read_header(raw)
if set == calls_key then
  local deadline = redis.call('ZSCORE', calls_key, job)
  redis.call('ZREM', calls_key, job)
  redis.call('ZADD', leases_key, deadline, job)
  h.state = 'L'
  redis.call('HSET', jobs_key, job, write_header(h))
  return {'status', 'ok'}
end
if set == leases_key then
  return {'status', 'ok'}
end
return {'status', 'lost'}

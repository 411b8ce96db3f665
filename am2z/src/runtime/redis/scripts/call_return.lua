-- A step whose ctx.call ended goes on: its lease moves back from `calls` to `leases`, where it
-- counts in the session's concurrency quota again.
--- @include "time"
--- @include "session"
--- @include "header"
local job = ARGV[1]
local token = ARGV[2]
-- Returns {'status', 'ok' | 'lost'}.

local h = read_header(redis.call('HGET', jobs_key, job))
if not h or tostring(h.token) ~= token then
  return {'status', 'lost'}
end
local deadline = redis.call('ZSCORE', calls_key, job)
if deadline then
  redis.call('ZREM', calls_key, job)
  redis.call('ZADD', leases_key, deadline, job)
  return {'status', 'ok'}
end
if redis.call('ZSCORE', leases_key, job) then
  return {'status', 'ok'}
end
return {'status', 'lost'}

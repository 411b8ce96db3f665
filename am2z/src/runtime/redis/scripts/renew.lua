-- Extends the leases this worker holds in one session (running, or waiting on a ctx.call).
--- @include "time"
--- @include "session"
--- @include "header"
local lease_ms = tonumber(ARGV[1])
-- ARGV[2..]: pairs of job id and lease token
local FIRST = 2
-- Returns {'lost', {job ids whose lease is lost: the token moved on, the job is gone, or the
-- session is stopping}}.

local lost = {}
local deadline = now_ms() + lease_ms
for at = FIRST, #ARGV, 2 do
  local job, token = ARGV[at], ARGV[at + 1]
  local set = held_by(redis.call('HGET', jobs_key, job), token)
  if not set then
    lost[#lost + 1] = job
  else
    redis.call('ZADD', set, 'XX', deadline, job)
  end
end
return {'lost', lost}

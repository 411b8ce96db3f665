-- Leases up to `most` ready jobs of a session that this worker serves.
--- @include "time"
--- @include "session"
--- @include "header"
--- @include "ready"
--- @include "lease"
local lease_ms = tonumber(ARGV[1])
-- The session's concurrency quota (0: none): how many of its jobs may be leased at once.
local quota = tonumber(ARGV[2])
local most = tonumber(ARGV[3])
-- ARGV[4..]: the contract fingerprints this worker serves
local FIRST_SERVED = 4
-- Returns {'status', 'ok', 'left', queued jobs left, 'retire', generation to retire the
-- session with (0: it still has ready jobs), 'jobs', {leased job records}}, or {'status', s,
-- 'retire', generation} with s 'empty' (nothing queued), 'busy' (at quota, or nothing
-- served), 'gone' (the session does not exist) or 'stopping'.

local session = redis.call('HMGET', meta_key, 'created_ms', 'stopping')
if session[2] then
  return {'status', 'stopping', 'retire', 0}
end
if not session[1] then
  -- Retired as of now: a session created anew under this id enlists a later generation.
  return {'status', 'gone', 'retire', now_us()}
end
if quota > 0 then
  most = math.min(most, quota - count_leases())
  if most <= 0 then
    return {'status', 'busy', 'retire', 0}
  end
end
local jobs, left = lease_ready(most, served_from(FIRST_SERVED), lease_ms)
local retire = 0
if left == 0 then
  retire = clear_ready()
end
if #jobs == 0 then
  return {'status', left == 0 and 'empty' or 'busy', 'retire', retire}
end
return {'status', 'ok', 'left', left, 'retire', retire, 'jobs', jobs}

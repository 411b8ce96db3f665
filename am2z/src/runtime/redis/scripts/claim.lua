-- Leases up to `most` ready jobs of a session that this worker serves.
--- @include "time"
--- @include "session"
--- @include "header"
--- @include "ready"
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
-- A bounded look past jobs this worker cannot run (another version's, or another
-- deployment's): up to 64 of them at the head do not block the ones behind. A job whose run
-- already ended (a failed sibling, a deadline) is dropped, not leased.

if redis.call('EXISTS', meta_key) == 0 then
  -- Retired as of now: a session created anew under this id enlists a later generation.
  return {'status', 'gone', 'retire', now_us()}
end
if stopping() then
  return {'status', 'stopping', 'retire', 0}
end
if quota > 0 then
  most = math.min(most, quota - redis.call('ZCARD', leases_key))
  if most <= 0 then
    return {'status', 'busy', 'retire', 0}
  end
end
local ids = redis.call('ZRANGE', queue_key, 0, 63)
if #ids == 0 then
  return {'status', 'empty', 'retire', clear_ready()}
end
local served = {}
for i = FIRST_SERVED, #ARGV do
  served[ARGV[i]] = true
end
local raw = redis.call('HMGET', jobs_key, unpack(ids))
local runs = {}
for i, id in ipairs(ids) do
  runs[i] = run_of(id)
end
local live = redis.call('ZMSCORE', runs_key, unpack(runs))

local now = now_ms()
local deadline = now + lease_ms
local taken, headers, leased, gone, dropped = {}, {}, {}, {}, {}
for i, id in ipairs(ids) do
  local h = read_header(raw[i])
  if not h then
    gone[#gone + 1] = id
  elseif not live[i] then
    gone[#gone + 1] = id
    dropped[#dropped + 1] = id
  elseif #taken < most and served[h.fp] then
    h.token = h.token + 1
    h.deliveries = h.deliveries + 1
    taken[#taken + 1] = {id, h}
    headers[#headers + 1] = id
    headers[#headers + 1] = write_header(h)
    leased[#leased + 1] = deadline
    leased[#leased + 1] = id
    gone[#gone + 1] = id
  end
end
if #gone > 0 then
  redis.call('ZREM', queue_key, unpack(gone))
end
if #dropped > 0 then
  redis.call('HDEL', jobs_key, unpack(dropped))
  redis.call('HDEL', bodies_key, unpack(dropped))
end
local left = redis.call('ZCARD', queue_key)
local retire = 0
if left == 0 then
  retire = clear_ready()
end
if #taken == 0 then
  return {'status', left == 0 and 'empty' or 'busy', 'retire', retire}
end
redis.call('HSET', jobs_key, unpack(headers))
redis.call('ZADD', leases_key, unpack(leased))
local ids_taken = {}
for i, t in ipairs(taken) do
  ids_taken[i] = t[1]
end
local bodies = redis.call('HMGET', bodies_key, unpack(ids_taken))
local jobs = {}
for i, t in ipairs(taken) do
  jobs[i] = leased_record(t[1], t[2], bodies[i], deadline)
end
return {'status', 'ok', 'left', left, 'retire', retire, 'jobs', jobs}

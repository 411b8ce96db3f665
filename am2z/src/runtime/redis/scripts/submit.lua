-- Queues new runs of a session (one or many), creating the session when it is new.
--- @include "time"
--- @include "session"
--- @include "header"
--- @include "ready"
local max_queued = tonumber(ARGV[1])
local created_event = ARGV[2]
local events_channel = ARGV[3]
local events_max_len = ARGV[4]
-- '1': the runs may exist already (a child call whose caller runs again): not an error.
local dedup = ARGV[5] == '1'
-- A child call's caller (its job and lease token; '' otherwise): it must still hold its
-- lease, and its lease moves to `calls` while it waits (outside the concurrency quota).
local caller = ARGV[6]
local caller_token = ARGV[7]
-- ARGV[8..]: per run, 4 values: run id, contract fingerprint, priority, processor name,
-- then its body (opaque)
local FIRST, PER_RUN = 8, 5
-- Returns {'status', 'ok', 'created', 0|1, 'epoch', the session's epoch (which incarnation
--          of the session id this is: a stopped session's id can be used again), 'enlist',
--          generation (0: already scheduled), 'runs', {'queued' | 'duplicate', ...}} or
--          {'status', 'stopping' | 'quota' | 'caller_gone'}.

if stopping() then
  return {'status', 'stopping'}
end
local count = (#ARGV - FIRST + 1) / PER_RUN
if max_queued > 0 and redis.call('ZCARD', queue_key) + count > max_queued then
  return {'status', 'quota'}
end
local caller_set = nil
if caller ~= '' then
  local h = read_header(redis.call('HGET', jobs_key, caller))
  caller_set = lease_set_of(caller)
  if not h or tostring(h.token) ~= caller_token or not caller_set then
    return {'status', 'caller_gone'}
  end
end

local now = now_ms()
local created = redis.call('EXISTS', meta_key) == 0
if created then
  redis.call('HSET', meta_key, 'created_ms', num(now), 'epoch', num(now_us()))
  redis.call('XADD', events_key, 'MAXLEN', '~', events_max_len, '*', 'event', created_event)
  redis.call('PUBLISH', events_channel, created_event)
end
local was_idle = redis.call('ZCARD', runs_key) == 0

local statuses = {}
local headers, bodies, queued, live = {}, {}, {}, {}
for at = FIRST, #ARGV, PER_RUN do
  local run = ARGV[at]
  if dedup and (redis.call('ZSCORE', runs_key, run) or
      redis.call('HEXISTS', results_key, run) == 1) then
    statuses[#statuses + 1] = 'duplicate'
  else
    local seq = redis.call('HINCRBY', meta_key, 'seq', 1)
    local priority = tonumber(ARGV[at + 2])
    local header = write_header({fp = ARGV[at + 1], priority = priority, token = 0,
      deliveries = 0, created_ms = now, queued_ms = now, attempt = 0, attempts = 0,
      version = 0, run_attempts = 0, name = ARGV[at + 3]})
    headers[#headers + 1] = run
    headers[#headers + 1] = header
    bodies[#bodies + 1] = run
    bodies[#bodies + 1] = ARGV[at + 4]
    queued[#queued + 1] = queue_score(priority, seq)
    queued[#queued + 1] = run
    live[#live + 1] = now
    live[#live + 1] = run
    statuses[#statuses + 1] = 'queued'
  end
end

local gen = 0
if #headers > 0 then
  redis.call('HSET', jobs_key, unpack(headers))
  redis.call('HSET', bodies_key, unpack(bodies))
  redis.call('ZADD', queue_key, unpack(queued))
  redis.call('ZADD', runs_key, unpack(live))
  if was_idle and not created then
    went_live()
  end
  gen = mark_ready()
end
if caller_set == leases_key then
  local deadline = redis.call('ZSCORE', leases_key, caller)
  redis.call('ZREM', leases_key, caller)
  redis.call('ZADD', calls_key, deadline, caller)
end
return {'status', 'ok', 'created', created and 1 or 0,
  'epoch', tonumber(redis.call('HGET', meta_key, 'epoch') or '0'), 'enlist', gen,
  'runs', statuses}

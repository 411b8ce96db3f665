-- Ends the run of a job that cannot be run: leased too often (its workers died or froze each
-- time: dead-lettered), or queued with no live worker able to run it (unserved). Re-checks
-- what the sweeper saw, so a job that moved on meanwhile is left alone.
--- @include "time"
--- @include "session"
--- @include "header"
--- @include "publish"
--- @include "end_run"
-- The run's hash (when the job is a step job; the run's, for any job of it).
local run_key = KEYS[15]
local job = ARGV[1]
-- 'dead' or 'unserved'.
local reason = ARGV[2]
local max_deliveries = tonumber(ARGV[3])
local grace_ms = tonumber(ARGV[4])
local done_channel = ARGV[5]
-- The `done` message of the run, published when this ends it.
local done = ARGV[6]
local session_ttl = tonumber(ARGV[7])
local dead_max_len = tonumber(ARGV[8])
-- Returns {'status', 'ended' (the run ended here), 'dropped' (the job was dropped, its run
-- had already ended) or 'kept' (it moved on: nothing done)}.
-- The outcomes stored: {"Dead":{"deliveries":n,"created_ms":t}} and
-- {"Unserved":{"name":processor,"fingerprint":fp}}, read by the runtime's `WireOutcome`.

local raw = redis.call('HGET', jobs_key, job)
local h = read_header(raw)
if not h then
  return {'status', 'kept'}
end
local now = now_ms()
local outcome
if reason == 'dead' then
  local set = held_by(raw, num(h.token))
  if not set or h.deliveries < max_deliveries
      or tonumber(redis.call('ZSCORE', set, job)) > now then
    return {'status', 'kept'}
  end
  redis.call('ZREM', set, job)
  outcome = cjson.encode({Dead = {deliveries = h.deliveries, created_ms = h.created_ms}})
else
  if not redis.call('ZSCORE', queue_key, job) or h.queued_ms + grace_ms >= now then
    return {'status', 'kept'}
  end
  redis.call('ZREM', queue_key, job)
  outcome = cjson.encode({Unserved = {name = h.name, fingerprint = h.fp}})
end
local run = run_of(job)
redis.call('HDEL', jobs_key, job)
-- The run's entry body stays with its outcome (its input, for inspection and a retry).
if job ~= run then
  redis.call('HDEL', bodies_key, job)
end
-- What a retry resubmits: the entry job's (a step job's own fingerprint is its steps').
local again
if job == run then
  again = resubmission(h)
else
  again = redis.call('HGET', run_key, 'f')
end
if not end_run(run, outcome, false, run_key, done_channel, done, session_ttl, h.name, again) then
  return {'status', 'dropped'}
end
if reason == 'dead' then
  bury(run, dead_max_len)
end
return {'status', 'ended'}

-- Cancels a live run (the operator's `cancel_run`): ends it, exactly once, with the outcome
-- the caller built (a `Cancelled` failure), as every run ends (`end_run`: stored, moved to
-- the failed runs, its run hash unlinked, `done` published, the session's idle expiry). Its
-- entry job goes with it whatever its state (its body stays, as every ended run's does); a step run's later jobs are dropped when
-- claimed (queued, or promoted from `delayed`), and the running ones are cancelled by the
-- `Cancel` message the caller publishes next, their commits then moot.
--- @include "time"
--- @include "session"
--- @include "header"
--- @include "publish"
--- @include "end_run"
-- The run's hash (a step run's, while it is live).
local run_key = KEYS[15]
local run = ARGV[1]
-- Its outcome (JSON, opaque here) and `done` line.
local outcome = ARGV[2]
local done_channel = ARGV[3]
local done = ARGV[4]
local session_ttl = tonumber(ARGV[5])
-- Returns {'status', 'cancelled' | 'stopping' | 'unknown'} or {'status', 'ended', 'state',
-- 'completed' | 'failed' | 'dead_lettered'} (it had ended: nothing changed).

if stopping() then
  return {'status', 'stopping'}
end
if not redis.call('ZSCORE', runs_key, run) then
  if redis.call('ZSCORE', dead_key, run) then
    return {'status', 'ended', 'state', 'dead_lettered'}
  elseif redis.call('ZSCORE', failed_key, run) then
    return {'status', 'ended', 'state', 'failed'}
  elseif redis.call('ZSCORE', completed_key, run) then
    return {'status', 'ended', 'state', 'completed'}
  end
  return {'status', 'unknown'}
end
local raw = redis.call('HGET', jobs_key, run)
local name = header_name(raw)
-- What a retry resubmits: from the entry job, or, once it committed, the run's hash.
local again
if name then
  again = resubmission(read_header(raw))
else
  local kept = redis.call('HMGET', run_key, 'name', 'f')
  name, again = kept[1], kept[2]
end
if raw then
  redis.call('ZREM', queue_key, run)
  redis.call('ZREM', delayed_key, run)
  redis.call('ZREM', leases_key, run)
  redis.call('ZREM', calls_key, run)
  redis.call('HDEL', jobs_key, run)
end
-- Its entry body stays with its outcome (its input, for inspection and a retry).
end_run(run, outcome, false, run_key, done_channel, done, session_ttl, name, again)
return {'status', 'cancelled'}

-- Looks after one session: re-queues the jobs whose lease expired (their worker died or
-- froze), reports the jobs to bury (leased too often; queued with no live worker able to run
-- them), trims ended outcomes and dead letters, and reports the session's state.
--- @include "time"
--- @include "session"
--- @include "header"
--- @include "ready"
local max_deliveries = tonumber(ARGV[1])
-- Redelivery backoff: the first redelivery is at once (recovery within a lease and a sweep),
-- later ones wait base × 2^(n-2), capped, in the delayed set, so a job that kills its workers
-- cannot crash-loop the fleet.
local backoff_ms = tonumber(ARGV[2])
local backoff_max_ms = tonumber(ARGV[3])
-- Unserved jobs: with `fleet_ready` ('1': live workers have existed for the whole grace), a
-- job queued for longer than `grace_ms` whose contract no live worker served within the grace
-- is reported for burial. Off when `grace_ms` is 0.
local grace_ms = tonumber(ARGV[4])
local fleet_ready = ARGV[5] == '1'
local result_ttl = tonumber(ARGV[6])
-- ARGV[7..]: the contracts some live worker served within the grace
local FIRST_SERVED = 7
-- Returns {'state', s, 'requeued', n, 'dead', {job ids}, 'unserved', {job ids},
--          'next_lease', ms (0: none), 'next_due', ms (0: none), 'ready', generation to
--          enlist with (0: no ready job)} with s 'live' (it has live runs), 'idle', 'gone' (the
-- session does not exist), 'stopping' (a stop is under way) or 'abandoned' (a stop whose
-- stopper stopped renewing it: the sweeper finishes it). Looks at 100 expired leases, 64
-- queued jobs and 1 000 ended outcomes per call.

-- The earliest lease deadline, running or calling (0: none).
local function next_lease()
  local running, calling = first_lease(), first_score(calls_key)
  if running == 0 or (calling ~= 0 and calling < running) then
    return calling
  end
  return running
end
local function report(state, requeued, dead, unserved, ready)
  return {'state', state, 'requeued', requeued, 'dead', dead, 'unserved', unserved,
    'next_lease', next_lease(), 'next_due', first_score(delayed_key), 'ready', ready}
end
if redis.call('EXISTS', meta_key) == 0 then
  return {'state', 'gone', 'requeued', 0, 'dead', {}, 'unserved', {}, 'next_lease', 0,
    'next_due', 0, 'ready', 0}
end
local now = now_ms()
local stop = redis.call('HGET', meta_key, 'stopping')
if stop then
  return report(tonumber(stop) < now and 'abandoned' or 'stopping', 0, {}, {}, 0)
end

local requeued = 0
local dead = {}
for _, set in ipairs({leases_key, calls_key}) do
  for _, job in ipairs(redis.call('ZRANGEBYSCORE', set, '-inf', now, 'LIMIT', 0, 100)) do
    local h = read_header(redis.call('HGET', jobs_key, job))
    if not h then
      redis.call('ZREM', set, job)
    elseif h.deliveries >= max_deliveries then
      -- Left leased and expired: `bury.lua` ends its run (it can declare the run's hash).
      dead[#dead + 1] = job
    else
      redis.call('ZREM', set, job)
      h.state = 'Q'
      redis.call('HSET', jobs_key, job, write_header(h))
      if h.deliveries <= 1 or backoff_ms <= 0 then
        redis.call('ZADD', queue_key, queue_score(h.priority, 0), job)
      else
        local wait = math.min(backoff_ms * 2 ^ (h.deliveries - 2), backoff_max_ms)
        redis.call('ZADD', delayed_key, now + wait, job)
      end
      requeued = requeued + 1
    end
  end
end

local unserved = {}
if grace_ms > 0 and fleet_ready then
  local served = {}
  for i = FIRST_SERVED, #ARGV do
    served[ARGV[i]] = true
  end
  local ids = redis.call('ZRANGE', queue_key, 0, 63)
  if #ids > 0 then
    local raw = redis.call('HMGET', jobs_key, unpack(ids))
    for i, job in ipairs(ids) do
      local h = read_header(raw[i])
      if h and not served[h.fp] and h.queued_ms + grace_ms < now then
        unserved[#unserved + 1] = job
      end
    end
  end
end

-- Ended outcomes past their time, and their listing.
local cutoff = now - result_ttl
for _, ended in ipairs({completed_key, failed_key}) do
  local old = redis.call('ZRANGEBYSCORE', ended, '-inf', cutoff, 'LIMIT', 0, 500)
  if #old > 0 then
    redis.call('ZREM', ended, unpack(old))
    -- Each outcome with what is kept beside it: processor name, resubmission, retry links,
    -- entry body.
    local fields = {}
    for _, run in ipairs(old) do
      fields[#fields + 1] = run
      fields[#fields + 1] = run .. ':p'
      fields[#fields + 1] = run .. ':f'
      fields[#fields + 1] = run .. ':r'
      fields[#fields + 1] = run .. ':o'
    end
    redis.call('HDEL', results_key, unpack(fields))
    redis.call('HDEL', bodies_key, unpack(old))
  end
end

-- A session with ready jobs reports its generation, so a lost enlist is made good.
local ready = 0
if redis.call('ZCARD', queue_key) > 0 then
  ready = tonumber(redis.call('HGET', meta_key, 'ready') or '0')
  if ready == 0 then
    ready = mark_ready()
  end
end
local state = 'live'
if redis.call('ZCARD', runs_key) == 0 then
  state = 'idle'
end
return report(state, requeued, dead, unserved, ready)

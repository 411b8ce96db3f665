-- Queues new runs of a session (one or many), creating the session when it is new. A run
-- the submitting process can start at once (it serves the processor and has a free slot) is
-- leased to it here instead, when nothing of the session waits ahead of it: the job is in
-- Redis before it runs, and no wake or claim is needed.
--- @include "time"
--- @include "session"
--- @include "header"
--- @include "ready"
--- @include "publish"
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
-- For runs to lease at once: the lease, and the session's concurrency quota (0: none).
local lease_ms = tonumber(ARGV[8])
local quota = tonumber(ARGV[9])
-- A retry (the operator's `retry_run`): the failed or dead-lettered run the one run of this
-- call submits again ('' otherwise). It is linked both ways in `results` (`<old>:r` the new
-- run, `<new>:o` the old), and a run is retried once: a second retry answers the first's run.
local retry_of = ARGV[10]
-- ARGV[11..]: per run, 6 values: run id, contract fingerprint, priority, processor name,
-- '1' to lease it to the submitter when it can start at once, then its body (opaque)
local FIRST, PER_RUN = 11, 6
-- Returns {'status', 'ok', 'created', 0|1, 'epoch', the session's epoch (which incarnation
--          of the session id this is: a stopped session's id can be used again), 'enlist',
--          generation (0: already scheduled, or nothing queued), 'runs', {'queued' |
--          'leased' | 'duplicate' | 'quota', ...}, 'leased', {leased job records, body
--          left out: the submitter has it}} or {'status', 'stopping' | 'caller_gone' |
--          'not_retryable'} or {'status', 'retried', 'run', the run that retried it}.
-- A run is refused with 'quota' (and nothing of it written) when the session's queue is at
-- `max_queued`.

local session = redis.call('HMGET', meta_key, 'stopping', 'created_ms', 'epoch')
if session[1] then
  return {'status', 'stopping'}
end
if retry_of ~= '' then
  local taken = redis.call('HGET', results_key, retry_of .. ':r')
  if taken then
    return {'status', 'retried', 'run', taken}
  end
  if not redis.call('ZSCORE', failed_key, retry_of) and not redis.call('ZSCORE', dead_key, retry_of) then
    return {'status', 'not_retryable'}
  end
end
local count = (#ARGV - FIRST + 1) / PER_RUN
local waiting = redis.call('ZCARD', queue_key)
local caller_header, caller_set = nil, nil
if caller ~= '' then
  local raw = redis.call('HGET', jobs_key, caller)
  caller_set = held_by(raw, caller_token)
  if not caller_set then
    return {'status', 'caller_gone'}
  end
  caller_header = read_header(raw)
end

local now = now_ms()
local created = not session[2]
local epoch = tonumber(session[3] or '0')
if created then
  epoch = now_us()
  redis.call('HSET', meta_key, 'created_ms', num(now), 'epoch', num(epoch))
  redis.call('XADD', events_key, 'MAXLEN', '~', events_max_len, '*', 'event', created_event)
  publish(events_channel, created_event)
end
local was_idle = redis.call('ZCARD', runs_key) == 0

-- Runs leased here may not pass the session's concurrency quota.
local free = -1
if quota > 0 then
  free = quota - count_leases()
end
local deadline = now + lease_ms
local now_text, deadline_text = now_ms_text(), num(deadline)
local statuses = {}
local headers, bodies, queued, live, leases, records = {}, {}, {}, {}, {}, {}
-- One submission number per run (FIFO within a priority), reserved at once.
local seq = redis.call('HINCRBY', meta_key, 'seq', count) - count
for at = FIRST, #ARGV, PER_RUN do
  seq = seq + 1
  local run = ARGV[at]
  if dedup and (redis.call('ZSCORE', runs_key, run) or
      redis.call('HEXISTS', results_key, run) == 1) then
    statuses[#statuses + 1] = 'duplicate'
  elseif max_queued > 0 and waiting >= max_queued then
    statuses[#statuses + 1] = 'quota'
  else
    local priority = ARGV[at + 2]
    -- Leased at once only with nothing queued ahead of it (FIFO) and room in the quota.
    local leased = ARGV[at + 4] == '1' and waiting == 0 and free ~= 0
    if leased then
      leases[#leases + 1] = deadline_text
      leases[#leases + 1] = run
      statuses[#statuses + 1] = 'leased'
      free = free - 1
    else
      queued[#queued + 1] = queue_score(priority, seq)
      queued[#queued + 1] = run
      statuses[#statuses + 1] = 'queued'
      waiting = waiting + 1
    end
    local header = new_header(leased,
      new_header_tail(ARGV[at + 1], priority, now_text, '0', '0', ARGV[at + 3]))
    if leased then
      add_leased(records, run, header, '', deadline)
    end
    headers[#headers + 1] = run
    headers[#headers + 1] = header
    bodies[#bodies + 1] = run
    bodies[#bodies + 1] = ARGV[at + 5]
    live[#live + 1] = now_text
    live[#live + 1] = run
  end
end

local gen = 0
if #headers > 0 then
  redis.call('HSET', jobs_key, unpack(headers))
  redis.call('HSET', bodies_key, unpack(bodies))
  redis.call('ZADD', runs_key, unpack(live))
  if #queued > 0 then
    redis.call('ZADD', queue_key, unpack(queued))
    gen = mark_ready()
  end
  if #leases > 0 then
    add_leases(leases)
  end
  if was_idle and not created then
    went_live()
  end
  if retry_of ~= '' then
    redis.call('HSET', results_key, retry_of .. ':r', ARGV[FIRST], ARGV[FIRST] .. ':o', retry_of)
  end
end
if caller_set == leases_key then
  local deadline = redis.call('ZSCORE', leases_key, caller)
  redis.call('ZREM', leases_key, caller)
  redis.call('ZADD', calls_key, deadline, caller)
  caller_header.state = 'C'
  redis.call('HSET', jobs_key, caller, write_header(caller_header))
end
return {'status', 'ok', 'created', created and 1 or 0, 'epoch', epoch, 'enlist', gen,
  'runs', statuses, 'leased', records}

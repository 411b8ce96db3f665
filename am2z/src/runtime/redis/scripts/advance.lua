-- Commits jobs of runs executed step by step, each fenced by its own lease token, together
-- with what follows each: its successor jobs, its fan-in arrivals (the last arrival queues
-- the join; a map's arrival releases its next held item), new map instances' held items, and
-- the run's end when the job ends the run. One call commits what a worker has for one
-- session (group commit): the jobs' fences, the moves of their leases and the jobs they
-- create are read and written once per call, not once per job. Nothing here decodes a user
-- value: inputs, results and held items are opaque strings.
--- @include "time"
--- @include "session"
--- @include "header"
--- @include "ready"
--- @include "publish"
--- @include "end_run"
local done_channel = ARGV[1]
local session_ttl = tonumber(ARGV[2])
local events_channel = ARGV[3]
local events_max_len = ARGV[4]
local commits = tonumber(ARGV[5])
-- KEYS[15..]: the run hash of each commit, in order.
local FIRST_RUN_KEY = 15
-- ARGV[6..]: per commit 16 values: job id, lease token, run id, the fingerprint of the run's
-- step jobs, steps completed and attempts made by the job, '1' when it is the run's entry
-- job, the lease (ms) of a successor handed to the committing worker (0: none is), the run's
-- outcome when the job ends the run ('' : the run goes on), '1' when it succeeded, its
-- `done` line, its run event (JSON), then how many successors, arrivals and held instances
-- follow, and how many chunks the job's own input was staged in (`v:<job>:<n>` fields, freed
-- here); then `successors` × (job id, body, guards), `arrivals` × (instance, branch,
-- expected, result, guards, join job id, join body, closes), `held` × (instance, first held
-- item, last held item). Guards are the fan-out instances above a job, space-separated: a
-- job under a closed instance is not created. `closes` is '1' for the failed branch of a
-- fail-fast parallel: it closes the instance and queues its join at once.
local FIRST, PER_COMMIT = 6, 16
-- Returns {'enlist', generation (0: none), 'results', {one per commit}}, each result
-- {'status', s} with s 'refused' (stale token, not leased, or stopping), 'moot' (the run
-- already ended: the job is gone, nothing else) or 'unstaged' (held items missing: nothing
-- written for it); or {'status', 'ok', 'ended', 0|1, 'closed', {instances closed},
-- 'cancel_run', 0|1 (jobs of the ended run still run), 'handed', {} or the record of the
-- successor leased to the committing worker}.

-- Where each commit's values start, and the fences of all of them at once.
local starts, jobs, runs = {}, {}, {}
local at = FIRST
for i = 1, commits do
  starts[i] = at
  jobs[i] = ARGV[at]
  runs[i] = ARGV[at + 2]
  at = at + PER_COMMIT + tonumber(ARGV[at + 12]) * 3 + tonumber(ARGV[at + 13]) * 8
    + tonumber(ARGV[at + 14]) * 3
end
local raw = redis.call('HMGET', jobs_key, unpack(jobs))
local live_runs = redis.call('ZMSCORE', runs_key, unpack(runs))

local now = now_ms()
-- What the commits write, gathered: once per call.
local from_leases, from_calls, freed = {}, {}, {}
-- The bodies that go: a run's entry body stays (its input, shown by inspection and
-- submitted again by a retry) until the sweeper trims the run's outcome.
local freed_bodies = {}
local headers, bodies, handed_leases, queued = {}, {}, {}, {}
local ends, run_events, ended_here = {}, {}, {}
local results = {}

-- Commit `i`, its values from ARGV[a], its run hash `run_key`; returns its result.
local function advance(i, a, run_key)
  local job, token, run, step_fp = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local version_delta, attempts_delta = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local entry, hand_off_ms = ARGV[a + 6] == '1', tonumber(ARGV[a + 7])
  local outcome, ok, done, run_event = ARGV[a + 8], ARGV[a + 9] == '1', ARGV[a + 10],
    ARGV[a + 11]
  local successors, arrivals, held = tonumber(ARGV[a + 12]), tonumber(ARGV[a + 13]),
    tonumber(ARGV[a + 14])
  local consumed = tonumber(ARGV[a + 15])
  local at_successors = a + PER_COMMIT
  local at_arrivals = at_successors + successors * 3
  local at_held = at_arrivals + arrivals * 8

  local set = held_by(raw[i], token)
  if not set then
    return {'status', 'refused'}
  end
  local h = read_header(raw[i])
  for b = at_held, at_held + (held - 1) * 3, 3 do
    local last = 'i:' .. ARGV[b] .. ':' .. ARGV[b + 2]
    if redis.call('HEXISTS', run_key, last) == 0 then
      return {'status', 'unstaged'}
    end
  end
  if set == leases_key then
    from_leases[#from_leases + 1] = job
  else
    from_calls[#from_calls + 1] = job
  end
  freed[#freed + 1] = job
  if not live_runs[i] or ended_here[run] then
    -- The run already ended (a failed sibling, a deadline, a dead-lettered step).
    if not entry then
      freed_bodies[#freed_bodies + 1] = job
    end
    return {'status', 'moot'}
  end
  if not entry then
    freed_bodies[#freed_bodies + 1] = job
  end

  for n = 0, consumed - 1 do
    redis.call('HDEL', run_key, 'v:' .. job .. ':' .. n)
  end
  local attempts = attempts_delta + h.attempts
  local version = redis.call('HINCRBY', run_key, 'version', version_delta)
  local run_attempts = attempts
  if entry then
    -- The run hash starts here; it also names the run's processor while the run is live,
    -- and keeps what a retry resubmits should the run fail (`f`: the entry job is gone).
    redis.call('HSET', run_key, 'attempts', attempts, 'name', h.name, 'f', resubmission(h))
  else
    run_attempts = redis.call('HINCRBY', run_key, 'attempts', attempts)
  end

  local function closed(guards)
    for instance in string.gmatch(guards, '%S+') do
      if redis.call('HEXISTS', run_key, 'c:' .. instance) == 1 then
        return true
      end
    end
    return false
  end

  local created = {}
  local handed = {}
  -- Creates a job of the run, unless a fan-out above it closed. The first job created goes
  -- to the committing worker when it takes it: leased now; the others are queued, ahead of
  -- new runs of their priority (a started run finishes first).
  local function create(id, body, guards)
    if closed(guards) then
      return
    end
    local header = {fp = step_fp, priority = h.priority, token = 0, deliveries = 0,
      created_ms = h.created_ms, queued_ms = now, attempt = 0, attempts = 0,
      version = version, run_attempts = run_attempts, state = 'Q', name = h.name}
    local deadline = nil
    if hand_off_ms > 0 and #created == 0 then
      header.token, header.deliveries, header.state = 1, 1, 'L'
      deadline = now + hand_off_ms
      handed_leases[#handed_leases + 1] = deadline
      handed_leases[#handed_leases + 1] = id
    else
      queued[#queued + 1] = queue_score(h.priority, 0)
      queued[#queued + 1] = id
    end
    local raw_header = write_header(header)
    if deadline then
      handed = leased_record(id, raw_header, body, deadline)
    end
    headers[#headers + 1] = id
    headers[#headers + 1] = raw_header
    bodies[#bodies + 1] = id
    bodies[#bodies + 1] = body
    created[#created + 1] = id
  end

  -- A held item's jobs, packed by the worker as records `<id>\n<guards>\n<length>\n<body>`.
  local function create_packed(packed)
    local p = 1
    while p <= #packed do
      local x = string.find(packed, '\n', p, true)
      local y = string.find(packed, '\n', x + 1, true)
      local z = string.find(packed, '\n', y + 1, true)
      local length = tonumber(string.sub(packed, y + 1, z - 1))
      create(string.sub(packed, p, x - 1), string.sub(packed, z + 1, z + length),
        string.sub(packed, x + 1, y - 1))
      p = z + length + 1
    end
  end

  for b = at_successors, at_arrivals - 1, 3 do
    create(ARGV[b], ARGV[b + 1], ARGV[b + 2])
  end
  for b = at_held, at_held + (held - 1) * 3, 3 do
    redis.call('HSETNX', run_key, 'h:' .. ARGV[b], ARGV[b + 1])
  end
  local closed_now = {}
  for b = at_arrivals, at_held - 1, 8 do
    local instance, branch, expected = ARGV[b], ARGV[b + 1], tonumber(ARGV[b + 2])
    local result, guards = ARGV[b + 3], ARGV[b + 4]
    local join_id, join_body, closes = ARGV[b + 5], ARGV[b + 6], ARGV[b + 7] == '1'
    if not closed(guards .. ' ' .. instance) then
      if closes then
        -- A failed branch of a fail-fast parallel: the parallel fails now, once.
        redis.call('HSET', run_key, 'c:' .. instance, 1)
        closed_now[#closed_now + 1] = instance
        create(join_id, join_body, '')
      elseif redis.call('HSETNX', run_key, 's:' .. instance .. ':' .. branch, result) == 1 then
        local arrived = redis.call('HINCRBY', run_key, 'n:' .. instance, 1)
        if arrived >= expected then
          -- The join job reads the branches' results (`s:` fields) itself, in slices.
          redis.call('HDEL', run_key, 'n:' .. instance, 'h:' .. instance)
          redis.call('HSET', run_key, 'c:' .. instance, 1)
          create(join_id, join_body, '')
        else
          -- A map's next held item takes the place of the one that arrived.
          local next_item = redis.call('HGET', run_key, 'h:' .. instance)
          if next_item and tonumber(next_item) < expected then
            local field = 'i:' .. instance .. ':' .. next_item
            local packed = redis.call('HGET', run_key, field)
            redis.call('HDEL', run_key, field)
            redis.call('HINCRBY', run_key, 'h:' .. instance, 1)
            if packed then
              create_packed(packed)
            end
          end
        end
      end
    end
  end

  -- Jobs of the run not yet committed (the entry job not counted): this one less, the new
  -- ones more.
  local live_delta = #created
  if not entry then
    live_delta = live_delta - 1
  end
  local live = 0
  if live_delta ~= 0 or outcome ~= '' then
    live = redis.call('HINCRBY', run_key, 'live', live_delta)
  end

  if outcome ~= '' then
    ended_here[run] = true
    run_events[#run_events + 1] = run_event
    -- A failed run keeps what a retry resubmits: the entry job's, read on this path only.
    local again = false
    if not ok then
      if entry then
        again = resubmission(h)
      else
        again = redis.call('HGET', run_key, 'f')
      end
    end
    ends[#ends + 1] = {run, outcome, ok, run_key, done, h.name, again}
    -- Jobs of the run still queued are dropped when claimed; running ones are cancelled.
    return {'status', 'ok', 'ended', 1, 'closed', closed_now,
      'cancel_run', live > 0 and 1 or 0, 'handed', {}}
  end
  return {'status', 'ok', 'ended', 0, 'closed', closed_now, 'cancel_run', 0,
    'handed', handed}
end

for i = 1, commits do
  results[i] = advance(i, starts[i], KEYS[FIRST_RUN_KEY + i - 1])
end

if #from_leases > 0 then
  redis.call('ZREM', leases_key, unpack(from_leases))
end
if #from_calls > 0 then
  redis.call('ZREM', calls_key, unpack(from_calls))
end
if #freed > 0 then
  redis.call('HDEL', jobs_key, unpack(freed))
end
if #freed_bodies > 0 then
  redis.call('HDEL', bodies_key, unpack(freed_bodies))
end
if #headers > 0 then
  redis.call('HSET', jobs_key, unpack(headers))
  redis.call('HSET', bodies_key, unpack(bodies))
end
if #handed_leases > 0 then
  redis.call('ZADD', leases_key, unpack(handed_leases))
end
local gen = 0
if #queued > 0 then
  redis.call('ZADD', queue_key, unpack(queued))
  gen = mark_ready()
end
if #run_events > 0 then
  local events = '[' .. table.concat(run_events, ',') .. ']'
  redis.call('XADD', events_key, 'MAXLEN', '~', events_max_len, '*', 'events', events)
  publish(events_channel, events)
end
end_runs(ends, done_channel, session_ttl)
return {'enlist', gen, 'results', results}

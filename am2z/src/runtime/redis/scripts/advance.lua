-- Commits jobs of runs executed step by step, each fenced by its own lease token, together
-- with what follows each: its successor jobs, its fan-in arrivals (the last arrival queues
-- the join; a map's arrival releases its next held item), new map instances' held items, and
-- the run's end when the job ends the run. One call commits what a worker has for one
-- session (group commit): the jobs' fences, the moves of their leases and the jobs they
-- create are read and written once per call, not once per job, and so is each run's state
-- (counters, fan-out instances, released held items): read once, kept here as each commit
-- changes it, written back once. Per arrival only its result slot's `HSETNX` is left. The
-- first jobs a commit creates are leased to its committing worker, as many as it has slots
-- for. Nothing here decodes a user value: inputs, results and held items are opaque
-- strings. Each commit that lands counts the steps its job finished (`include/count.lua`).
--- @include "time"
--- @include "session"
--- @include "header"
--- @include "ready"
--- @include "publish"
--- @include "end_run"
--- @include "count"
local done_channel = ARGV[1]
local session_ttl = number(ARGV[2])
local events_channel = ARGV[3]
local events_max_len = ARGV[4]
local commits = number(ARGV[5])
-- KEYS[15..]: the run hash of each commit, in order.
local FIRST_RUN_KEY = 15
-- How many stats fields follow (ARGV[7..]), which the commits' finished steps name.
local fields = number(ARGV[6])
local FIELDS_AT = 7
-- Then per commit 19 values: job id, lease token, run id, the fingerprint of the run's
-- step jobs, steps completed and attempts made by the job, '1' when it is the run's entry
-- job, the lease (ms) of the jobs handed to the committing worker (0: none is), how many it
-- takes at most (its slots) and the session's concurrency quota (0: none), the run's outcome when the job ends the run ('' : the
-- run goes on), '1' when it succeeded, its `done` line, its run event (JSON), then how many
-- successors, arrivals and held instances follow, and how many chunks the job's own input
-- was staged in (`v:<job>:<n>` fields, freed here), and the steps it finished (indices into
-- the stats fields: "count"); then `successors` × (job id, body,
-- guards), `arrivals` × (instance, branch, expected, result, guards, join job id, join body,
-- closes), `held` × (instance, first held item, last held item). Guards are the fan-out
-- instances above a job, space-separated: a job under a closed instance is not created.
-- `closes` is '1' for the failed branch of a fail-fast parallel: it closes the instance and
-- queues its join at once.
local FIRST, PER_COMMIT = FIELDS_AT + fields, 19
-- Returns {'enlist', generation (0: none), 'results', {one per commit}}, each result
-- {'status', s} with s 'refused' (stale token, not leased, or stopping), 'moot' (the run
-- already ended: the job is gone, nothing else) or 'unstaged' (held items missing: nothing
-- written for it); or {'status', 'ok', 'ended', 0|1, 'closed', {instances closed},
-- 'cancel_run', 0|1 (jobs of the ended run still run), 'handed', {the records of the jobs
-- leased to the committing worker, at most as many as it takes}}.

-- Where each commit's values start, the fences of all of them at once, and per run hash the
-- fan-out instances its commits name (arrivals' instances and guards, successors' guards)
-- with how many arrivals each gets: the run's state is read once per call, not per commit.
local starts, jobs = {}, {}
-- The distinct runs of the call (a map's items come a dozen to a run), and the index of each
-- commit's in that list: each run's liveness is asked once (Redis formats every score it
-- answers with `printf`).
local distinct, run_at = {}, {}
local named = {}
local at = FIRST
for i = 1, commits do
  starts[i] = at
  jobs[i] = ARGV[at]
  local run = ARGV[at + 2]
  if not run_at[run] then
    distinct[#distinct + 1] = run
    run_at[run] = #distinct
  end
  local run_key = KEYS[FIRST_RUN_KEY + i - 1]
  local n = named[run_key]
  if not n then
    n = {list = {}, arrivals = {}}
    named[run_key] = n
  end
  local function name(instance)
    if not n.arrivals[instance] then
      n.arrivals[instance] = 0
      n.list[#n.list + 1] = instance
    end
  end
  local successors, arrivals = number(ARGV[at + 14]), number(ARGV[at + 15])
  local at_successors = at + PER_COMMIT
  local at_arrivals = at_successors + successors * 3
  for b = at_successors, at_arrivals - 1, 3 do
    for instance in string.gmatch(ARGV[b + 2], '%S+') do
      name(instance)
    end
  end
  for b = at_arrivals, at_arrivals + (arrivals - 1) * 8, 8 do
    for instance in string.gmatch(ARGV[b + 4], '%S+') do
      name(instance)
    end
    name(ARGV[b])
    n.arrivals[ARGV[b]] = n.arrivals[ARGV[b]] + 1
  end
  at = at_arrivals + arrivals * 8 + number(ARGV[at + 16]) * 3
end
local raw = redis.call('HMGET', jobs_key, unpack(jobs))
local live_scores = redis.call('ZMSCORE', runs_key, unpack(distinct))

local now = now_ms()
-- What the commits write, gathered: once per call.
local from_leases, from_calls, freed = {}, {}, {}
-- The bodies that go: a run's entry body stays (its input, shown by inspection and
-- submitted again by a retry) until the sweeper trims the run's outcome.
local freed_bodies = {}
local headers, bodies, handed_leases, queued = {}, {}, {}, {}
local ends, run_events, ended_here = {}, {}, {}
local results = {}
local finished = {}

-- The run hashes this call commits to, by key (and in the order first used): their counters
-- and fan-out instances as of the commits so far, read on first use and written back once,
-- after the last commit.
local states, touched = {}, {}

-- A fan-out instance's state: `closed`, `n` (arrivals), `h` (its next held item, or nil),
-- from `values` (its `c:`, `n:` and `h:` fields), and how many of the call's `arrivals` are
-- still to come to it.
local function instance_state(values, arrivals)
  local h = values[3] and number(values[3]) or nil
  local n = number(values[2] or '0')
  return {closed = values[1] ~= false, n = n, h = h, n_read = n, h_read = h,
    arrivals = arrivals or 0, items = {}, fields = {}, released = {}, joined = false}
end

-- The state of run `run`'s hash `run_key`, read with one `HMGET`: `version`, `attempts`,
-- `live` and the instances the call's commits name.
local function run_state(run, run_key)
  local s = states[run_key]
  if s then
    return s
  end
  local n = named[run_key]
  local fields = {'version', 'attempts', 'live'}
  for _, instance in ipairs(n.list) do
    fields[#fields + 1] = 'c:' .. instance
    fields[#fields + 1] = 'n:' .. instance
    fields[#fields + 1] = 'h:' .. instance
  end
  local v = redis.call('HMGET', run_key, unpack(fields))
  s = {run = run, key = run_key, version = number(v[1] or '0'),
    attempts = number(v[2] or '0'), live = number(v[3] or '0'), instances = {}, freed = {}}
  s.version_read, s.attempts_read, s.live_read = s.version, s.attempts, s.live
  for k, instance in ipairs(n.list) do
    local f = 3 + (k - 1) * 3
    s.instances[instance] = instance_state({v[f + 1], v[f + 2], v[f + 3]},
      n.arrivals[instance])
  end
  states[run_key] = s
  touched[#touched + 1] = s
  return s
end

-- Instance `instance` of run state `s` (read now when no commit named it: a released held
-- item's guards).
local function instance_of(s, instance)
  local x = s.instances[instance]
  if not x then
    x = instance_state(redis.call('HMGET', s.key, 'c:' .. instance, 'n:' .. instance,
      'h:' .. instance))
    s.instances[instance] = x
  end
  return x
end

-- Whether a fan-out instance among `guards` (space-separated) is closed.
local function closed(s, guards)
  for instance in string.gmatch(guards, '%S+') do
    if instance_of(s, instance).closed then
      return true
    end
  end
  return false
end

-- Held item `item` of instance `x` (`instance`, `expected` items), released now: its packed
-- jobs, or false. The items the call's remaining arrivals at the instance can release are
-- read together, with one `HMGET`, and deleted together at the end.
local function release_item(s, x, instance, item, expected)
  if x.items[item] == nil then
    local last = math.min(item + math.max(x.arrivals, 1) - 1, expected - 1)
    local fields, prefix = {}, 'i:' .. instance .. ':'
    for k = item, last do
      fields[#fields + 1] = prefix .. num(k)
    end
    local packed = redis.call('HMGET', s.key, unpack(fields))
    for k = item, last do
      x.items[k] = packed[k - item + 1]
      x.fields[k] = fields[k - item + 1]
    end
  end
  x.released[#x.released + 1] = x.fields[item]
  return x.items[item]
end

-- Whether the session's concurrency `quota` (0: none) has room for one more lease, taken
-- if so. The first job a commit hands over takes its committing job's lease; each other one
-- is a lease more.
local leased = nil
local function room(quota)
  if quota == 0 then
    return true
  end
  if not leased then
    leased = count_leases()
  end
  if leased >= quota then
    return false
  end
  leased = leased + 1
  return true
end

-- Commit `i`, its values from ARGV[a], its run hash `run_key`; returns its result.
local function advance(i, a, run_key)
  local job, token, run, step_fp = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local version_delta, attempts_delta = number(ARGV[a + 4]), number(ARGV[a + 5])
  local entry, hand_off_ms = ARGV[a + 6] == '1', number(ARGV[a + 7])
  local hand_off_most, quota = number(ARGV[a + 8]), number(ARGV[a + 9])
  local outcome, ok, done, run_event = ARGV[a + 10], ARGV[a + 11] == '1', ARGV[a + 12],
    ARGV[a + 13]
  local successors, arrivals, held = number(ARGV[a + 14]), number(ARGV[a + 15]),
    number(ARGV[a + 16])
  local consumed = number(ARGV[a + 17])
  local steps = ARGV[a + 18]
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
  tally_steps(finished, steps)
  if set == leases_key then
    from_leases[#from_leases + 1] = job
  else
    from_calls[#from_calls + 1] = job
  end
  freed[#freed + 1] = job
  if not live_scores[run_at[run]] or ended_here[run] then
    -- The run already ended (a failed sibling, a deadline, a dead-lettered step).
    if not entry then
      freed_bodies[#freed_bodies + 1] = job
    end
    return {'status', 'moot'}
  end
  if not entry then
    freed_bodies[#freed_bodies + 1] = job
  end

  local s = run_state(run, run_key)
  for n = 0, consumed - 1 do
    s.freed[#s.freed + 1] = 'v:' .. job .. ':' .. n
  end
  local attempts = attempts_delta + h.attempts
  s.version = s.version + version_delta
  local version = s.version
  if entry then
    -- The run hash starts here; it also names the run's processor while the run is live,
    -- and keeps what a retry resubmits should the run fail (`f`: the entry job is gone).
    s.attempts, s.entry = attempts, true
    redis.call('HSET', run_key, 'name', h.name, 'f', resubmission(h))
  else
    s.attempts = s.attempts + attempts
  end
  local run_attempts = s.attempts

  local created = 0
  local handed = {}
  -- Creates a job of the run, unless a fan-out above it closed. The first jobs created go
  -- to the committing worker, as many as it takes: leased now; the others are queued, ahead
  -- of new runs of their priority (a started run finishes first).
  -- The jobs a commit creates share their header but for its front (queued, or leased to the
  -- committing worker), their lease deadline and their queue score: each formatted once per
  -- commit, not per job.
  local rest, deadline, deadline_text, score = nil, now + hand_off_ms, nil, nil
  local function create(id, body, guards)
    if closed(s, guards) then
      return
    end
    rest = rest or new_header_tail(step_fp, h.priority_text, h.created_text, num(version),
      num(run_attempts), h.name)
    local raw_header
    local count = leased_count(handed)
    if hand_off_ms > 0 and count < hand_off_most and (count == 0 or room(quota)) then
      raw_header = new_header(true, rest)
      deadline_text = deadline_text or num(deadline)
      handed_leases[#handed_leases + 1] = deadline_text
      handed_leases[#handed_leases + 1] = id
      add_leased(handed, id, raw_header, body, deadline)
    else
      raw_header = new_header(false, rest)
      score = score or queue_score(h.priority, 0)
      queued[#queued + 1] = score
      queued[#queued + 1] = id
    end
    headers[#headers + 1] = id
    headers[#headers + 1] = raw_header
    bodies[#bodies + 1] = id
    bodies[#bodies + 1] = body
    created = created + 1
  end

  -- A held item's jobs, packed by the worker as records `<id>\n<guards>\n<length>\n<body>`.
  local function create_packed(packed)
    local p = 1
    while p <= #packed do
      local x = string.find(packed, '\n', p, true)
      local y = string.find(packed, '\n', x + 1, true)
      local z = string.find(packed, '\n', y + 1, true)
      local length = number(string.sub(packed, y + 1, z - 1))
      create(string.sub(packed, p, x - 1), string.sub(packed, z + 1, z + length),
        string.sub(packed, x + 1, y - 1))
      p = z + length + 1
    end
  end

  for b = at_successors, at_arrivals - 1, 3 do
    create(ARGV[b], ARGV[b + 1], ARGV[b + 2])
  end
  for b = at_held, at_held + (held - 1) * 3, 3 do
    if redis.call('HSETNX', run_key, 'h:' .. ARGV[b], ARGV[b + 1]) == 1 then
      local x = s.instances[ARGV[b]]
      if x then
        x.h = number(ARGV[b + 1])
        x.h_read = x.h
      end
    end
  end
  local closed_now = {}
  for b = at_arrivals, at_held - 1, 8 do
    local instance, branch, expected = ARGV[b], ARGV[b + 1], number(ARGV[b + 2])
    local result, guards = ARGV[b + 3], ARGV[b + 4]
    local join_id, join_body, closes = ARGV[b + 5], ARGV[b + 6], ARGV[b + 7] == '1'
    local x = instance_of(s, instance)
    if not closed(s, guards) and not x.closed then
      if closes then
        -- A failed branch of a fail-fast parallel: the parallel fails now, once.
        redis.call('HSET', run_key, 'c:' .. instance, 1)
        x.closed = true
        closed_now[#closed_now + 1] = instance
        create(join_id, join_body, '')
      elseif redis.call('HSETNX', run_key, 's:' .. instance .. ':' .. branch, result) == 1 then
        x.n = x.n + 1
        if x.n >= expected then
          -- The join job reads the branches' results (`s:` fields) itself, in slices.
          redis.call('HDEL', run_key, 'n:' .. instance, 'h:' .. instance)
          redis.call('HSET', run_key, 'c:' .. instance, 1)
          x.closed, x.joined = true, true
          create(join_id, join_body, '')
        elseif x.h and x.h < expected then
          -- A map's next held item takes the place of the one that arrived.
          local packed = release_item(s, x, instance, x.h, expected)
          x.h = x.h + 1
          if packed then
            create_packed(packed)
          end
        end
      end
    end
    x.arrivals = x.arrivals - 1
  end

  -- Jobs of the run not yet committed (the entry job not counted): this one less, the new
  -- ones more.
  local live_delta = created
  if not entry then
    live_delta = live_delta - 1
  end
  s.live = s.live + live_delta

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
      'cancel_run', s.live > 0 and 1 or 0, 'handed', {}}
  end
  return {'status', 'ok', 'ended', 0, 'closed', closed_now, 'cancel_run', 0,
    'handed', handed}
end

for i = 1, commits do
  results[i] = advance(i, starts[i], KEYS[FIRST_RUN_KEY + i - 1])
end

-- What the commits changed in the hashes of runs that go on, written back: one `HSET` and
-- one `HDEL` per run (the hash of a run that ended here is unlinked whole).
for _, s in ipairs(touched) do
  if not ended_here[s.run] then
    -- The entry job's commit writes both counters: the run hash starts with them.
    local set = {}
    if s.version ~= s.version_read or s.entry then
      set[#set + 1] = 'version'
      set[#set + 1] = num(s.version)
    end
    if s.attempts ~= s.attempts_read or s.entry then
      set[#set + 1] = 'attempts'
      set[#set + 1] = num(s.attempts)
    end
    if s.live ~= s.live_read then
      set[#set + 1] = 'live'
      set[#set + 1] = num(s.live)
    end
    local freed_fields = s.freed
    for instance, x in pairs(s.instances) do
      if not x.joined then
        if x.n ~= x.n_read then
          set[#set + 1] = 'n:' .. instance
          set[#set + 1] = num(x.n)
        end
        if x.h and x.h ~= x.h_read then
          set[#set + 1] = 'h:' .. instance
          set[#set + 1] = num(x.h)
        end
      end
      for _, field in ipairs(x.released) do
        freed_fields[#freed_fields + 1] = field
      end
    end
    if #set > 0 then
      redis.call('HSET', s.key, unpack(set))
    end
    if #freed_fields > 0 then
      redis.call('HDEL', s.key, unpack(freed_fields))
    end
  end
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
  add_leases(handed_leases)
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
count_steps(finished, FIELDS_AT)
return {'enlist', gen, 'results', results}

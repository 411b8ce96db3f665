-- Commits one job of a run executed step by step (fenced by its lease token) together with
-- what follows it: its successor jobs, its fan-in arrivals (the last arrival queues the join;
-- a map's arrival releases its next held item), new map instances' held items, and the run's
-- end when the job ends the run. Nothing here decodes a user value: inputs, results and held
-- items are opaque strings.
--- @include "time"
--- @include "session"
--- @include "header"
--- @include "ready"
--- @include "end_run"
local run_key = KEYS[15]
local job = ARGV[1]
local token = ARGV[2]
local run = ARGV[3]
-- The fingerprint of the run's step jobs (the workflow's, marked as run step by step).
local step_fp = ARGV[4]
-- Steps completed and attempts made by this job.
local version_delta = tonumber(ARGV[5])
local attempts_delta = tonumber(ARGV[6])
-- '1' when the job is the run's entry job.
local entry = ARGV[7] == '1'
-- The lease (ms) of a successor handed to the committing worker (0: none is).
local hand_off_ms = tonumber(ARGV[8])
local done_channel = ARGV[9]
local session_ttl = tonumber(ARGV[10])
local events_channel = ARGV[11]
local events_max_len = ARGV[12]
-- The run's outcome when this job ends the run ('' : the run goes on), whether it succeeded,
-- its `done` message and its run event (JSON).
local outcome = ARGV[13]
local ok = ARGV[14] == '1'
local done = ARGV[15]
local run_event = ARGV[16]
local successors = tonumber(ARGV[17])
local arrivals = tonumber(ARGV[18])
local held = tonumber(ARGV[19])
-- How many chunks the job's own input was staged in (`v:<job>:<n>` fields, freed here).
local consumed = tonumber(ARGV[20])
-- ARGV[20..]: `successors` × (job id, body, guards), then `arrivals` × (instance, branch,
-- expected, result, guards, join job id, join body, closes), then `held` × (instance, first
-- held item, last held item). Guards are the fan-out instances above a job, space-separated:
-- a job under a closed instance is not created. `closes` is '1' for the failed branch of a
-- fail-fast parallel: it closes the instance and queues its join at once.
local FIRST = 21
-- Returns {'status', s} with s 'refused' (stale token, not leased, or stopping), 'moot' (the
-- run already ended: the job is gone, nothing else) or 'unstaged' (held items missing:
-- nothing written); or {'status', 'ok', 'ended', 0|1, 'queued', n, 'enlist', generation,
-- 'closed', {instances closed}, 'cancel_run', 0|1 (jobs of the ended run still run),
-- 'handed', {} or the record of the successor leased to the caller}.

local h = read_header(redis.call('HGET', jobs_key, job))
local set = lease_set_of(job)
if stopping() or not h or tostring(h.token) ~= token or not set then
  return {'status', 'refused'}
end
local at_arrivals = FIRST + successors * 3
local at_held = at_arrivals + arrivals * 8
for at = at_held, at_held + (held - 1) * 3, 3 do
  local last = 'i:' .. ARGV[at] .. ':' .. ARGV[at + 2]
  if redis.call('HEXISTS', run_key, last) == 0 then
    return {'status', 'unstaged'}
  end
end
redis.call('ZREM', set, job)
redis.call('HDEL', jobs_key, job)
redis.call('HDEL', bodies_key, job)
if not redis.call('ZSCORE', runs_key, run) then
  -- The run already ended (a failed sibling, a deadline, a dead-lettered step).
  return {'status', 'moot'}
end

local now = now_ms()
for n = 0, consumed - 1 do
  redis.call('HDEL', run_key, 'v:' .. job .. ':' .. n)
end
local attempts = attempts_delta + h.attempts
local version = redis.call('HINCRBY', run_key, 'version', version_delta)
local run_attempts = redis.call('HINCRBY', run_key, 'attempts', attempts)

local function closed(guards)
  for instance in string.gmatch(guards, '%S+') do
    if redis.call('HEXISTS', run_key, 'c:' .. instance) == 1 then
      return true
    end
  end
  return false
end

local created, bodies = {}, {}
-- Creates a job of the run, unless a fan-out above it closed.
local function create(id, body, guards)
  if closed(guards) then
    return
  end
  redis.call('HSET', jobs_key, id, write_header({fp = step_fp, priority = h.priority,
    token = 0, deliveries = 0, created_ms = h.created_ms, queued_ms = now, attempt = 0,
    attempts = 0, version = version, run_attempts = run_attempts, name = h.name}))
  redis.call('HSET', bodies_key, id, body)
  created[#created + 1] = id
  bodies[id] = body
end

-- A held item's jobs, packed by the worker as records `<id>\n<guards>\n<length>\n<body>`.
local function create_packed(packed)
  local at = 1
  while at <= #packed do
    local a = string.find(packed, '\n', at, true)
    local b = string.find(packed, '\n', a + 1, true)
    local c = string.find(packed, '\n', b + 1, true)
    local length = tonumber(string.sub(packed, b + 1, c - 1))
    create(string.sub(packed, at, a - 1), string.sub(packed, c + 1, c + length),
      string.sub(packed, a + 1, b - 1))
    at = c + length + 1
  end
end

for at = FIRST, at_arrivals - 1, 3 do
  create(ARGV[at], ARGV[at + 1], ARGV[at + 2])
end
for at = at_held, at_held + (held - 1) * 3, 3 do
  redis.call('HSETNX', run_key, 'h:' .. ARGV[at], ARGV[at + 1])
end
local closed_now = {}
for at = at_arrivals, at_held - 1, 8 do
  local instance, branch, expected = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  local result, guards = ARGV[at + 3], ARGV[at + 4]
  local join_id, join_body, closes = ARGV[at + 5], ARGV[at + 6], ARGV[at + 7] == '1'
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
local live = redis.call('HINCRBY', run_key, 'live', live_delta)

if outcome ~= '' then
  redis.call('XADD', events_key, 'MAXLEN', '~', events_max_len, '*', 'event', run_event)
  redis.call('PUBLISH', events_channel, run_event)
  end_run(run, outcome, ok, run_key, done_channel, done, session_ttl)
  -- Jobs of the run still queued are dropped when claimed; running ones are cancelled.
  return {'status', 'ok', 'ended', 1, 'queued', 0, 'enlist', 0, 'closed', closed_now,
    'cancel_run', live > 0 and 1 or 0, 'handed', {}}
end

-- The first new job goes to the caller (its slot passes on); the others are queued, ahead
-- of new runs of their priority (a started run finishes first).
local first = 1
local handed = {}
if hand_off_ms > 0 and #created > 0 then
  first = 2
  local id = created[1]
  local deadline = now + hand_off_ms
  local handed_header = read_header(redis.call('HGET', jobs_key, id))
  handed_header.token = 1
  handed_header.deliveries = 1
  redis.call('HSET', jobs_key, id, write_header(handed_header))
  redis.call('ZADD', leases_key, deadline, id)
  handed = leased_record(id, handed_header, bodies[id], deadline)
end
local queued = {}
for i = first, #created do
  queued[#queued + 1] = queue_score(h.priority, 0)
  queued[#queued + 1] = created[i]
end
local gen = 0
if #queued > 0 then
  redis.call('ZADD', queue_key, unpack(queued))
  gen = mark_ready()
end
return {'status', 'ok', 'ended', 0, 'queued', #queued / 2, 'enlist', gen,
  'closed', closed_now, 'cancel_run', 0, 'handed', handed}

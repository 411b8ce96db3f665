-- Commits the ends of one session's runs executed as one job each, in one call: each fenced
-- by its own lease token, each counting the steps its run finished, announced in one `done`
-- message (the runs' events went just before, as a plain `XADD` and message: no script
-- reads them). A slot an end frees can be refilled at once: the session's next ready jobs
-- are leased for it here (no claim round trip).
--- @include "time"
--- @include "session"
--- @include "header"
--- @include "publish"
--- @include "end_run"
--- @include "lease"
--- @include "count"
local done_channel = ARGV[1]
local session_ttl = tonumber(ARGV[2])
local dead_max_len = tonumber(ARGV[3])
-- How many stats fields follow, and how many run ends after them.
local fields = tonumber(ARGV[4])
local endings = tonumber(ARGV[5])
-- For refills: the lease, and the session's concurrency quota (0: none).
local lease_ms = tonumber(ARGV[6])
local quota = tonumber(ARGV[7])
-- The `done` lines of the runs to end, in order, joined by '\n': the `done` message as is
-- when every end is committed (built again from the lines that are, when some are not).
local done_all = ARGV[8]
-- ARGV[9..]: `fields` stats fields ('add_one:completed'); then per run to end 6 values: job
-- id (= run id), lease token, outcome (JSON, opaque), its flags (one digit, the sum of 1:
-- it succeeded, 2: its input could not be decoded (dead-lettered), 4: its slot wants a next
-- job), its processor's name (as the worker leased it), and the steps it finished (indices
-- into the fields: "count"); then the contract fingerprints the worker serves.
local FIRST, PER_JOB = 9, 6
-- The flags digits with each flag set: table lookups, cheaper than decoding each digit.
local SUCCEEDED = {['1'] = true, ['3'] = true, ['5'] = true, ['7'] = true}
local DEAD = {['2'] = true, ['3'] = true, ['6'] = true, ['7'] = true}
local REFILL = {['4'] = true, ['5'] = true, ['6'] = true, ['7'] = true}
-- Returns {'results', {'committed' | 'refused', ...}, 'handed', {leased job records}}:
-- refused when the token moved on or the job is not leased (nothing is written for it; so
-- every end of a session that is gone or stopping). The handed jobs go, in order, to the
-- committed ends whose slot wanted one.

local session = redis.call('HMGET', meta_key, 'created_ms', 'stopping')
local live = session[1] and not session[2]

local first_job = FIRST + fields
local first_served = first_job + endings * PER_JOB
local jobs = {}
for at = first_job, first_served - 1, PER_JOB do
  jobs[#jobs + 1] = ARGV[at]
end
local results, refills = {}, 0
local finished = {}
if #jobs > 0 then
  -- Each job here is its run's entry job, so its fence is its run's liveness too: a run's
  -- entry job is in `jobs` only while the run is live (every script that ends a run removes
  -- its entry job in the same call: invariant 12).
  local headers = redis.call('HMGET', jobs_key, unpack(jobs))
  local freed, from_leases, from_calls, ends, dead = {}, {}, {}, {}, {}
  for i, job in ipairs(jobs) do
    local at = first_job + (i - 1) * PER_JOB
    local set = held_by(headers[i], ARGV[at + 1])
    if not set then
      results[i] = 'refused'
    else
      results[i] = 'committed'
      tally_steps(finished, ARGV[at + 5])
      local flags = ARGV[at + 3]
      if REFILL[flags] then
        refills = refills + 1
      end
      freed[#freed + 1] = job
      if set == leases_key then
        from_leases[#from_leases + 1] = job
      else
        from_calls[#from_calls + 1] = job
      end
      local ok = SUCCEEDED[flags] == true
      -- A failed run keeps what a retry resubmits (parsed only on this path).
      local again = false
      if not ok then
        again = resubmission(read_header(headers[i]))
      end
      ends[#ends + 1] = {job, ARGV[at + 2], ok, false, '', ARGV[at + 4], again}
      if DEAD[flags] then
        dead[#dead + 1] = job
      end
    end
  end
  if #from_leases > 0 then
    redis.call('ZREM', leases_key, unpack(from_leases))
  end
  if #from_calls > 0 then
    redis.call('ZREM', calls_key, unpack(from_calls))
  end
  -- Each job here is its run's entry job: its body (the run's input) stays with the run's
  -- outcome, trimmed with it by the sweeper.
  if #freed > 0 then
    redis.call('HDEL', jobs_key, unpack(freed))
  end
  -- The `done` message: as the worker joined it, unless some end was refused.
  local done = done_all
  if #ends < #jobs then
    local lines, from = {}, 1
    for i = 1, #jobs do
      -- `done` lines hold no newline (`messages::Done`).
      local to = string.find(done_all, '\n', from, true) or (#done_all + 1)
      if results[i] == 'committed' then
        lines[#lines + 1] = string.sub(done_all, from, to - 1)
      end
      from = to + 1
    end
    done = table.concat(lines, '\n')
  end
  end_runs(ends, done_channel, session_ttl, done)
  for _, run in ipairs(dead) do
    bury(run, dead_max_len)
  end
  count_steps(finished, FIRST)
end
local handed = {}
if refills > 0 and live then
  if quota > 0 then
    refills = math.min(refills, quota - count_leases())
  end
  if refills > 0 then
    handed = lease_ready(refills, served_from(first_served), lease_ms)
  end
end
return {'results', results, 'handed', handed}

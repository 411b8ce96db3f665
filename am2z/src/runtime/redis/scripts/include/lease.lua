-- Leasing ready jobs (needs "time", "session" and "header"): `claim.lua` leases for a
-- worker's free slots, `commit.lua` for the slots its ends free.

-- Leases up to `most` ready jobs of the session whose contract fingerprint is in `served`
-- (a set), until `now_ms() + lease_ms`. Reads the queue's head a window at a time (first
-- `most` jobs, then twice as many, ...), so the usual lease reads and parses only the jobs
-- it takes; up to 64 jobs this worker cannot run (another version's, or another
-- deployment's) do not block the ones behind. A job whose run already ended (a failed
-- sibling, a deadline) is dropped, not leased. Returns the leased job records
-- (`add_leased`: a flat list) and how many jobs stay queued.
local function lease_ready(most, served, lease_ms)
  local deadline = now_ms() + lease_ms
  local deadline_text = num(deadline)
  local taken, headers, leased, gone, dropped = {}, {}, {}, {}, {}
  local from, window, seen, exhausted = 0, most, 0, false
  while #taken < most and seen < 64 and not exhausted do
    window = math.min(window, 64 - seen)
    local ids = redis.call('ZRANGE', queue_key, from, from + window - 1)
    exhausted = #ids < window
    if #ids == 0 then
      break
    end
    seen = seen + #ids
    local raw = redis.call('HMGET', jobs_key, unpack(ids))
    -- A run's entry job is in `jobs` only while its run is live (invariant 12): only later
    -- step jobs (`<run>.<position>`) need their run looked up.
    local steps, step_of = {}, {}
    for i, id in ipairs(ids) do
      if #id > 32 then
        steps[#steps + 1] = run_of(id)
        step_of[i] = #steps
      end
    end
    local live = {}
    if #steps > 0 then
      live = redis.call('ZMSCORE', runs_key, unpack(steps))
    end
    for i, id in ipairs(ids) do
      local header, fp = nil, nil
      if raw[i] then
        header, fp = leased_header(raw[i])
      end
      if not header then
        gone[#gone + 1] = id
      elseif step_of[i] and not live[step_of[i]] then
        gone[#gone + 1] = id
        dropped[#dropped + 1] = id
      elseif #taken < most and served[fp] then
        taken[#taken + 1] = {id, header}
        headers[#headers + 1] = id
        headers[#headers + 1] = header
        leased[#leased + 1] = deadline_text
        leased[#leased + 1] = id
        gone[#gone + 1] = id
      end
    end
    -- Nothing is removed before the loop ends: the next window starts past this one.
    from = from + #ids
    window = window * 2
  end
  if #gone > 0 then
    redis.call('ZREM', queue_key, unpack(gone))
  end
  if #dropped > 0 then
    redis.call('HDEL', jobs_key, unpack(dropped))
    redis.call('HDEL', bodies_key, unpack(dropped))
  end
  local left = seen - #gone
  if not exhausted then
    left = redis.call('ZCARD', queue_key)
  end
  if #taken == 0 then
    return {}, left
  end
  redis.call('HSET', jobs_key, unpack(headers))
  add_leases(leased)
  local ids_taken = {}
  for i, t in ipairs(taken) do
    ids_taken[i] = t[1]
  end
  local bodies = redis.call('HMGET', bodies_key, unpack(ids_taken))
  local jobs = {}
  for i, t in ipairs(taken) do
    add_leased(jobs, t[1], t[2], bodies[i], deadline)
  end
  return jobs, left
end

-- The set of fingerprints in ARGV from `first` on.
local function served_from(first)
  local served = {}
  for i = first, #ARGV do
    served[ARGV[i]] = true
  end
  return served
end

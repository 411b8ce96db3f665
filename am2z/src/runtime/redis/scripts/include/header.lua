-- A job's header: the small record scripts read and rewrite (`jobs` hash), its fields joined
-- by '|': `state|token|deliveries|fp|priority|created_ms|queued_ms|attempt|attempts|version|
-- run_attempts|name`, the processor's name, the only free text, last. The fields a lease
-- changes come first, so fencing and leasing read and rewrite the front alone (the Rust side
-- parses the whole header of a leased job: `protocol/claim.rs`). Mirrored by the tests'
-- layout (`tests/src/layout.rs`). `state` is 'Q' (queued or waiting in `delayed`), 'L'
-- (leased: in `leases`) or 'C' (leased, its step waiting on a `ctx.call`: in `calls`).
local function read_header(raw)
  if not raw then
    return nil
  end
  local state, token, deliveries, fp, priority, created, queued, attempt, attempts, version,
    run_attempts, name = string.match(raw,
      '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  if not state then
    return nil
  end
  local priority_n, created_n = number(priority), number(created)
  return {
    state = state,
    token = number(token) or 0,
    deliveries = number(deliveries) or 0,
    fp = fp,
    priority = priority_n or 0,
    created_ms = created_n or 0,
    -- The same two as text, for a successor's header (no number formatted per job).
    priority_text = priority_n and priority or '0',
    created_text = created_n and created or '0',
    queued_ms = number(queued) or 0,
    attempt = number(attempt) or 0,
    attempts = number(attempts) or 0,
    version = number(version) or 0,
    run_attempts = number(run_attempts) or 0,
    name = name,
  }
end

-- The processor's name of a header (its last field, the only free text), or false.
local NAME_PATTERN = '^' .. string.rep('[^|]*|', 11) .. '(.*)$'
local function header_name(raw)
  if not raw then
    return false
  end
  return string.match(raw, NAME_PATTERN) or false
end

local function write_header(h)
  return table.concat({h.state, num(h.token), num(h.deliveries), h.fp, num(h.priority),
    num(h.created_ms), num(h.queued_ms), num(h.attempt), num(h.attempts), num(h.version),
    num(h.run_attempts), h.name}, '|')
end

-- A new job's header but for its front (state, token, deliveries): every field as text, the
-- job queued now (`now_ms_text()`) and no attempt made yet. Jobs a call creates alike share
-- one tail, so a batch of them formats no number per job. One `..` chain makes one string;
-- `table.concat` would make a table and, through its buffer, strings along the way (Lua
-- hashes every byte of each).
local function new_header_tail(fp, priority, created_ms, version, run_attempts, name)
  return fp .. '|' .. priority .. '|' .. created_ms .. '|' .. now_ms_text() .. '|0|0|' ..
    version .. '|' .. run_attempts .. '|' .. name
end

-- The header of a job created now, from its `tail`: queued ('Q'), or leased at once ('L',
-- with its first token and delivery) when `leased`.
local function new_header(leased, tail)
  return (leased and 'L|1|1|' or 'Q|0|0|') .. tail
end

-- The lease set (`leases` for 'L', `calls` for 'C') of a header whose lease the caller holds
-- with `token` (a string), or nil: no such job (it ended, or its session is being stopped),
-- another token, or not leased. This is the fence every script acting on a lease passes
-- first; it reads the header's front only.
local function held_by(raw, token)
  if not raw then
    return nil
  end
  local state, held = string.match(raw, '^(%a)|(%d+)|')
  if held ~= token then
    return nil
  end
  if state == 'L' then
    return leases_key
  elseif state == 'C' then
    return calls_key
  end
  return nil
end

-- A queued job's header leased anew (state 'L', token and deliveries one up), and its
-- contract fingerprint; nil when `raw` is not a header.
local function leased_header(raw)
  local token, deliveries, rest, fp = string.match(raw, '^%a|(%d+)|(%d+)|(([^|]*)|.*)$')
  if not token then
    return nil
  end
  -- A job's first lease, the usual one, formats no number.
  if token == '0' and deliveries == '0' then
    return 'L|1|1|' .. rest, fp
  end
  return 'L|' .. num(tonumber(token) + 1) .. '|' .. num(tonumber(deliveries) + 1) .. '|' .. rest,
    fp
end

-- Adds a leased job to `list`, a reply's flat list of leased jobs: its id, header (parsed by
-- the worker), lease deadline and body, four values in a row (`LeasedJob::COLUMNS`). Flat:
-- Redis turns a script's reply into a reply value by value, at a cost for each table, so a
-- table per job would cost more than the job's values.
local function add_leased(list, id, header, body, deadline)
  local n = #list
  list[n + 1] = id
  list[n + 2] = header
  list[n + 3] = deadline
  list[n + 4] = body or ''
end

-- How many leased jobs a list `add_leased` filled holds.
local function leased_count(list)
  return #list / 4
end

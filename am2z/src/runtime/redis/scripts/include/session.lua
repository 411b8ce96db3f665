-- The session's fixed keys: every session script takes them first, in this order (the Rust
-- side builds them with `SessionKeys::fixed`), then its own keys.
local meta_key = KEYS[1]
local jobs_key = KEYS[2]
local bodies_key = KEYS[3]
local queue_key = KEYS[4]
local delayed_key = KEYS[5]
local leases_key = KEYS[6]
local calls_key = KEYS[7]
local runs_key = KEYS[8]
local results_key = KEYS[9]
local completed_key = KEYS[10]
local failed_key = KEYS[11]
local dead_key = KEYS[12]
local events_key = KEYS[13]
local stats_key = KEYS[14]
local SESSION_KEYS = 14

-- Whether the session is being stopped: no script writes to it then (fenced scripts need not
-- ask: `stop_begin` unlinks the jobs, so every lease is gone at once).
local function stopping()
  return redis.call('HEXISTS', meta_key, 'stopping') == 1
end

-- The session got its first live run: its keys no longer expire (invariant 1). Its event
-- stream, which workers append to with `XADD NOMKSTREAM`, was made with the session and
-- shares its expiry: the same `PEXPIRE`s and `PERSIST`s, in the same scripts.
local function went_live()
  for i = 1, SESSION_KEYS do
    redis.call('PERSIST', KEYS[i])
  end
end

-- The session's last live run ended: the session expires `ttl` ms from now unless a run
-- makes it live again.
local function went_idle(ttl)
  for i = 1, SESSION_KEYS do
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end

-- A key written while the session has no live run expires with the session.
local function expire_with_session(key)
  if redis.call('ZCARD', runs_key) == 0 then
    local ttl = redis.call('PTTL', meta_key)
    if ttl > 0 then
      redis.call('PEXPIRE', key, ttl)
    end
  end
end

-- The run a job belongs to: its id up to the first dot (`<run>` or `<run>.<position>`).
local function run_of(job)
  return string.sub(job, 1, 32)
end

-- A job's score in its session's queue: higher priority first, then `seq` (submission
-- order; a job put back, or a started run's next step, goes to the head of its priority).
local function queue_score(priority, seq)
  return -tonumber(priority) * 4294967296 + (seq or 0)
end

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

-- A member of `leases` that is not a lease: over 64 bytes long, it makes Redis keep the set a
-- skip list. A small sorted set is a listpack, whose every insert walks the list parsing each
-- score as it goes: with the hundred leases of a busy session, most of a lease's cost in
-- Redis. Its score is +inf: never due, never counted (`count_leases`, `first_lease`). The
-- hot paths add it with their leases (`add_leases`); the session's last live run ending
-- removes it (`went_idle`), so an idle session keeps no skip list.
local LEASES_SKIPLIST = 'not a lease: keeps this sorted set a skip list, cheaper to update than a listpack'

-- Adds `list` (deadline, job, deadline, job, ...) to `leases`.
local function add_leases(list)
  redis.call('ZADD', leases_key, '+inf', LEASES_SKIPLIST, unpack(list))
end

-- How many jobs are leased (the quota's count).
local function count_leases()
  return redis.call('ZCOUNT', leases_key, '-inf', '(+inf')
end

-- The earliest lease deadline (0: no lease).
local function first_lease()
  local first = redis.call('ZRANGEBYSCORE', leases_key, '-inf', '(+inf', 'WITHSCORES', 'LIMIT',
    0, 1)
  if #first > 0 then
    return tonumber(first[2])
  end
  return 0
end

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
  redis.call('ZREM', leases_key, LEASES_SKIPLIST)
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

-- A job's score in its session's queue, as text for `ZADD`: higher priority first, then
-- `seq` (submission order; a job put back, or a started run's next step, goes to the head of
-- its priority). As text because a number handed to `redis.call` is formatted with `%.17g`,
-- nearly twice the cost of `num`'s `%d`.
local function queue_score(priority, seq)
  return num(-number(priority) * 4294967296 + (seq or 0))
end

-- Commits one job of a step run (fenced by its lease token) together with what follows it:
-- the successor jobs, the fan-in arrivals, and the run's outcome when the job ends the run.
-- KEYS: 1 leases, 2 job, 3 run, 4 queue, 5 index, 6 results, 7 result, 8 meta, 9 events
-- ARGV: 1 job id, 2 fencing token, 3 job key prefix, 4 run id, 5 session ttl (ms),
--       6 result ttl (ms), 7 done channel, 8 `<session> <run>`, 9 largest outcome a done
--       message carries (bytes), 10 events channel, 11 events max length, 12 control channel,
--       13 lease (ms) for the successor handed to the caller (0: none), 14 steps completed,
--       15 attempts made, 16 successors, 17 arrivals (both JSON, see below), 18 the run's
--       outcome ('': the run goes on), 19 its run event (JSON), 20 '1' when the job is the
--       run's entry job (its commit creates the run hash), 21 the fencing token of the
--       successor leased to the caller (a number the caller drew, so that it can start that
--       successor before this commit's reply: no other lease can have it), 22.. held map items:
--       per map instance, its id, its first held item, how many are held, then per held
--       item its index and its jobs (a successors list, JSON)
-- successors: [[job id, input, step, [instances above it]], ...]
-- arrivals: [[instance, branch, expected, result (JSON), [instances above it and its own],
--             join job id, join step, closes], ...]: `closes` is true for a failed branch of
--           a fail-fast parallel (its join job is created at once, with the error as input)
-- Returns (as strings) {0} (refused: stale token or the job is gone), {1, ended, queued}
-- (committed; ended is 1 when this commit stored the run's outcome, queued how many jobs it
-- queued), or the same followed by the successor leased to the caller: id, input, token,
-- lease deadline, step, version, attempts.
local f = redis.call('HMGET', KEYS[2], 'token', 'state', 'name', 'fp', 'priority', 'created_ms',
  'attempts')
if f[1] ~= ARGV[2] or f[2] ~= 'leased' then
  return {'0'}
end
local now = now_ms()
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[5], KEYS[2])
if ARGV[20] == '1' then
  redis.call('HSET', KEYS[3], 'version', 0, 'attempts', 0, 'live', 0)
  redis.call('SADD', KEYS[5], KEYS[3])
  expire_like(KEYS[3], KEYS[8])
elseif redis.call('EXISTS', KEYS[3]) == 0 then
  -- The run already ended (a failed sibling, a deadline, a dead-lettered step): moot.
  return {'1', '0', '0'}
else
  redis.call('HINCRBY', KEYS[3], 'live', -1)
end
redis.call('HINCRBY', KEYS[3], 'version', ARGV[14])
-- With the attempts the job made before it parked.
redis.call('HINCRBY', KEYS[3], 'attempts', tonumber(ARGV[15]) + tonumber(f[7] or '0'))

local created = {}
local function closed(instances)
  for _, instance in ipairs(instances) do
    if redis.call('HEXISTS', KEYS[3], 'c:' .. instance) == 1 then
      return true
    end
  end
  return false
end
-- Creates a job of the run, unless it exists already or a fan-out above it closed.
local function create(spec)
  if closed(spec[4]) or redis.call('HSETNX', KEYS[3], 'x:' .. spec[1], 1) == 0 then
    return
  end
  local key = ARGV[3] .. spec[1]
  redis.call('HSET', key, 'name', f[3], 'fp', f[4], 'input', spec[2], 'step', spec[3],
    'run', ARGV[4], 'priority', f[5], 'token', 0, 'deliveries', 0, 'created_ms', f[6],
    'queued_ms', now, 'state', 'queued')
  redis.call('SADD', KEYS[5], key)
  expire_like(key, KEYS[8])
  redis.call('HINCRBY', KEYS[3], 'live', 1)
  created[#created + 1] = spec[1]
end

for _, spec in ipairs(cjson.decode(ARGV[16])) do
  create(spec)
end
-- Held map items come as plain arguments (no decoding), stored in slices of 500.
local at = 22
while at <= #ARGV do
  local instance, first, count = ARGV[at], ARGV[at + 1], tonumber(ARGV[at + 2])
  local items = at + 3
  at = items + 2 * count
  if redis.call('HSETNX', KEYS[3], 'h:' .. instance, first) == 1 then
    for from = 0, count - 1, 500 do
      local pairs_ = {}
      for i = from, math.min(from + 499, count - 1) do
        pairs_[#pairs_ + 1] = 'g:' .. instance .. ':' .. ARGV[items + 2 * i]
        pairs_[#pairs_ + 1] = ARGV[items + 2 * i + 1]
      end
      redis.call('HSET', KEYS[3], unpack(pairs_))
    end
  end
end
for _, arrival in ipairs(cjson.decode(ARGV[17])) do
  local instance, branch, expected = arrival[1], arrival[2], tonumber(arrival[3])
  if not closed(arrival[5]) then
    if arrival[8] then
      -- A failed branch of a fail-fast parallel: the parallel fails now, once.
      redis.call('HSET', KEYS[3], 'c:' .. instance, 1)
      create({arrival[6], arrival[4], arrival[7], {}})
      redis.call('PUBLISH', ARGV[12], 'cancel ' .. ARGV[8] .. ' ' .. instance)
    elseif redis.call('HSETNX', KEYS[3], 's:' .. instance .. ':' .. branch, arrival[4]) == 1 then
      local arrived = redis.call('HINCRBY', KEYS[3], 'n:' .. instance, 1)
      if arrived >= expected then
        -- In slices: `unpack` is bounded by Lua's stack.
        local results = {}
        for from = 0, expected - 1, 1000 do
          local fields = {}
          for i = from, math.min(from + 999, expected - 1) do
            fields[#fields + 1] = 's:' .. instance .. ':' .. i
          end
          for _, result in ipairs(redis.call('HMGET', KEYS[3], unpack(fields))) do
            results[#results + 1] = result
          end
          redis.call('HDEL', KEYS[3], unpack(fields))
        end
        redis.call('HDEL', KEYS[3], 'n:' .. instance, 'h:' .. instance)
        redis.call('HSET', KEYS[3], 'c:' .. instance, 1)
        create({arrival[6], '[' .. table.concat(results, ',') .. ']', arrival[7], {}})
      else
        -- A map's next held item takes the place of the one that arrived.
        local next_item = redis.call('HGET', KEYS[3], 'h:' .. instance)
        if next_item and tonumber(next_item) < expected then
          local field = 'g:' .. instance .. ':' .. next_item
          local group = redis.call('HGET', KEYS[3], field)
          redis.call('HDEL', KEYS[3], field)
          redis.call('HINCRBY', KEYS[3], 'h:' .. instance, 1)
          if group then
            for _, spec in ipairs(cjson.decode(group)) do
              create(spec)
            end
          end
        end
      end
    end
  end
end

if ARGV[18] ~= '' then
  redis.call('SET', KEYS[7], ARGV[18], 'PX', ARGV[6])
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
  redis.call('ZADD', KEYS[6], now + tonumber(ARGV[6]), KEYS[7])
  redis.call('PEXPIRE', KEYS[6], ARGV[5])
  redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[11], '*', 'event', ARGV[19])
  redis.call('PUBLISH', ARGV[10], ARGV[19])
  if #ARGV[18] <= tonumber(ARGV[9]) then
    redis.call('PUBLISH', ARGV[7], ARGV[8] .. ' ' .. ARGV[18])
  else
    redis.call('PUBLISH', ARGV[7], ARGV[8])
  end
  local live = tonumber(redis.call('HGET', KEYS[3], 'live') or '0')
  redis.call('DEL', KEYS[3])
  redis.call('SREM', KEYS[5], KEYS[3])
  if live > 0 then
    -- Jobs of the run still queued are dropped when claimed; running ones are cancelled.
    redis.call('PUBLISH', ARGV[12], 'cancel ' .. ARGV[8])
  end
  return {'1', '1', '0'}
end

-- The first new job goes to the caller (its slot passes on); the others are queued, ahead of
-- new runs of their priority (a started run finishes first).
local first = 1
local handed = nil
if tonumber(ARGV[13]) > 0 and #created > 0 then
  first = 2
  local id = created[1]
  local key = ARGV[3] .. id
  local deadline = now + tonumber(ARGV[13])
  redis.call('HSET', key, 'token', ARGV[21], 'deliveries', 1, 'state', 'leased')
  redis.call('ZADD', KEYS[1], deadline, id)
  expire_like(KEYS[1], KEYS[8])
  local job = redis.call('HMGET', key, 'input', 'step')
  local run = redis.call('HMGET', KEYS[3], 'version', 'attempts')
  handed = {id, job[1], ARGV[21], tostring(deadline), job[2], run[1] or '0', run[2] or '0'}
end
for i = first, #created do
  redis.call('ZADD', KEYS[4], queue_score(f[5], 0), created[i])
end
if #created >= first then
  expire_like(KEYS[4], KEYS[8])
end
local out = {'1', '0', tostring(#created - first + 1)}
if handed then
  for _, field in ipairs(handed) do
    out[#out + 1] = field
  end
end
return out

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
--       per new map instance, its id, its first held item, and the key where the caller staged
--       its held items (`stage.lua`: item index → that item's jobs, a successors list)
-- successors: [[job id, input, step, [instances above it]], ...]
-- arrivals: [[instance, branch, expected, result (JSON), [instances above it and its own],
--             join job id, join step, closes], ...]: `closes` is true for a failed branch of
--           a fail-fast parallel (its join job is created at once, with the error as input)
-- Returns (as strings) {0} (refused: stale token or the job is gone), {2} (a staged key is
-- gone: nothing written, commit again after staging again), {1, ended, queued}
-- (committed; ended is 1 when this commit stored the run's outcome, queued how many jobs it
-- queued), or the same followed by the successor leased to the caller: id, input, token,
-- lease deadline, step, version, attempts.
local f = redis.call('HMGET', KEYS[2], 'token', 'state', 'name', 'fp', 'priority', 'created_ms',
  'attempts')
if f[1] ~= ARGV[2] or f[2] ~= 'leased' then
  return {'0'}
end
-- Staged held items must all be there (they expire with the session): else nothing is
-- written, and the job is committed again after its lease runs out (staging again).
for at = 22, #ARGV, 3 do
  if redis.call('EXISTS', ARGV[at + 2]) == 0 then
    return {'2'}
  end
end
local now = now_ms()
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[5], KEYS[2])
-- The session's remaining lifetime, which every key made here gets.
local ttl = redis.call('PTTL', KEYS[8])
local live = -1
if ARGV[20] == '1' then
  redis.call('HSET', KEYS[3], 'version', 0, 'attempts', 0, 'live', 0)
  redis.call('SADD', KEYS[5], KEYS[3])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[3], ttl)
  end
  live = 0
elseif redis.call('EXISTS', KEYS[3]) == 0 then
  -- The run already ended (a failed sibling, a deadline, a dead-lettered step): moot.
  return {'1', '0', '0'}
end
if ARGV[14] ~= '0' then
  redis.call('HINCRBY', KEYS[3], 'version', ARGV[14])
end
-- With the attempts the job made before it parked.
local attempts = tonumber(ARGV[15]) + tonumber(f[7] or '0')
if attempts ~= 0 then
  redis.call('HINCRBY', KEYS[3], 'attempts', attempts)
end

local created = {}
local specs = {}
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
  if ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
  end
  created[#created + 1] = spec[1]
  specs[spec[1]] = spec
end

for _, spec in ipairs(cjson.decode(ARGV[16])) do
  create(spec)
end
-- A new map's held items move from where the caller staged them to the instance's own hash
-- (`<run key>:held:<instance>`): a rename, however many there are.
for at = 22, #ARGV, 3 do
  local instance, first, staged = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local held = KEYS[3] .. ':held:' .. instance
  if redis.call('HSETNX', KEYS[3], 'h:' .. instance, first) == 1 then
    redis.call('RENAME', staged, held)
    redis.call('SADD', KEYS[5], held)
    redis.call('HSET', KEYS[3], 'held', (redis.call('HGET', KEYS[3], 'held') or '') .. ' ' .. held)
  else
    redis.call('DEL', staged)
  end
  redis.call('SREM', KEYS[5], staged)
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
        -- The join job reads the branches' results (`s:` fields) itself, in slices: a wide
        -- fan-in costs this script nothing more than a narrow one.
        redis.call('HDEL', KEYS[3], 'n:' .. instance, 'h:' .. instance)
        redis.call('HSET', KEYS[3], 'c:' .. instance, 1)
        create({arrival[6], '', arrival[7], {}})
      else
        -- A map's next held item takes the place of the one that arrived.
        local next_item = redis.call('HGET', KEYS[3], 'h:' .. instance)
        if next_item and tonumber(next_item) < expected then
          local held = KEYS[3] .. ':held:' .. instance
          local group = redis.call('HGET', held, next_item)
          redis.call('HDEL', held, next_item)
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

-- Jobs of the run not yet committed: this one less, the new ones more.
live = redis.call('HINCRBY', KEYS[3], 'live', live + #created)
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
  for held in string.gmatch(redis.call('HGET', KEYS[3], 'held') or '', '%S+') do
    redis.call('UNLINK', held)
    redis.call('SREM', KEYS[5], held)
  end
  -- A wide run's hash has a field per job and per branch: freed off the main thread.
  redis.call('UNLINK', KEYS[3])
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
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
  local run = redis.call('HMGET', KEYS[3], 'version', 'attempts')
  handed = {id, specs[id][2], ARGV[21], tostring(deadline), specs[id][3], run[1] or '0',
    run[2] or '0'}
end
for i = first, #created do
  redis.call('ZADD', KEYS[4], queue_score(f[5], 0), created[i])
end
if #created >= first and ttl > 0 then
  redis.call('PEXPIRE', KEYS[4], ttl)
end
local out = {'1', '0', tostring(#created - first + 1)}
if handed then
  for _, field in ipairs(handed) do
    out[#out + 1] = field
  end
end
return out

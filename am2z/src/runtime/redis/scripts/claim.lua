-- Leases the best ready jobs of a session that this worker can run (up to a batch).
-- KEYS: 1 queue, 2 leases, 3 index
-- ARGV: 1 job key prefix, 2 lease (ms), 3 session concurrency quota (0: none),
--       4 session ttl (ms), 5 most jobs to lease, 6 run key prefix,
--       7.. fingerprints this worker serves
-- Returns {'ok', how many jobs are still queued, then per job: job id, name, fingerprint,
--         input, token, created_ms, deliveries, lease deadline, step ('' for a run's entry
--         job), the run's version and attempts so far (with the job's own parked attempts),
--         the attempt the job's step resumes at (0: fresh)}, {'empty'} (nothing queued) or
--         {'busy'} (at quota, or nothing this worker serves).
-- A step job whose run already ended (its run hash is gone) is dropped, not leased.
local most = tonumber(ARGV[5])
local quota = tonumber(ARGV[3])
if quota > 0 then
  local room = quota - redis.call('ZCARD', KEYS[2])
  if room <= 0 then
    return {'busy'}
  end
  most = math.min(most, room)
end
-- A bounded look past jobs this worker cannot run (another version's, or another
-- deployment's): up to 64 of them at the head do not block the ones behind.
local ids = redis.call('ZRANGE', KEYS[1], 0, 63)
if #ids == 0 then
  return {'empty'}
end
local served = {}
for i = 7, #ARGV do
  served[ARGV[i]] = true
end
local now = now_ms()
local deadline = now + tonumber(ARGV[2])
local out = {'ok', '0'}
local leased = 0
for _, id in ipairs(ids) do
  if leased >= most then
    break
  end
  local job = ARGV[1] .. id
  -- Two reads and one write per leased job (token and deliveries are only ever changed by
  -- scripts, which run atomically); the input is read only for a job this worker takes.
  local f = redis.call('HMGET', job, 'fp', 'name', 'created_ms', 'token', 'deliveries', 'run')
  local fp = f[1]
  local run = f[6] and (ARGV[6] .. f[6])
  if not fp then
    -- The job expired or was deleted: drop its queue entry.
    redis.call('ZREM', KEYS[1], id)
  elseif run and redis.call('EXISTS', run) == 0 then
    redis.call('ZREM', KEYS[1], id)
    redis.call('DEL', job)
    redis.call('SREM', KEYS[3], job)
  elseif served[fp] then
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZADD', KEYS[2], deadline, id)
    local token = tonumber(f[4] or '0') + 1
    local deliveries = tonumber(f[5] or '0') + 1
    redis.call('HSET', job, 'token', token, 'deliveries', deliveries, 'state', 'leased')
    local more = redis.call('HMGET', job, 'input', 'step', 'attempt', 'attempts')
    local counts = {'0', '0'}
    if run then
      counts = redis.call('HMGET', run, 'version', 'attempts')
    end
    local attempts = tonumber(counts[2] or '0') + tonumber(more[4] or '0')
    for _, field in ipairs({id, f[2], fp, more[1], tostring(token), tostring(f[3] or '0'),
        tostring(deliveries), tostring(deadline), more[2] or '', counts[1] or '0',
        tostring(attempts), more[3] or '0'}) do
      out[#out + 1] = field
    end
    leased = leased + 1
  end
end
if leased == 0 then
  return {'busy'}
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
out[2] = tostring(redis.call('ZCARD', KEYS[1]))
return out

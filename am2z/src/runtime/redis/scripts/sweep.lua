-- Re-queues expired leases of a session, or dead-letters them after too many deliveries.
-- KEYS: 1 leases, 2 queue, 3 dead, 4 index, 5 meta, 6 results, 7 delayed
-- ARGV: 1 job key prefix, 2 result key prefix, 3 max deliveries, 4 result ttl (ms),
--       5 done channel, 6 session id, 7 redelivery backoff base (ms), 8 backoff cap (ms),
--       9 unserved grace (ms; 0: off), 10 run key prefix, 11.. contracts some live worker
--       serves
-- A step job's outcome is its run's: dead-lettering or failing it ends the run (its run hash
-- is deleted, so the run's other jobs are moot).
-- A first redelivery is immediate (recovery within a lease and a sweep); later ones wait
-- base × 2^(n-2), capped, in the delayed set, so a job that kills its workers cannot
-- crash-loop the fleet.
-- Returns {requeued, dead, live, next_due, next_lease, queued}: live is 0 when the session
-- expired (its meta is gone), so the caller can drop it from the registry; next_due is the
-- earliest due time in the delayed set and next_lease the earliest lease deadline left (0:
-- none), for the promoter's and the sweeper's timers; queued is the number of ready jobs (the
-- full pass schedules a session that has some, in case its submitter never did). Looks at
-- 100 leases per call at most.
if redis.call('EXISTS', KEYS[5]) == 0 then
  return {0, 0, 0, 0, 0, 0}
end
local now = now_ms()
-- Stores `outcome` as the run's and announces it. A step job's run ends with it (its run
-- hash is deleted, so the run's other jobs are moot), unless it already ended. Returns
-- whether the outcome was stored.
local function end_run(run, step_job, outcome)
  if step_job then
    local hash = ARGV[10] .. run
    if redis.call('EXISTS', hash) == 0 then
      return false
    end
    redis.call('DEL', hash)
    redis.call('SREM', KEYS[4], hash)
  end
  local result = ARGV[2] .. run
  redis.call('SET', result, outcome, 'PX', ARGV[4])
  redis.call('ZADD', KEYS[6], now + tonumber(ARGV[4]), result)
  expire_like(KEYS[6], KEYS[5])
  redis.call('PUBLISH', ARGV[5], ARGV[6] .. ' ' .. run)
  return true
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
local requeued, dead = 0, 0
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  local job = ARGV[1] .. id
  local f = redis.call('HMGET', job, 'deliveries', 'priority', 'created_ms', 'state', 'run')
  if f[1] and f[4] == 'leased' then
    local deliveries = tonumber(f[1])
    if deliveries >= tonumber(ARGV[3]) then
      local outcome = cjson.encode({Dead = {deliveries = deliveries, created_ms = tonumber(f[3])}})
      redis.call('DEL', job)
      redis.call('SREM', KEYS[4], job)
      if end_run(f[5] or id, f[5] ~= false, outcome) then
        redis.call('RPUSH', KEYS[3], f[5] or id)
        expire_like(KEYS[3], KEYS[5])
      end
      dead = dead + 1
    else
      redis.call('HSET', job, 'state', 'queued')
      if deliveries <= 1 or tonumber(ARGV[7]) <= 0 then
        redis.call('ZADD', KEYS[2], queue_score(f[2]), id)
        expire_like(KEYS[2], KEYS[5])
      else
        local wait = math.min(tonumber(ARGV[7]) * 2 ^ (deliveries - 2), tonumber(ARGV[8]))
        redis.call('ZADD', KEYS[7], now + wait, id)
        expire_like(KEYS[7], KEYS[5])
      end
      requeued = requeued + 1
    end
  end
end
-- Queued jobs no live worker has served for longer than the grace period fail with a
-- typed outcome (callers stop waiting; the jobs behind them are not hidden). Only when
-- some worker is alive: with none, everything simply waits for workers to come back.
local grace = tonumber(ARGV[9])
if grace > 0 and #ARGV >= 10 then
  local served = {}
  for i = 11, #ARGV do
    served[ARGV[i]] = true
  end
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, 63)) do
    local job = ARGV[1] .. id
    -- A step job waits from when it was queued, not from its run's submission.
    local f = redis.call('HMGET', job, 'fp', 'created_ms', 'name', 'run', 'queued_ms')
    if f[1] and not served[f[1]] and tonumber(f[5] or f[2]) + grace < now then
      redis.call('ZREM', KEYS[2], id)
      redis.call('DEL', job)
      redis.call('SREM', KEYS[4], job)
      end_run(f[4] or id, f[4] ~= false, cjson.encode({Unserved = {name = f[3], fingerprint = f[1]}}))
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
return {requeued, dead, 1, first_score(KEYS[7]), first_score(KEYS[1]), redis.call('ZCARD', KEYS[2])}

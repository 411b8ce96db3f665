-- Queues a new run of a session, creating the session when it is new.
-- KEYS: 1 meta, 2 index, 3 queue, 4 job, 5 leases, 6 events, 7 dead, 8 stats, 9 delayed
-- ARGV: 1 run id, 2 processor name, 3 contract fingerprint, 4 input (JSON), 5 priority,
--       6 session ttl (ms), 7 max queued (0: no limit), 8 events channel,
--       9 SessionCreated event (JSON), 10 events max length, and for a child run (a
--       `ctx.call` executed as a job) 11 the calling run's id, 12 the call depth and 13 the
--       child's result key (a child that already ended is not queued again)
-- Returns 1 (queued, session created), 0 (queued), -1 (queue quota reached), -2 (duplicate id).
-- TTLs: every key of the session gets the full TTL when the session is new or its TTL has run
-- down by a sixteenth; otherwise only the new job and the queue (which a ZADD may have just
-- recreated) get the session's remaining lifetime, so all its keys still expire together,
-- between 15/16 of the TTL and the whole TTL after the last submission.
local max_queued = tonumber(ARGV[7])
if max_queued > 0 and redis.call('ZCARD', KEYS[3]) >= max_queued then
  return -1
end
if redis.call('EXISTS', KEYS[4]) == 1 or (ARGV[13] and redis.call('EXISTS', ARGV[13]) == 1) then
  return -2
end
local now = now_ms()
local created = redis.call('EXISTS', KEYS[1]) == 0
if created then
  redis.call('HSET', KEYS[1], 'created_ms', now)
  redis.call('SADD', KEYS[2], KEYS[1], KEYS[3], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9])
  redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[10], '*', 'event', ARGV[9])
  redis.call('PUBLISH', ARGV[8], ARGV[9])
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local priority = tonumber(ARGV[5])
redis.call('HSET', KEYS[4], 'name', ARGV[2], 'fp', ARGV[3], 'input', ARGV[4],
  'priority', priority, 'token', 0, 'deliveries', 0, 'created_ms', now, 'state', 'queued')
if ARGV[11] then
  redis.call('HSET', KEYS[4], 'child_of', ARGV[11], 'depth', ARGV[12])
end
redis.call('SADD', KEYS[2], KEYS[4])
redis.call('ZADD', KEYS[3], queue_score(priority, seq), ARGV[1])
local ttl = tonumber(ARGV[6])
local left = -1
if not created then
  left = redis.call('PTTL', KEYS[1])
end
if left < ttl - math.floor(ttl / 16) then
  for i = 1, 9 do
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
else
  redis.call('PEXPIRE', KEYS[4], left)
  redis.call('PEXPIRE', KEYS[3], left)
end
if created then
  return 1
end
return 0

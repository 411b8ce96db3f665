-- Prepended to every script (scripts.rs): the helpers they share.

-- Now on Redis' clock, in milliseconds (leases, delays and expiries never use a worker's).
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Gives `key` the remaining lifetime of `like` (keys recreated here must expire with their
-- session, never outlive it).
local function expire_like(key, like)
  local ttl = redis.call('PTTL', like)
  if ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
  end
end

-- A job's score in its session's queue: higher priority first, then `seq` (submission
-- order; a job put back without one goes to the head of its priority).
local function queue_score(priority, seq)
  return -tonumber(priority) * 4294967296 + (seq or 0)
end

-- The lowest score in the sorted set `key` (0 when it is empty).
local function first_score(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #first > 0 then
    return tonumber(first[2])
  end
  return 0
end


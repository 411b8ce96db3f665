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


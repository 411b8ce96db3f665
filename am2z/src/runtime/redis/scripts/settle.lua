-- After a session was swept: when the sweeper should look at it next.
-- KEYS: 1 leasing
-- ARGV: 1 session id, 2 its earliest lease deadline (0: it has no leases), 3 the index's ttl (ms)
-- Without leases it is forgotten, unless a claim re-armed it meanwhile (a future score).
local now = now_ms()
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
local next_lease = tonumber(ARGV[2])
if next_lease == 0 then
  if current and tonumber(current) <= now then
    redis.call('ZREM', KEYS[1], ARGV[1])
  end
elseif not current or tonumber(current) <= now then
  redis.call('ZADD', KEYS[1], next_lease, ARGV[1])
else
  redis.call('ZADD', KEYS[1], 'LT', next_lease, ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1

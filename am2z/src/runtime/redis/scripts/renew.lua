-- Extends a lease, if the caller still holds it.
-- KEYS: 1 leases, 2 job
-- ARGV: 1 run id, 2 fencing token, 3 lease (ms)
-- Returns 1 (renewed) or 0 (the lease is lost: the token moved on or the job is gone).
local f = redis.call('HMGET', KEYS[2], 'token', 'state')
if f[1] ~= ARGV[2] or f[2] ~= 'leased' then
  return 0
end
local now = now_ms()
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[3]), ARGV[1])
return 1

-- After a session was swept: when the sweeper should look at it next. Without leases it is
-- forgotten, unless a claim re-armed it meanwhile (a future score).
--- @include "time"
local leasing_key = KEYS[1]
local session = ARGV[1]
-- Its earliest lease deadline (0: it has no leases).
local next_lease = tonumber(ARGV[2])
-- Returns {'watched', 0|1}: 0 when the session was forgotten.

local now = now_ms()
local current = redis.call('ZSCORE', leasing_key, session)
if next_lease == 0 then
  if current and tonumber(current) <= now then
    redis.call('ZREM', leasing_key, session)
    return {'watched', 0}
  end
  return {'watched', current and 1 or 0}
elseif not current or tonumber(current) <= now then
  redis.call('ZADD', leasing_key, next_lease, session)
else
  redis.call('ZADD', leasing_key, 'LT', next_lease, session)
end
return {'watched', 1}

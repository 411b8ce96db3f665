-- What the unserved rule needs to know about the fleet, for the sweeper.
--- @include "time"
local workers_key = KEYS[1]
local served_key = KEYS[2]
local grace_ms = tonumber(ARGV[1])
-- Returns {'fleet_ready', 1 when live workers have existed for the whole grace, 'served',
-- {contracts some live worker served within the grace}}.

local now = now_ms()
redis.call('ZREMRANGEBYSCORE', workers_key, '-inf', now)
if redis.call('ZCARD', workers_key) == 0 then
  redis.call('HDEL', served_key, 'since')
  return {'fleet_ready', 0, 'served', {}}
end
local since = tonumber(redis.call('HGET', served_key, 'since') or num(now))
local served = {}
local fields = redis.call('HGETALL', served_key)
for i = 1, #fields, 2 do
  if fields[i] ~= 'since' then
    local at = tonumber(fields[i + 1])
    if at + grace_ms >= now then
      served[#served + 1] = fields[i]
    elseif grace_ms > 0 and at + 10 * grace_ms < now then
      -- Long gone: forgotten, so the hash stays as small as the contracts in use.
      redis.call('HDEL', served_key, fields[i])
    end
  end
end
return {'fleet_ready', since + grace_ms <= now and 1 or 0, 'served', served}

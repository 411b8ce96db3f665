-- Ends a stop: unlinks every fixed key of the session, the stop's mark with them, once no
-- live run is left.
--- @include "time"
--- @include "session"
local page = tonumber(ARGV[1])
-- Returns {'status', 'stopped', 'runs', {}}, {'status', 'more', 'runs', {live runs left}}
-- (unlink their hashes first) or {'status', 'gone', 'runs', {}} (no stop under way).

if not stopping() then
  return {'status', 'gone', 'runs', {}}
end
local left = redis.call('ZRANGE', runs_key, 0, page - 1)
if #left > 0 then
  return {'status', 'more', 'runs', left}
end
for i = 1, SESSION_KEYS do
  redis.call('UNLINK', KEYS[i])
end
return {'status', 'stopped', 'runs', {}}

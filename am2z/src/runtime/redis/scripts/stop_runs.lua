-- Unlinks the hashes of a stopping session's live runs (a page per call), each declared in
-- KEYS, and forgets the runs.
--- @include "time"
--- @include "session"
local stop_lease = tonumber(ARGV[1])
local page = tonumber(ARGV[2])
-- ARGV[3..]: the runs whose hashes are KEYS[15..], in the same order
local FIRST = 3
-- Returns {'status', 'stopping', 'runs', {the next page of live runs}} or {'status', 'gone'}
-- (no stop under way: another stopper finished it).

if not stopping() then
  return {'status', 'gone', 'runs', {}}
end
redis.call('HSET', meta_key, 'stopping', num(now_ms() + stop_lease))
for i = FIRST, #ARGV do
  redis.call('ZREM', runs_key, ARGV[i])
  redis.call('UNLINK', KEYS[SESSION_KEYS + i - FIRST + 1])
end
return {'status', 'stopping', 'runs', redis.call('ZRANGE', runs_key, 0, page - 1)}

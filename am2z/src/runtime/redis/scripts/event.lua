-- Appends events of one session to its stream (if the session is live), counts finished
-- steps in the session's stats, and publishes the events to live subscribers, in order, as
-- one message (a JSON array): one delivery per subscriber per batch, not per event.
-- KEYS: 1 meta, 2 events, 3 stats
-- ARGV: 1 stream max length, 2 events channel, then per event: its JSON and the stats field
--       it counts ('' for none: e.g. 'add_one:completed')
-- A stopped session's stream and stats are never recreated by a late event.
local live = redis.call('EXISTS', KEYS[1]) == 1
local counted = false
local batch = {}
for i = 3, #ARGV, 2 do
  batch[#batch + 1] = ARGV[i]
  if live then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[i])
    if ARGV[i + 1] ~= '' then
      redis.call('HINCRBY', KEYS[3], ARGV[i + 1], 1)
      counted = true
    end
  end
end
redis.call('PUBLISH', ARGV[2], '[' .. table.concat(batch, ',') .. ']')
if counted then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[3], ttl)
  end
end
return 1

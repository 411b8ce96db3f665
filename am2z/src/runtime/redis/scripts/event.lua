-- Appends a batch of one session's events to its stream, counts finished steps in its stats,
-- and publishes the batch to live subscribers as one message (a JSON array).
--- @include "time"
--- @include "session"
local events_max_len = ARGV[1]
local events_channel = ARGV[2]
-- ARGV[3..]: pairs of event (JSON) and the stats field it counts ('' for none, e.g.
-- 'add_one:completed')
local FIRST = 3
-- Returns {'stored', 0|1}: a session that does not exist or is stopping gets no key back from
-- a late event (the batch is still published).

local stored = redis.call('EXISTS', meta_key) == 1 and not stopping()
local batch = {}
for at = FIRST, #ARGV, 2 do
  batch[#batch + 1] = ARGV[at]
  if stored then
    redis.call('XADD', events_key, 'MAXLEN', '~', events_max_len, '*', 'event', ARGV[at])
    if ARGV[at + 1] ~= '' then
      redis.call('HINCRBY', stats_key, ARGV[at + 1], 1)
    end
  end
end
if stored then
  expire_with_session(events_key)
  expire_with_session(stats_key)
end
redis.call('PUBLISH', events_channel, '[' .. table.concat(batch, ',') .. ']')
return {'stored', stored and 1 or 0}

-- Extends held concurrency permits of one processor.
--- @include "time"
local permits_key = KEYS[1]
local hold_ms = tonumber(ARGV[1])
-- ARGV[2..]: the permit ids
local FIRST = 2
-- Returns {'held', how many were still held (an expired permit is gone)}.

local now = now_ms()
local held = 0
for i = FIRST, #ARGV do
  held = held + redis.call('ZADD', permits_key, 'XX', 'CH', now + hold_ms, ARGV[i])
end
redis.call('PEXPIRE', permits_key, hold_ms)
return {'held', held}

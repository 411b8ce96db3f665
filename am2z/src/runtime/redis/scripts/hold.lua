-- Extends a held concurrency permit.
-- KEYS: 1 the processor's permits
-- ARGV: 1 permit id, 2 hold (ms)
-- Returns 1 (extended) or 0 (the permit had expired and is gone).
local now = now_ms()
local extended = redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return extended

-- The sessions whose earliest known lease deadline has passed (at most 500).
-- KEYS: 1 leasing
local now = now_ms()
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 500)

-- The sessions whose earliest known lease deadline has passed (at most `most`).
--- @include "time"
local leasing_key = KEYS[1]
local most = tonumber(ARGV[1])
-- Returns {'sessions', {ids}}.

return {'sessions', redis.call('ZRANGEBYSCORE', leasing_key, '-inf', now_ms(), 'LIMIT', 0, most)}

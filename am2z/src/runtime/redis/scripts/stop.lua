-- Deletes a session's keys from its index, a batch per call.
-- KEYS: 1 index, 2 meta
-- ARGV: 1 batch size
-- Returns how many indexed keys remain (0: the session is gone, index included).
redis.call('DEL', KEYS[2])
local batch = redis.call('SPOP', KEYS[1], tonumber(ARGV[1]))
for _, key in ipairs(batch) do
  redis.call('DEL', key)
end
local remaining = redis.call('SCARD', KEYS[1])
if remaining == 0 then
  redis.call('DEL', KEYS[1])
end
return remaining

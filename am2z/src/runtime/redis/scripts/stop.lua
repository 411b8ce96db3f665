-- Deletes a session's keys from its index, a batch per call.
-- KEYS: 1 index, 2 meta, 3 results
-- ARGV: 1 batch size
-- Returns how many keys remain to delete (0: the session is gone, index included).
redis.call('DEL', KEYS[2])
local batch = tonumber(ARGV[1])
local results = redis.call('ZRANGE', KEYS[3], 0, batch - 1)
for _, key in ipairs(results) do
  redis.call('DEL', key)
end
if #results > 0 then
  redis.call('ZREM', KEYS[3], unpack(results))
end
local keys = redis.call('SPOP', KEYS[1], batch)
for _, key in ipairs(keys) do
  redis.call('DEL', key)
end
local remaining = redis.call('SCARD', KEYS[1]) + redis.call('ZCARD', KEYS[3])
if remaining == 0 then
  redis.call('DEL', KEYS[1], KEYS[3])
end
return remaining

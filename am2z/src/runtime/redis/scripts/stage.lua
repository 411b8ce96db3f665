-- Stages a new map instance's held items (the items beyond its concurrency, with their jobs)
-- before the commit that creates the instance, which renames the staged hash: however wide the
-- map, no one script does more than a slice of it.
-- KEYS: 1 the staging hash, 2 index, 3 meta
-- ARGV: pairs of item index and that item's jobs (JSON)
-- Returns 1, or 0 when the session is gone (nothing is written).
if redis.call('EXISTS', KEYS[3]) == 0 then
  return 0
end
for from = 1, #ARGV, 1000 do
  local slice = {}
  for i = from, math.min(from + 999, #ARGV) do
    slice[#slice + 1] = ARGV[i]
  end
  redis.call('HSET', KEYS[1], unpack(slice))
end
redis.call('SADD', KEYS[2], KEYS[1])
expire_like(KEYS[1], KEYS[3])
return 1

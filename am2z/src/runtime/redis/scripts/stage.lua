-- Stores a slice of a new map instance's held items (the items beyond its concurrency, each
-- with its jobs, packed) in the run hash before the commit that starts the instance: however
-- wide the map, no one script does more than a slice of it. Fenced by the job's lease.
--- @include "time"
--- @include "session"
--- @include "header"
local run_key = KEYS[15]
local job = ARGV[1]
local token = ARGV[2]
local run = ARGV[3]
local instance = ARGV[4]
-- ARGV[5..]: pairs of held item index and its jobs (packed records, see `advance.lua`)
local FIRST = 5
-- Returns {'status', 'ok' | 'refused'} (refused: stale token, the run ended, or stopping;
-- nothing is written).

local h = read_header(redis.call('HGET', jobs_key, job))
if stopping() or not h or tostring(h.token) ~= token or not lease_set_of(job)
    or not redis.call('ZSCORE', runs_key, run) then
  return {'status', 'refused'}
end
local fields = {}
for at = FIRST, #ARGV, 2 do
  fields[#fields + 1] = 'i:' .. instance .. ':' .. ARGV[at]
  fields[#fields + 1] = ARGV[at + 1]
  if #fields >= 2000 then
    redis.call('HSET', run_key, unpack(fields))
    fields = {}
  end
end
if #fields > 0 then
  redis.call('HSET', run_key, unpack(fields))
end
return {'status', 'ok'}

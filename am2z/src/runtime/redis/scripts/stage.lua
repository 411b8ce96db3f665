-- Stores fields in a live run's hash before the commit that uses them, fenced by the
-- committing job's lease: a new map instance's held items (`i:<inst>:<item>`: the items
-- beyond its concurrency, each with its jobs, packed), and the chunks of a big value between
-- steps (`v:<job>:<n>`: a successor's input; `r:<inst>:<branch>:<n>`: a branch's result).
-- However wide the map and however big the value, no one call does more than a slice of it,
-- and no script decodes a value.
--- @include "time"
--- @include "session"
--- @include "header"
local run_key = KEYS[15]
local job = ARGV[1]
local token = ARGV[2]
local run = ARGV[3]
-- ARGV[4..]: pairs of field and value
local FIRST = 4
-- Returns {'status', 'ok' | 'refused'} (refused: stale token, the run ended, or stopping;
-- nothing is written).

if not held_by(redis.call('HGET', jobs_key, job), token)
    or not redis.call('ZSCORE', runs_key, run) then
  return {'status', 'refused'}
end
if #ARGV >= FIRST then
  redis.call('HSET', run_key, unpack(ARGV, FIRST))
end
return {'status', 'ok'}

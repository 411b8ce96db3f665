-- Ends runs executed as one job each (several per call), each fenced by its own lease token.
--- @include "time"
--- @include "session"
--- @include "header"
--- @include "end_run"
local done_channel = ARGV[1]
local session_ttl = tonumber(ARGV[2])
local dead_max_len = tonumber(ARGV[3])
-- ARGV[4..]: per job, 6 values: job id (= run id), lease token, outcome (JSON, opaque),
-- '1' when it succeeded, '1' when its input could not be decoded (dead-lettered), and the
-- `done` message to publish
local FIRST, PER_JOB = 4, 6
-- Returns {'results', {'committed' | 'refused', ...}}: refused when the token moved on, the
-- job is not leased, or the session is stopping (nothing is written for it).

local halted = stopping()
local results = {}
for at = FIRST, #ARGV, PER_JOB do
  local job, token = ARGV[at], ARGV[at + 1]
  local h = read_header(redis.call('HGET', jobs_key, job))
  local set = lease_set_of(job)
  if halted or not h or tostring(h.token) ~= token or not set then
    results[#results + 1] = 'refused'
  else
    redis.call('ZREM', set, job)
    redis.call('HDEL', jobs_key, job)
    redis.call('HDEL', bodies_key, job)
    if end_run(job, ARGV[at + 2], ARGV[at + 3] == '1', nil, done_channel, ARGV[at + 5],
        session_ttl) and ARGV[at + 4] == '1' then
      bury(job, dead_max_len)
    end
    results[#results + 1] = 'committed'
  end
end
return {'results', results}

-- Begins a stop: from now on no script writes to the session (every one refuses while the
-- mark is there), and a submission cannot create it anew. The mark is created even when the
-- session does not exist. It carries a deadline: a stop abandoned by a stopper that died is
-- resumed by the sweeper once the deadline passed.
--- @include "time"
--- @include "session"
-- How long the stop may take before it counts as abandoned (ms).
local stop_lease = tonumber(ARGV[1])
local page = tonumber(ARGV[2])
-- Returns {'runs', {the first live runs whose hashes to unlink (at most `page`)}}.

redis.call('HSET', meta_key, 'stopping', num(now_ms() + stop_lease))
redis.call('PERSIST', meta_key)
-- No job left: every script that acts on a lease (claim, commit, advance, park, renew, stage,
-- release) now refuses the session's jobs without asking whether it is stopping.
redis.call('UNLINK', jobs_key, bodies_key)
return {'runs', redis.call('ZRANGE', runs_key, 0, page - 1)}

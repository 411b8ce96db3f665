-- Picks the least-served session that has ready jobs, and charges it one claim.
local sched_key = KEYS[1]
-- A session to charge without picking ('' : pick the least served): the one whose wake
-- ended an idle claimer's wait, which `pick` would have given it.
local charge = ARGV[1]
-- Returns {'session', id ('' when none has work), 'scheduled', how many sessions are
-- scheduled (a worker that saw others waiting yields its hand-offs)}.

local session = charge
if session == '' then
  local top = redis.call('ZRANGE', sched_key, 0, 0)
  if #top == 0 then
    return {'session', '', 'scheduled', 0}
  end
  session = top[1]
end
redis.call('ZADD', sched_key, 'XX', 'INCR', 1, session)
return {'session', session, 'scheduled', redis.call('ZCARD', sched_key)}

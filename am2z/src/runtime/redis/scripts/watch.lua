-- Makes sure the sweeper looks at a session by its new lease's deadline. Only ever moves the
-- look earlier: a score already due stays due, so a busy session's claims cannot keep
-- postponing the sweep of a lease that already expired.
local leasing_key = KEYS[1]
local session = ARGV[1]
local deadline = ARGV[2]
-- Returns {'watched', 1}.

redis.call('ZADD', leasing_key, 'LT', deadline, session)
return {'watched', 1}

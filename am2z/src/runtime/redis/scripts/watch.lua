-- Makes sure the sweeper will look at a session by its new lease's deadline.
-- KEYS: 1 leasing (zset: session -> when the sweeper should look, ms on Redis' clock)
-- ARGV: 1 session id, 2 the new lease's deadline, 3 the index's ttl (ms)
-- Only ever moves the look earlier: a score already due stays due, so a busy session's claims
-- cannot keep postponing the sweep of a lease that already expired. (A claim racing a settle
-- that removes the session is caught by the sweeper's re-check after that settle.)
redis.call('ZADD', KEYS[1], 'LT', ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1

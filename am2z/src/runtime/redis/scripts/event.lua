-- Appends an event to a live session's stream, counts finished steps in the session's stats,
-- and publishes the event to live subscribers.
-- KEYS: 1 meta, 2 events, 3 stats
-- ARGV: 1 event (JSON), 2 stream max length, 3 events channel,
--       4 stats field to count ('' for none: e.g. 'add_one:completed')
-- A stopped session's stream and stats are never recreated by a late event.
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[1])
  if ARGV[4] ~= '' then
    redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
    local ttl = redis.call('PTTL', KEYS[1])
    if ttl > 0 then
      redis.call('PEXPIRE', KEYS[3], ttl)
    end
  end
end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1

-- Appends an event to a live session's stream and publishes it to live subscribers.
-- KEYS: 1 meta, 2 events
-- ARGV: 1 event (JSON), 2 stream max length, 3 events channel
-- A stopped session's stream is never recreated by a late event.
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', ARGV[1])
end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return 1

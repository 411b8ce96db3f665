-- Registers a live worker and the contracts it serves until its heartbeat lapses; refreshes
-- when each contract was last served by a live worker, and when the fleet last became
-- non-empty (the unserved rule).
--- @include "time"
local workers_key = KEYS[1]
local contracts_key = KEYS[2]
local served_key = KEYS[3]
-- What an operator sees of the worker (`host`, `pid`, `processors`, `seen`): a small hash
-- that expires with the heartbeat.
local info_key = KEYS[4]
local worker = ARGV[1]
local ttl = tonumber(ARGV[2])
local host = ARGV[3]
local pid = ARGV[4]
-- The names of the processors it serves, one per line.
local processors = ARGV[5]
-- ARGV[6..]: the contract fingerprints the worker serves
local FIRST = 6
-- Returns {'now', Redis' clock (ms)}.

local now = now_ms()
redis.call('ZREMRANGEBYSCORE', workers_key, '-inf', now)
if redis.call('ZCARD', workers_key) == 0 then
  redis.call('HSET', served_key, 'since', num(now))
end
redis.call('ZADD', workers_key, now + ttl, worker)
-- Liveness only: with no live worker left, the registry goes by itself.
redis.call('PEXPIRE', workers_key, ttl)
redis.call('HSET', info_key, 'host', host, 'pid', pid, 'processors', processors, 'seen', num(now))
redis.call('PEXPIRE', info_key, ttl)
redis.call('DEL', contracts_key)
if #ARGV >= FIRST then
  redis.call('SADD', contracts_key, unpack(ARGV, FIRST))
  redis.call('PEXPIRE', contracts_key, ttl)
  local fields = {}
  for i = FIRST, #ARGV do
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = num(now)
  end
  redis.call('HSET', served_key, unpack(fields))
end
-- Kept ten heartbeats past the last one: what the unserved rule needs of a fleet that left.
redis.call('PEXPIRE', served_key, ttl * 10)
return {'now', now}

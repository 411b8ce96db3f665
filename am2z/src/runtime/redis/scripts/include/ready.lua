-- Marks the session as having ready jobs. Returns the scheduling generation to enlist the
-- session with: a new one when it had no ready job; while it stays ready, its current one
-- again at most once a second (so an enlist that was lost, say on a connection cut, is made
-- good by a later write rather than by the sweeper's full pass); else 0. Generations are
-- Redis' clock in µs, strictly increasing per session, so a retire of an older generation can
-- never undo the enlist of a newer one, whatever order they reach the schedule in.
local function mark_ready()
  local now = now_us()
  local m = redis.call('HMGET', meta_key, 'ready', 'nudged', 'gen')
  local ready = m[1]
  if ready then
    local nudged = tonumber(m[2] or '0')
    if now - nudged < 1000000 then
      return 0
    end
    redis.call('HSET', meta_key, 'nudged', num(now))
    return tonumber(ready)
  end
  local gen = now
  local last = tonumber(m[3] or '0')
  if gen <= last then
    gen = last + 1
  end
  redis.call('HSET', meta_key, 'ready', num(gen), 'gen', num(gen), 'nudged', num(now))
  return gen
end

-- Marks the session as having no ready job; returns its latest generation (0: none), with
-- which the caller retires it from the schedule: any entry enlisted up to now goes.
local function clear_ready()
  redis.call('HDEL', meta_key, 'ready')
  return tonumber(redis.call('HGET', meta_key, 'gen') or '0')
end

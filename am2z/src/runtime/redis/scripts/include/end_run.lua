-- Ends live run `run` with `outcome` (JSON, opaque here): stores it, moves the run from the
-- live runs to the ended ones (`ok`: completed, else failed), unlinks its run hash when the
-- caller declared one, publishes `done` (a message the caller built), and starts the
-- session's idle expiry when it was the last live run. Returns false (and does nothing) when
-- the run had already ended.
local function end_run(run, outcome, ok, run_hash, done_channel, done, session_ttl)
  if redis.call('ZREM', runs_key, run) == 0 then
    return false
  end
  redis.call('HSET', results_key, run, outcome)
  if ok then
    redis.call('ZADD', completed_key, now_ms(), run)
  else
    redis.call('ZADD', failed_key, now_ms(), run)
  end
  if run_hash then
    -- A wide run's hash has a field per branch: freed off the main thread.
    redis.call('UNLINK', run_hash)
  end
  if done ~= '' then
    redis.call('PUBLISH', done_channel, done)
  end
  if redis.call('ZCARD', runs_key) == 0 then
    went_idle(session_ttl)
  end
  return true
end

-- Adds dead-lettered `run` to the session's dead letters, keeping the newest `max_len`.
local function bury(run, max_len)
  redis.call('ZADD', dead_key, now_ms(), run)
  if max_len > 0 then
    redis.call('ZREMRANGEBYRANK', dead_key, 0, -(max_len + 1))
  end
end

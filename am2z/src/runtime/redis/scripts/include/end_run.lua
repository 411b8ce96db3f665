-- Ends live runs in one go: stores each outcome, moves each run from the live runs to the
-- ended ones (completed or failed), unlinks the run hashes given, and starts the session's
-- idle expiry when no live run is left. `ends` is a list of {run, outcome, ok,
-- run hash or false, done line or '', processor name or false}; the caller checked each is
-- live (and lists each once), then, for a run that did not succeed, what a resubmission of
-- it needs or false: its entry job's fingerprint and priority, '<fp>|<priority>'
-- (`resubmission`). The `done` lines go out as one message; or, when the caller gives it,
-- `message`, the lines already joined (the ends' own are then ''). Beside each outcome, in the same
-- write, `results` keeps the run's processor name (`<run>:p`) and, for a failed run, that
-- resubmission (`<run>:f`: a retry needs no processor registered); the run's entry body
-- stays in `bodies` (its input: what inspection shows and a retry submits again). The
-- sweeper trims them all with the outcome. Returns nothing.
local function end_runs(ends, done_channel, session_ttl, message)
  if #ends == 0 then
    return
  end
  local runs, outcomes, completed, failed, hashes, done = {}, {}, {}, {}, {}, {}
  local now = now_ms_fine_text()
  for _, e in ipairs(ends) do
    runs[#runs + 1] = e[1]
    outcomes[#outcomes + 1] = e[1]
    outcomes[#outcomes + 1] = e[2]
    if e[6] then
      outcomes[#outcomes + 1] = e[1] .. ':p'
      outcomes[#outcomes + 1] = e[6]
    end
    if e[7] and not e[3] then
      outcomes[#outcomes + 1] = e[1] .. ':f'
      outcomes[#outcomes + 1] = e[7]
    end
    if e[3] then
      completed[#completed + 1] = now
      completed[#completed + 1] = e[1]
    else
      failed[#failed + 1] = now
      failed[#failed + 1] = e[1]
    end
    if e[4] then
      hashes[#hashes + 1] = e[4]
    end
    if e[5] ~= '' then
      done[#done + 1] = e[5]
    end
  end
  redis.call('ZREM', runs_key, unpack(runs))
  redis.call('HSET', results_key, unpack(outcomes))
  if #completed > 0 then
    redis.call('ZADD', completed_key, unpack(completed))
  end
  if #failed > 0 then
    redis.call('ZADD', failed_key, unpack(failed))
  end
  if #hashes > 0 then
    -- A wide run's hash has a field per branch: freed off the main thread.
    redis.call('UNLINK', unpack(hashes))
  end
  if #done > 0 then
    message = table.concat(done, '\n')
  end
  if message and message ~= '' then
    publish(done_channel, message)
  end
  if redis.call('ZCARD', runs_key) == 0 then
    went_idle(session_ttl)
  end
end

-- Ends live run `run` with `outcome` (JSON, opaque here): stores it, moves the run from the
-- live runs to the ended ones (`ok`: completed, else failed), unlinks its run hash when the
-- caller declared one, publishes `done` (a line the caller built), and starts the session's
-- idle expiry when it was the last live run; `name` and `again` (a resubmission, or nil) are
-- kept beside the outcome as `end_runs` keeps them. Returns false (and does nothing) when
-- the run had already ended.
local function end_run(run, outcome, ok, run_hash, done_channel, done, session_ttl, name,
    again)
  if not redis.call('ZSCORE', runs_key, run) then
    return false
  end
  end_runs({{run, outcome, ok, run_hash or false, done, name or false, again or false}},
    done_channel, session_ttl)
  return true
end

-- What a resubmission of a run needs, from its entry job's header `h` (parsed): its
-- fingerprint and priority, '<fp>|<priority>' (false when `h` is nil: no readable header).
local function resubmission(h)
  if not h then
    return false
  end
  return h.fp .. '|' .. num(h.priority)
end

-- Adds dead-lettered `run` to the session's dead letters, keeping the newest `max_len`.
local function bury(run, max_len)
  redis.call('ZADD', dead_key, now_ms(), run)
  if max_len > 0 then
    redis.call('ZREMRANGEBYRANK', dead_key, 0, -(max_len + 1))
  end
end

-- Counting finished steps (needs "session"): each commit names the steps its job finished as
-- 1-based indices into the call's stats fields, comma-separated ('1', '1,2'; '' for none:
-- `protocol/finished.rs`). The steps of the commits that land (committed, or moot: the step
-- ran and will not run again) are counted in the session's `stats` by the call that commits
-- them, one `HINCRBY` per field: a step is counted once, with the commit that carries its
-- outcome; a refused commit (its job runs again elsewhere) counts nothing.

-- Adds a landed commit's steps to `tally` (by index list: the usual commits repeat one).
local function tally_steps(tally, indices)
  if indices ~= '' then
    tally[indices] = (tally[indices] or 0) + 1
  end
end

-- Counts `tally`'s steps, the call's stats fields being ARGV[first..] (index 1 is
-- ARGV[first]). Called after the call's run ends: a `stats` key made now, with no run left
-- live, expires with the session.
local function count_steps(tally, first)
  local sums, any = {}, false
  for indices, n in pairs(tally) do
    for i in string.gmatch(indices, '%d+') do
      local field = ARGV[first + tonumber(i) - 1]
      sums[field] = (sums[field] or 0) + n
      any = true
    end
  end
  if not any then
    return
  end
  for field, n in pairs(sums) do
    redis.call('HINCRBY', stats_key, field, n)
  end
  expire_with_session(stats_key)
end

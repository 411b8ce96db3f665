-- Redis' clock: leases, delays and expiries never use a worker's.

-- Now, in milliseconds.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Now, in microseconds (exact in a double until the year 2255).
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- A whole number as a string, never in exponent notation (`tostring` of 1e15 is '1e+15').
local function num(x)
  return string.format('%.0f', x)
end

-- The lowest score in the sorted set `key` (0 when it is empty).
local function first_score(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #first > 0 then
    return tonumber(first[2])
  end
  return 0
end

-- Redis' clock: leases, delays and expiries never use a worker's.

-- Now, in microseconds (exact in a double until the year 2255). Read once per call: a
-- script runs atomically, and one `TIME` is one command less for every other use.
local NOW_US = nil
local function now_us()
  if not NOW_US then
    local t = redis.call('TIME')
    NOW_US = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  return NOW_US
end

-- Now, in milliseconds.
local function now_ms()
  return math.floor(now_us() / 1000)
end

-- Now, in milliseconds, as text: formatted once per call (Lua formats a number anew each
-- time it passes one to `redis.call`, with `printf`), and written as is by every command
-- that stores it.
local NOW_MS_TEXT = nil
local function now_ms_text()
  if not NOW_MS_TEXT then
    NOW_MS_TEXT = string.format('%d', now_ms())
  end
  return NOW_MS_TEXT
end

-- Now, in milliseconds with the microseconds as a fraction, as text (once per call): the
-- score of a run's end, so that runs ending one after another within a millisecond are
-- still listed in the order they ended.
local NOW_MS_FINE_TEXT = nil
local function now_ms_fine_text()
  if not NOW_MS_FINE_TEXT then
    local us = now_us()
    NOW_MS_FINE_TEXT = string.format('%d.%03d', math.floor(us / 1000), us % 1000)
  end
  return NOW_MS_FINE_TEXT
end

-- The number `text` reads as, or nil (as `tonumber`), remembered for the rest of the call:
-- `tonumber` converts twice (`lua_isnumber`, then `lua_tonumber`, each a `strtod`), about
-- 800 instructions, and a call reads the same few texts again and again ('0', '1', a
-- worker's lease, a run's creation time), each a table lookup once read.
local NUMBERS = {}
local function number(text)
  local n = NUMBERS[text]
  if n == nil then
    n = tonumber(text)
    if n ~= nil then
      NUMBERS[text] = n
    end
  end
  return n
end

-- A whole number as a string, never in exponent notation (`tostring` of 1e15 is '1e+15').
-- `%d` below 1e15 (exact there): `tostring` formats with `%.14g`, whose digit generation
-- costs three times as much for a timestamp in milliseconds, and no less for a small number.
local format = string.format
local function num(x)
  if x < 1e15 and x > -1e15 and x == math.floor(x) then
    return format('%d', x)
  end
  return format('%.0f', x)
end

-- The lowest score in the sorted set `key` (0 when it is empty).
local function first_score(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #first > 0 then
    return tonumber(first[2])
  end
  return 0
end

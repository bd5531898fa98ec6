  return struct.pack('<dddddd', allowed and 1 or 0, remaining, reset, retry, capacity,
    period == 0 and LONGEST_MONTH_US or period)
end

-- A batch: the same block again, as a function (one closure per call, whatever n is).
local function decide(key, okey, cost, limit, period, capacity)
  local allowed, remaining, reset, retry, state, ttl_us

  return struct.pack('<dddd', allowed and 1 or 0, remaining, reset, retry)
end

-- A batch: the same block again, as a function (one closure per call, whatever n is).
local function decide(key, cost, limit, period, capacity)
  local allowed, remaining, reset, retry, state, ttl_us

-- The arithmetic token bucket and GCRA share (bucket.rs): one token is P units and one
-- microsecond refills L units, so the capacity is B*P units and refill never loses a fraction.
-- `used` is the units taken at `now`. Returns allowed, remaining, reset_after_us,
-- retry_after_us, and (when `consume` and allowed) the units taken after the request.
-- The one function of these scripts (a closure per call, so only where a bucket algorithm is):
-- token_bucket.lua and gcra.lua both call it.
local function bucket(used, cost, consume, limit, period, capacity)
  -- room and need rather than used + need against full: no sum can pass 2^53.
  local room = capacity * period - used
  local need = cost * period
  if need <= room then
    if consume then
      local taken = used + need
      return true, math.floor((room - need) / period), math.ceil(taken / limit), 0, taken
    end
    return true, math.floor(room / period), math.ceil(used / limit), 0, nil
  end
  return false, math.floor(math.max(room, 0) / period), math.ceil(used / limit),
    math.ceil((need - room) / limit), nil
end


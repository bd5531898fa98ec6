-- Sliding window counter (code 3): prev * (1 - e/P) + curr + cost <= L, evaluated in integers
-- as (curr + cost) * P <= L*P - prev * (P - e).
-- State: window, curr, prev; window = floor(t / P) of curr; prev belongs to window - 1.
local stored, stored_curr, stored_prev = 0, 0, 0
local value = redis.call('GET', key)
if value then
  if #value ~= 24 then
    error({ err = MALFORMED .. key })
  end
  stored, stored_curr, stored_prev = struct.unpack('<ddd', value)
end
-- The window the state is in (as in fixed_window.lua).
local window = math.floor(now / period)
if stored > window and stored <= window + 1 then
  window = stored
end
local prev, curr = 0, 0
if window == stored then
  prev, curr = stored_prev, stored_curr
elseif window == stored + 1 then
  prev = stored_curr
end
if adjust then
  -- SlidingWindow::adjust: charge curr; refund curr, then prev.
  if cost >= 0 then
    curr = math.max(math.min(curr + cost, 2 * limit), curr)
  else
    local from_curr = math.min(-cost, curr)
    curr, prev = curr - from_curr, math.max(prev - (-cost - from_curr), 0)
  end
  state, ttl_us, cost = struct.pack('<ddd', window, curr, prev), (window + 2) * period - now, 1
end
local elapsed = math.max(now - window * period, 0)
local weighted_prev = prev * (period - elapsed)
-- Differences, not (curr + cost) * P: after a charge curr may be twice the limit.
allowed = cost * period <= (limit * period - weighted_prev) - curr * period
retry = 0
if allowed and consume then
  curr = curr + cost
  -- Spent once window + 1 has passed too.
  state, ttl_us = struct.pack('<ddd', window, curr, prev), (window + 2) * period - now
elseif not allowed then
  -- The earliest wait after which `cost` passes.
  if curr + cost <= limit then
    -- Within this window, once prev * (P - e') <= (L - curr - cost) * P (rejected: prev > 0).
    retry = (period - math.floor((limit - curr - cost) * period / prev)) - elapsed
  else
    -- In the next window, where curr becomes prev: curr * (P - e') <= (L - cost) * P.
    retry = (period - elapsed) + math.max(period - math.floor((limit - cost) * period / curr), 0)
  end
end
remaining = math.max(math.max(limit - curr, 0) - math.ceil(weighted_prev / period), 0)
reset = 0
if curr > 0 then
  reset = 2 * period - elapsed
elseif prev > 0 then
  reset = period - elapsed
end

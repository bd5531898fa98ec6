-- Sliding window counter (code 3): prev * (1 - e/P) + curr + cost <= L, evaluated in integers
-- as (curr + cost) * P <= L*P - prev * (P - e).
-- State: "window:curr:prev", window = math.floor(t / P) of curr; prev belongs to window - 1.

-- The earliest wait after which `cost` passes, for a request rejected `elapsed` into its window.
local function sliding_window_retry(prev, curr, elapsed, limit, period, cost)
  if curr + cost <= limit then
    -- Within this window, once prev * (P - e') <= (L - curr - cost) * P (rejected: prev > 0).
    local room = (limit - curr - cost) * period
    return (period - math.floor(room / prev)) - elapsed
  end
  -- In the next window, where curr becomes prev: curr * (P - e') <= (L - cost) * P.
  local room = (limit - cost) * period
  return (period - elapsed) + math.max(period - math.floor(room / curr), 0)
end

local function sliding_window(key, now, cost, consume, limit, period)
  local stored, stored_curr, stored_prev = 0, 0, 0
  local value = redis.call('GET', key)
  if value then
    local w, c, p = string.match(value, '^(%d+):(%d+):(%d+)$')
    if not w then
      malformed(key)
    end
    stored, stored_curr, stored_prev = tonumber(w), tonumber(c), tonumber(p)
  end
  local window = current_window(math.floor(now / period), stored)
  local prev, curr = 0, 0
  if window == stored then
    prev, curr = stored_prev, stored_curr
  elseif window == stored + 1 then
    prev = stored_curr
  end
  local elapsed = math.max(now - window * period, 0)
  local weighted_prev = prev * (period - elapsed)
  local allowed = (curr + cost) * period <= limit * period - weighted_prev

  local retry = 0
  if allowed and consume then
    curr = curr + cost
    -- Spent once window + 1 has passed too.
    local ttl = ttl_ms((window + 2) * period - now)
    redis.call('SET', key, int(window) .. ':' .. int(curr) .. ':' .. int(prev), 'PX', ttl)
  elseif not allowed then
    retry = sliding_window_retry(prev, curr, elapsed, limit, period, cost)
  end
  local remaining = math.max(math.max(limit - curr, 0) - math.ceil(weighted_prev / period), 0)
  local reset = 0
  if curr > 0 then
    reset = 2 * period - elapsed
  elseif prev > 0 then
    reset = period - elapsed
  end
  return allowed, remaining, reset, retry
end

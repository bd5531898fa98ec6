-- Sliding window counter (code 3): prev * (1 - e/P) + curr + cost <= L, evaluated in integers
-- as (curr + cost) * P <= L*P - prev * (P - e).
-- State: "window:curr:prev", window = floor(t / P) of curr; prev belongs to window - 1.

-- The earliest wait after which `cost` passes, for a request rejected `elapsed` into its window.
local function sliding_window_retry(prev, curr, elapsed, limit, period, cost)
  if curr + cost <= limit then
    -- Within this window, once prev * (P - e') <= (L - curr - cost) * P (rejected: prev > 0).
    local room = (limit - curr - cost) * period
    return (period - floor(room / prev)) - elapsed
  end
  -- In the next window, where curr becomes prev: curr * (P - e') <= (L - cost) * P.
  local room = (limit - cost) * period
  return (period - elapsed) + max(period - floor(room / curr), 0)
end

ALGORITHMS[3] = {
  read = function(key)
    local window, curr, prev = read_numbers(key, true)
    return { window or 0, curr or 0, prev or 0 }
  end,

  decide = function(s, now, cost, consume, limit, period)
    local window = max(floor(now / period), s[1])
    local prev, curr = 0, 0
    if window == s[1] then
      prev, curr = s[3], s[2]
    elseif window == s[1] + 1 then
      prev = s[2]
    end
    local elapsed = max(now - window * period, 0)
    local weighted_prev = prev * (period - elapsed)
    local allowed = (curr + cost) * period <= limit * period - weighted_prev

    local retry, curr_after, new = 0, curr, nil
    if allowed and consume then
      curr_after = curr + cost
      new = { window, curr_after, prev }
    elseif not allowed then
      retry = sliding_window_retry(prev, curr, elapsed, limit, period, cost)
    end
    local remaining = max(max(limit - curr_after, 0) - ceil(weighted_prev / period), 0)
    local reset = 0
    if curr_after > 0 then
      reset = 2 * period - elapsed
    elseif prev > 0 then
      reset = period - elapsed
    end
    return allowed, remaining, reset, retry, new
  end,

  write = function(key, s, now, limit, period)
    -- curr > 0 after a consuming write: the state is spent once window + 1 has passed too.
    local ttl = ttl_ms((s[1] + 2) * period - now)
    redis.call('SET', key, int(s[1]) .. ':' .. int(s[2]) .. ':' .. int(s[3]), 'PX', ttl)
  end,
}

-- Fixed window (code 1): a counter per window [k*P, (k+1)*P) aligned to the Unix epoch.
-- State: "window:count", window = math.floor(t / P) of the count (so decisions never depend on when
-- the key expires).
-- The window a state stored for window `stored` is in at window `current` (fixed_window.rs
-- current_window): a clock that steps back never reopens a window already counted; a stored
-- window more than one ahead was counted under a longer period (the policy changed) and is stale.
local function current_window(current, stored)
  if stored <= current + 1 then
    return math.max(current, stored)
  end
  return current
end

local function fixed_window(key, now, cost, consume, limit, period)
  local stored, count = read_pair(key)
  local window = current_window(math.floor(now / period), stored)
  if window ~= stored then
    count = 0
  end
  local until_end = math.max((window + 1) * period - now, 0)
  -- cost <= limit - count rather than count + cost <= limit: the sum could pass 2^53.
  local allowed = cost <= limit - count
  if allowed and consume then
    count = count + cost
    redis.call('SET', key, int(window) .. ':' .. int(count), 'PX', ttl_ms(until_end))
  end
  local reset, retry = 0, 0
  if count > 0 then
    reset = until_end
  end
  if not allowed then
    retry = until_end
  end
  return allowed, math.max(limit - count, 0), reset, retry
end

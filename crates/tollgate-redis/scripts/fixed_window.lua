-- Fixed window (code 1): a counter per window [k*P, (k+1)*P) aligned to the Unix epoch.
-- State: window, count; window = floor(t / P) of the count, so decisions never depend on when
-- the key expires.
local stored, counted = 0, 0
local value = redis.call('GET', key)
if value then
  if #value ~= 16 then
    error({ err = MALFORMED .. key })
  end
  stored, counted = struct.unpack('<dd', value)
end
-- fixed_window.rs current_window: a clock that steps back never reopens a window already
-- counted; a stored window more than one ahead was counted under a longer period (the policy
-- changed) and is stale.
local window = math.floor(now / period)
if stored > window and stored <= window + 1 then
  window = stored
end
if window ~= stored then
  counted = 0
end
local until_end = math.max((window + 1) * period - now, 0)
-- cost <= limit - counted rather than counted + cost <= limit: the sum could pass 2^53.
allowed = cost <= limit - counted
if allowed and consume then
  counted = counted + cost
  state, ttl_us = struct.pack('<dd', window, counted), until_end
end
reset, retry = 0, 0
if counted > 0 then
  reset = until_end
end
if not allowed then
  retry = until_end
end
remaining = math.max(limit - counted, 0)

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
local window, until_end
if period == 0 then
  -- A monthly policy (period 0 in ARGV): window = UTC calendar months since January 1970,
  -- by calendar.rs's integer arithmetic (civil_from_days, then days_from_civil of the next).
  local z = math.floor(now / 86400000000) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local mp = math.floor((5 * (doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))) + 2) / 153)
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  window = (year - 1970) * 12 + month - 1
  if stored > window and stored <= window + 1 then
    window = stored
  end
  local y, m = 1970 + math.floor((window + 1) / 12), (window + 1) % 12 + 1
  if m <= 2 then
    y = y - 1
  end
  local y_era = math.floor(y / 400)
  local y_of_era = y - y_era * 400
  local first = y_of_era * 365 + math.floor(y_of_era / 4) - math.floor(y_of_era / 100)
    + math.floor((153 * ((m + 9) % 12) + 2) / 5)
  until_end = math.max((y_era * 146097 + first - 719468) * 86400000000 - now, 0)
else
  -- fixed_window.rs current_window: a clock that steps back never reopens a window already
  -- counted; a stored window more than one ahead was counted under a longer period (the
  -- policy changed) and is stale.
  window = math.floor(now / period)
  if stored > window and stored <= window + 1 then
    window = stored
  end
  until_end = math.max((window + 1) * period - now, 0)
end
if window ~= stored then
  counted = 0
end
if adjust then
  -- FixedWindow::adjust: the debt is not carried past the window's end.
  if cost >= 0 then
    counted = math.max(math.min(counted + cost, 2 * limit, MAX_COUNT), counted)
  else
    counted = math.max(counted + cost, 0)
  end
  state, ttl_us, cost = struct.pack('<dd', window, counted), until_end, 1
end
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

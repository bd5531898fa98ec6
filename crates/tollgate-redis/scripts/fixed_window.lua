-- Fixed window (code 1): a counter per window [k*P, (k+1)*P) aligned to the Unix epoch.
-- State: "window:count" with window = floor(t / P) of the count (so decisions never depend on
-- when the key expires).

ALGORITHMS[1] = {
  read = function(key)
    local window, count = read_numbers(key, false)
    return { window or 0, count or 0 }
  end,

  decide = function(s, now, cost, consume, limit, period)
    -- A clock that steps back never reopens a window already counted.
    local window = max(floor(now / period), s[1])
    local count = 0
    if window == s[1] then
      count = s[2]
    end
    local until_end = max((window + 1) * period - now, 0)
    local allowed = count + cost <= limit
    local used, new = count, nil
    if allowed and consume then
      used = count + cost
      new = { window, used }
    end
    local reset, retry = 0, 0
    if used > 0 then
      reset = until_end
    end
    if not allowed then
      retry = until_end
    end
    return allowed, max(limit - used, 0), reset, retry, new
  end,

  write = function(key, s, now, limit, period)
    local ttl = ttl_ms((s[1] + 1) * period - now)
    redis.call('SET', key, int(s[1]) .. ':' .. int(s[2]), 'PX', ttl)
  end,
}

-- Token bucket (code 4): capacity B, refilled continuously at L / P.
-- State: "used:last", the units missing from a full bucket at `last` (µs).

ALGORITHMS[4] = {
  read = function(key)
    local used, last = read_numbers(key, false)
    return { used or 0, last or 0 }
  end,

  decide = function(s, now, cost, consume, limit, period, capacity)
    local used, last = s[1], s[2]
    -- Refill L units per µs since `last`, down to an empty deficit (drain in bucket.rs).
    local elapsed = max(now - last, 0)
    if elapsed >= ceil(used / limit) then
      used = 0
    else
      used = used - elapsed * limit
    end
    local allowed, remaining, reset, retry, taken =
      bucket(used, cost, consume, limit, period, capacity)
    local new = nil
    if taken then
      new = { taken, max(now, last) }
    end
    return allowed, remaining, reset, retry, new
  end,

  write = function(key, s, now, limit, period)
    -- Full again once `used` has drained from `last`.
    local ttl = ttl_ms(s[2] + ceil(s[1] / limit) - now)
    redis.call('SET', key, int(s[1]) .. ':' .. int(s[2]), 'PX', ttl)
  end,
}

-- GCRA, alias leaky bucket (code 5): the theoretical arrival time TAT, advanced by T = P / L
-- per unit of cost, burst tolerance B*T. Same decisions as the token bucket.
-- State: "tat_us:tat_rem", TAT = tat_us + tat_rem / L microseconds (0 <= tat_rem < L).

ALGORITHMS[5] = {
  read = function(key)
    local tat, rem = read_numbers(key, false)
    return { tat or 0, rem or 0 }
  end,

  decide = function(s, now, cost, consume, limit, period, capacity)
    -- (TAT - now) in units of 1/L µs: exactly the token bucket's `used`.
    local used = 0
    if s[1] >= now then
      used = (s[1] - now) * limit + s[2]
    end
    local allowed, remaining, reset, retry, taken =
      bucket(used, cost, consume, limit, period, capacity)
    local new = nil
    if taken then
      new = { now + floor(taken / limit), taken % limit }
    end
    return allowed, remaining, reset, retry, new
  end,

  write = function(key, s, now, limit, period)
    -- Full again at TAT.
    local until_tat = s[1] - now
    if s[2] > 0 then
      until_tat = until_tat + 1
    end
    redis.call('SET', key, int(s[1]) .. ':' .. int(s[2]), 'PX', ttl_ms(until_tat))
  end,
}

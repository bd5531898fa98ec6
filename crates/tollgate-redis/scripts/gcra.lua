-- GCRA, alias leaky bucket (code 5): the theoretical arrival time TAT, advanced by T = P / L
-- per unit of cost, burst tolerance B*T. Same decisions as the token bucket.
-- State: tat_us, tat_rem: TAT = tat_us + tat_rem / L microseconds (0 <= tat_rem < L).
local tat, rem = 0, 0
local value = redis.call('GET', key)
if value then
  if #value ~= 16 then
    error({ err = MALFORMED .. key })
  end
  tat, rem = struct.unpack('<dd', value)
end
-- (TAT - now) in units of 1/L µs: exactly the token bucket's `used`.
local used = 0
if tat >= now then
  used = (tat - now) * limit + rem
end
if adjust then
  -- Gcra::adjust: bucket::adjust on the bucket the TAT equals.
  if cost >= 0 then
    used = math.max(math.min(used + cost * period, (capacity + limit) * period), used)
  else
    used = math.max(used + cost * period, 0)
  end
  local whole = math.floor(used / limit)
  state, ttl_us, cost = struct.pack('<dd', now + whole, used - whole * limit), math.ceil(used / limit), 1
end
local taken
allowed, remaining, reset, retry, taken = bucket(used, cost, consume, limit, period, capacity)
if taken then
  -- Full again at the new TAT: math.ceil(taken / L) from now.
  local whole = math.floor(taken / limit)
  state, ttl_us = struct.pack('<dd', now + whole, taken - whole * limit), math.ceil(taken / limit)
end

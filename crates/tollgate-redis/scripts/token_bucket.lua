-- Token bucket (code 4): capacity B, refilled continuously at L / P.
-- State: used, last: the units missing from a full bucket at `last` (µs).
local used, last = 0, 0
local value = redis.call('GET', key)
if value then
  if #value ~= 16 then
    error({ err = MALFORMED .. key })
  end
  used, last = struct.unpack('<dd', value)
end
-- Refill L units per µs since `last`, down to a full bucket (drain in bucket.rs).
local elapsed = math.max(now - last, 0)
if elapsed >= math.ceil(used / limit) then
  used = 0
else
  used = used - elapsed * limit
end
if adjust then
  -- bucket::adjust: down to one period's refill below empty, up to a full bucket.
  if cost >= 0 then
    used = math.max(math.min(used + cost * period, (capacity + limit) * period), used)
  else
    used = math.max(used + cost * period, 0)
  end
  last = math.max(now, last)
  state, ttl_us, cost = struct.pack('<dd', used, last), last + math.ceil(used / limit) - now, 1
end
local taken
allowed, remaining, reset, retry, taken = bucket(used, cost, consume, limit, period, capacity)
if taken then
  last = math.max(now, last)
  -- Full again once `taken` has drained from `last`.
  state, ttl_us = struct.pack('<dd', taken, last), last + math.ceil(taken / limit) - now
end

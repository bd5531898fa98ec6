-- Token bucket (code 4): capacity B, refilled continuously at L / P.
-- State: "used:last", the units missing from a full bucket at `last` (µs).
local function token_bucket(key, now, cost, consume, limit, period, capacity)
  local used, last = read_pair(key)
  -- Refill L units per µs since `last`, down to a full bucket (drain in bucket.rs).
  local elapsed = math.max(now - last, 0)
  if elapsed >= math.ceil(used / limit) then
    used = 0
  else
    used = used - elapsed * limit
  end
  local allowed, remaining, reset, retry, taken =
    bucket(used, cost, consume, limit, period, capacity)
  if taken then
    last = math.max(now, last)
    -- Full again once `taken` has drained from `last`.
    local ttl = ttl_ms(last + math.ceil(taken / limit) - now)
    redis.call('SET', key, int(taken) .. ':' .. int(last), 'PX', ttl)
  end
  return allowed, remaining, reset, retry
end

-- tollgate: helpers shared by the per-algorithm transitions below.
--
-- The transitions are the Lua twins of crates/tollgate/src/algorithm/*.rs. Every value they
-- handle is an integer below 2^53 (policy validation guarantees it), so Lua's doubles hold them
-- exactly, and floor/ceil of a quotient of two such integers is exact as well. Comparisons are
-- arranged so that no sum ever exceeds 2^53 either.
--
-- Each algorithm registers { read, decide, write } under its code in ALGORITHMS:
--   read(key)                                         -> state (fresh when the key is absent)
--   decide(state, now, cost, consume, limit, period, capacity)
--       -> allowed, remaining, reset_after_us, retry_after_us, new_state_or_nil
--      (pure: it writes nothing; new_state is what a consuming, allowed request stores)
--   write(key, new_state, now, limit, period)        -> stores it with a TTL
-- Every write sets a TTL of ttl_ms(us), `us` being how long until the stored state is back to
-- a full quota: past that point the state decides exactly as an absent key, so expiry never
-- changes a decision (the extra second guards against expiry racing a decision).

local floor, ceil, max = math.floor, math.ceil, math.max

local ALGORITHMS = {}

-- An integer as text with all its digits (tostring keeps only 14 significant digits).
local function int(x)
  return string.format('%.0f', x)
end

-- Milliseconds of TTL for a state that is back to a full quota `us` microseconds from now.
local function ttl_ms(us)
  return ceil(us / 1000) + 1000
end

-- A stored state that is not ours: fail loudly rather than hand out a fresh quota.
local function malformed(key)
  error({ err = 'TOLLGATE malformed rate-limit state at ' .. key })
end

-- "a:b" (or "a:b:c" when three = true) into numbers; nil when the key is absent.
local function read_numbers(key, three)
  local value = redis.call('GET', key)
  if not value then
    return nil
  end
  local a, b, c
  if three then
    a, b, c = string.match(value, '^(%d+):(%d+):(%d+)$')
  else
    a, b = string.match(value, '^(%d+):(%d+)$')
    c = '0'
  end
  if not a then
    malformed(key)
  end
  return tonumber(a), tonumber(b), tonumber(c)
end

-- tollgate: helpers shared by the per-algorithm transitions that follow.
--
-- The transitions are the Lua twins of crates/tollgate/src/algorithm/*.rs. Every value they
-- handle is an integer below 2^53 (policy validation guarantees it), so Lua's doubles hold them
-- exactly, and floor/ceil of a quotient of two such integers is exact as well. Comparisons are
-- arranged so that no sum exceeds 2^53 either.
--
-- Each algorithm is one function
--   algorithm(key, now, cost, consume, limit, period, capacity)
--     -> allowed, remaining, reset_after_us, retry_after_us
-- that reads its key, decides, and writes the new state only when `consume` is true and the
-- request is allowed. Every write sets a TTL of ttl_ms(us), `us` being how long until the
-- stored state is back to a full quota: from then on it decides exactly as an absent key, so
-- expiry never changes a decision (the extra second guards against expiry racing a decision).
--
-- Redis runs this whole chunk on every call, so it defines plain functions only: no tables are
-- built until a decision needs one. They call math.* and string.* directly rather than through
-- local aliases: each local a function captures is a new upvalue on every call (measured with
-- callgrind, about 500 instructions each), dearer than the table lookups it saves.

-- An integer as text with all its digits: tostring keeps only 14 significant digits, and '%d'
-- (a C long here) is exact below 2^53 and about twice as cheap as '%.0f'.
local function int(x)
  return string.format('%d', x)
end

-- Milliseconds of TTL, as text, for a state that is back to a full quota `us` microseconds from
-- now (text: Redis would otherwise format the number itself, with the dearer '%.17g').
local function ttl_ms(us)
  return string.format('%d', math.ceil(us / 1000) + 1000)
end

-- A stored value that is not ours: fail loudly rather than hand out a fresh quota.
local function malformed(key)
  error({ err = 'TOLLGATE malformed rate-limit state at ' .. key })
end

-- The two numbers of an "a:b" state; 0, 0 when the key is absent.
local function read_pair(key)
  local value = redis.call('GET', key)
  if not value then
    return 0, 0
  end
  local a, b = string.match(value, '^(%d+):(%d+)$')
  if not a then
    malformed(key)
  end
  return tonumber(a), tonumber(b)
end

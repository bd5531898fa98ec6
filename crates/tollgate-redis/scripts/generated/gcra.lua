local batched = false
-- tollgate: the Lua twins of crates/tollgate/src/algorithm/*.rs, in two shapes (script.rs):
--
-- * one policy (one_policy.lua): one script per algorithm, its block alone;
-- * several policies of one identifier (several_policies.lua): one script, every block.
--
-- Every value they handle is an integer below 2^53 (policy validation guarantees it), so
-- Lua's doubles hold them exactly, and floor/ceil of a quotient of two such integers is exact
-- as well. Comparisons are arranged so that no sum exceeds 2^53 either. State is stored as
-- little-endian doubles (`struct.pack`): exact for these integers, and neither formatted nor
-- parsed as text.
--
-- Why blocks and not functions: Redis runs a script's whole chunk on every call, so every
-- `local function` here would be a new closure per call (measured with callgrind: about 1,000
-- Redis instructions each, while a whole GCRA decision costs about 65,000). Each algorithm file
-- is therefore a block, pasted into a frame by script.rs, that reads
--   key, now, cost, consume, limit, period, capacity
-- and sets
--   allowed, remaining, reset, retry        the decision (µs for the last two)
--   state, ttl_us                           only when it consumed: the new value to SET and
--                                           how long until it is back to a full quota.
-- The sliding log keeps a list and writes it itself; it sets only ttl_us. After the block,
-- write.lua gives the key a TTL of ttl_us rounded up to ms plus one second: from then on the
-- state decides exactly as an absent key, so expiry never changes a decision (the extra
-- second guards against expiry racing a decision).

-- An adjustment (mode 'a') changes the state by a signed delta before the block decides one
-- unit as a peek (State::adjust): a charge counts up to one limit past the quota (never past
-- MAX_COUNT, the largest integer a double holds exactly), a refund down to zero.
local MAX_COUNT = 9007199254740991
-- A monthly policy's period (0 in the arguments: calendar months) as it reports it: the
-- longest month, µs (calendar.rs LONGEST_MONTH_US).
local LONGEST_MONTH_US = 2678400000000
-- A stored value that is not ours fails loudly rather than hand out a fresh quota.
local MALFORMED = 'TOLLGATE malformed rate-limit state at '
local ALGORITHM = 'gcra'
-- The arithmetic token bucket and GCRA share (bucket.rs): one token is P units and one
-- microsecond refills L units, so the capacity is B*P units and refill never loses a fraction.
-- `used` is the units taken at `now`. Returns allowed, remaining, reset_after_us,
-- retry_after_us, and (when `consume` and allowed) the units taken after the request.
-- The one function of these scripts (a closure per call, so only where a bucket algorithm is):
-- token_bucket.lua and gcra.lua both call it.
local function bucket(used, cost, consume, limit, period, capacity)
  -- room and need rather than used + need against full: no sum can pass 2^53.
  local room = capacity * period - used
  local need = cost * period
  if need <= room then
    if consume then
      local taken = used + need
      return true, math.floor((room - need) / period), math.ceil(taken / limit), 0, taken
    end
    return true, math.floor(room / period), math.ceil(used / limit), 0, nil
  end
  return false, math.floor(math.max(room, 0) / period), math.ceil(used / limit),
    math.ceil((need - room) / limit), nil
end

-- One policy: the frame of the per-algorithm scripts. One call decides one check or, when
-- several waited at once, a batch of checks of this algorithm (batch.rs): each decided in
-- turn, exactly as if each were a call of its own, the batch as a whole atomic. Batching
-- saves Redis the price of a call (about 14k of its 65k instructions per decision,
-- BENCHMARKS.md) and the clock read for all but one decision.
--
-- `batched` (set by the line script.rs puts first) is true in the batch form, which decides
-- even one check as a batch; the single form decides a lone check inline.
-- KEYS: per check (n >= 1): its state key, then its override key (override.lua).
-- ARGV: per check: cost, limit, period_us, capacity (burst for token bucket and GCRA, else
--       limit); then, both optional: mode ('c' consume, the default, 'p' peek, or 'a' adjust:
--       cost is then a signed delta, charged or refunded after the fact, and the answer is a
--       peek of one unit afterwards; State::adjust in algorithm/mod.rs) and now in µs (tests
--       inject time; production never does, and Redis TIME is read).
-- Returns, for one check, its allowed (1/0), remaining, reset_after_us, retry_after_us and
-- the limit and period it was decided under (its capacity; a monthly period as the longest
-- month) as six little-endian doubles (exact integers): one bulk string, which costs Redis less than a
-- table of four integers and the client far less to parse. For n checks, their n answers
-- concatenated; only if some check failed (a foreign value under its key, say), an array of
-- n elements instead: each answer, or that check's error.
local count = #KEYS / 2
local mode = ARGV[4 * count + 1]
local adjust = mode == 'a'
local consume = mode ~= 'p' and not adjust
local now = tonumber(ARGV[4 * count + 2])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
if count == 1 and not batched then
  -- A check of its own: the block inline (a function would be a closure per call, about 2.5k
  -- Redis instructions), and an error is the call's error, as any script error.
  local key, okey, cost, limit, period, capacity = KEYS[1], KEYS[2],
    tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  local allowed, remaining, reset, retry, state, ttl_us
-- The key's override, read in the same call that decides (overrides.rs): a hash at `okey`,
-- in the state's slot, whose fields replace limit, period and capacity when it was set for
-- this algorithm (an override set before a reload changed the policy's algorithm does not
-- apply). A cost above the capacity can never pass while it stands: rejected, nothing written,
-- retry after one period (an adjustment's delta is not a cost: it always runs the block). The
-- block below runs only otherwise (its `end` follows it).
-- HGETALL rather than HMGET of the four fields: almost every key has no override, and an empty
-- reply costs Redis less than four nils (bench/HISTORY.md, "The override read").
local overridden = redis.call('HGETALL', okey)
if overridden[1] then
  local field = {}
  for i = 1, #overridden, 2 do
    field[overridden[i]] = overridden[i + 1]
  end
  if field.algorithm == ALGORITHM then
    limit, period, capacity = tonumber(field.limit), tonumber(field.period_us), tonumber(field.burst)
  end
end
if cost > capacity and not adjust then
  -- One period; for a monthly policy (period 0) the longest month (calendar.rs).
  local wait = period
  if wait == 0 then
    wait = LONGEST_MONTH_US
  end
  allowed, remaining, reset, retry = false, 0, wait, wait
else
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
end
-- After a block: the new state (or, for the sliding log, only the TTL) of a consuming decision.
if ttl_us then
  local ttl = string.format('%d', math.ceil(ttl_us / 1000) + 1000)
  if state then
    redis.call('SET', key, state, 'PX', ttl)
  else
    redis.call('PEXPIRE', key, ttl)
  end
end
  return struct.pack('<dddddd', allowed and 1 or 0, remaining, reset, retry, capacity,
    period == 0 and LONGEST_MONTH_US or period)
end

-- A batch: the same block again, as a function (one closure per call, whatever n is).
local function decide(key, okey, cost, limit, period, capacity)
  local allowed, remaining, reset, retry, state, ttl_us
-- The key's override, read in the same call that decides (overrides.rs): a hash at `okey`,
-- in the state's slot, whose fields replace limit, period and capacity when it was set for
-- this algorithm (an override set before a reload changed the policy's algorithm does not
-- apply). A cost above the capacity can never pass while it stands: rejected, nothing written,
-- retry after one period (an adjustment's delta is not a cost: it always runs the block). The
-- block below runs only otherwise (its `end` follows it).
-- HGETALL rather than HMGET of the four fields: almost every key has no override, and an empty
-- reply costs Redis less than four nils (bench/HISTORY.md, "The override read").
local overridden = redis.call('HGETALL', okey)
if overridden[1] then
  local field = {}
  for i = 1, #overridden, 2 do
    field[overridden[i]] = overridden[i + 1]
  end
  if field.algorithm == ALGORITHM then
    limit, period, capacity = tonumber(field.limit), tonumber(field.period_us), tonumber(field.burst)
  end
end
if cost > capacity and not adjust then
  -- One period; for a monthly policy (period 0) the longest month (calendar.rs).
  local wait = period
  if wait == 0 then
    wait = LONGEST_MONTH_US
  end
  allowed, remaining, reset, retry = false, 0, wait, wait
else
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
end
-- After a block: the new state (or, for the sliding log, only the TTL) of a consuming decision.
if ttl_us then
  local ttl = string.format('%d', math.ceil(ttl_us / 1000) + 1000)
  if state then
    redis.call('SET', key, state, 'PX', ttl)
  else
    redis.call('PEXPIRE', key, ttl)
  end
end
  return struct.pack('<dddddd', allowed and 1 or 0, remaining, reset, retry, capacity,
    period == 0 and LONGEST_MONTH_US or period)
end

-- A check that fails has written nothing (every block reads, and fails, before it
-- writes) and fails alone; the others stand, as they would have as calls of their own.
-- Checks of one policy repeat its arguments: equal strings are one interned string in Lua, so
-- comparing them is a pointer comparison, and each is parsed (strtod: about 1k instructions)
-- only when it differs from the check before.
local answers, failed = {}, false
local texts, numbers = {}, {}
for i = 1, count do
  local b = 4 * i - 4
  for j = 1, 4 do
    local text = ARGV[b + j]
    if text ~= texts[j] then
      texts[j], numbers[j] = text, tonumber(text)
    end
  end
  local ok, answer = pcall(decide, KEYS[2 * i - 1], KEYS[2 * i], numbers[1], numbers[2], numbers[3], numbers[4])
  if ok then
    answers[i] = answer
  else
    failed = true
    answers[i] = { err = type(answer) == 'table' and answer.err or tostring(answer) }
  end
end
if failed then
  return answers
end
return table.concat(answers)

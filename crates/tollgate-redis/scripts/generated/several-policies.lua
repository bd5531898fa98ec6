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

-- Several policies of one identifier: the frame of the script that runs every algorithm.
--
-- KEYS: per policy, its state key and its override key (override.lua), all of one identifier
--       (one Cluster slot).
-- ARGV: cost; then per policy: algorithm code ('1' fixed window, '2' sliding log, '3' sliding
--       window, '4' token bucket, '5' GCRA), limit, period_us, capacity; then, both optional:
--       mode ('c' consume, the default, or 'p' peek) and now in µs (as in one_policy.lua).
-- Returns 5 integers per policy: allowed (1/0), remaining, reset_after_us, retry_after_us,
-- the limit decided under (several_policies_end.lua).
--
-- A consuming check first decides every policy without writing; only if all allow are they
-- decided again, consuming (memory.rs Entry::decide). Otherwise nothing is written and every
-- policy reads as a rejection with what is left now.
local count = #KEYS / 2
-- The algorithm of each code, as override.lua compares it with an override's.
local NAMES = { ['1'] = 'fixed-window', ['2'] = 'sliding-log', ['3'] = 'sliding-window',
  ['4'] = 'token-bucket', ['5'] = 'gcra' }
local cost = tonumber(ARGV[1])
local optional = 4 * count + 2
local peek = ARGV[optional] == 'p'
-- Adjustments run the one-policy scripts only (override.lua and the blocks read this).
local adjust = false
local now = tonumber(ARGV[optional + 1])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end

local reply = {}
local consume = false
while true do
  local all_allowed = true
  for i = 1, count do
    local key, okey = KEYS[2 * i - 1], KEYS[2 * i]
    local base = 4 * i - 2
    local code = ARGV[base]
    local ALGORITHM = NAMES[code]
    local limit, period, capacity =
      tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
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
if code == '5' then
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
elseif code == '4' then
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
elseif code == '1' then
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
elseif code == '3' then
-- Sliding window counter (code 3): prev * (1 - e/P) + curr + cost <= L, evaluated in integers
-- as (curr + cost) * P <= L*P - prev * (P - e).
-- State: window, curr, prev; window = floor(t / P) of curr; prev belongs to window - 1.
local stored, stored_curr, stored_prev = 0, 0, 0
local value = redis.call('GET', key)
if value then
  if #value ~= 24 then
    error({ err = MALFORMED .. key })
  end
  stored, stored_curr, stored_prev = struct.unpack('<ddd', value)
end
-- The window the state is in (as in fixed_window.lua).
local window = math.floor(now / period)
if stored > window and stored <= window + 1 then
  window = stored
end
local prev, curr = 0, 0
if window == stored then
  prev, curr = stored_prev, stored_curr
elseif window == stored + 1 then
  prev = stored_curr
end
if adjust then
  -- SlidingWindow::adjust: charge curr; refund curr, then prev.
  if cost >= 0 then
    curr = math.max(math.min(curr + cost, 2 * limit), curr)
  else
    local from_curr = math.min(-cost, curr)
    curr, prev = curr - from_curr, math.max(prev - (-cost - from_curr), 0)
  end
  state, ttl_us, cost = struct.pack('<ddd', window, curr, prev), (window + 2) * period - now, 1
end
local elapsed = math.max(now - window * period, 0)
local weighted_prev = prev * (period - elapsed)
-- Differences, not (curr + cost) * P: after a charge curr may be twice the limit.
allowed = cost * period <= (limit * period - weighted_prev) - curr * period
retry = 0
if allowed and consume then
  curr = curr + cost
  -- Spent once window + 1 has passed too.
  state, ttl_us = struct.pack('<ddd', window, curr, prev), (window + 2) * period - now
elseif not allowed then
  -- The earliest wait after which `cost` passes.
  if curr + cost <= limit then
    -- Within this window, once prev * (P - e') <= (L - curr - cost) * P (rejected: prev > 0).
    retry = (period - math.floor((limit - curr - cost) * period / prev)) - elapsed
  else
    -- In the next window, where curr becomes prev: curr * (P - e') <= (L - cost) * P.
    retry = (period - elapsed) + math.max(period - math.floor((limit - cost) * period / curr), 0)
  end
end
remaining = math.max(math.max(limit - curr, 0) - math.ceil(weighted_prev / period), 0)
reset = 0
if curr > 0 then
  reset = 2 * period - elapsed
elseif prev > 0 then
  reset = period - elapsed
end
elseif code == '2' then
-- Sliding log (code 2): exact, the sum of costs admitted in (now - P, now].
-- State: a list [total, at1, cost1, at2, cost2, ...] of integers as text: the sum of the
-- costs, then the admitted requests oldest first, equal timestamps merged (so at most L
-- entries). Entries that left the window are skipped by reads and dropped by the next
-- consuming write. The list is read in chunks, so a decision costs O(1 + entries it must look
-- at), not O(L). (The two helpers below are closures made only when this block runs.)
local LOG_CHUNK = 32 -- list elements fetched per LRANGE (16 entries)
local items = redis.call('LRANGE', key, 0, LOG_CHUNK)
local complete = #items <= LOG_CHUNK

-- Entry i (1-based) of the log as at, cost; nil past the end. Fetches chunks on demand.
local function log_entry(i)
  local index = 2 * i -- position of at_i in items (items[1] is the total)
  while index + 1 > #items and not complete do
    local from = #items
    local more = redis.call('LRANGE', key, from, from + LOG_CHUNK - 1)
    for j = 1, #more do
      items[from + j] = more[j]
    end
    complete = #more < LOG_CHUNK
  end
  local at = items[index]
  if not at then
    return nil
  end
  return tonumber(at), tonumber(items[index + 1])
end

-- An integer as text with all its digits: tostring keeps only 14 significant digits, and '%d'
-- (a C long here) is exact below 2^53.
local function int(x)
  return string.format('%d', x)
end

local total = 0
if #items > 0 then
  total = tonumber(items[1])
  if not total or #items % 2 == 0 then
    error({ err = MALFORMED .. key })
  end
end
-- Entries at or before now - P have left the window: skip them.
local expired, expired_cost = 0, 0
while true do
  local at, c = log_entry(expired + 1)
  if not at or at + period > now then
    break
  end
  expired = expired + 1
  expired_cost = expired_cost + c
end
local in_window = total - expired_cost
if adjust then
  -- SlidingLog::charge: a charge is admitted as a request of that cost, up to twice the
  -- limit (the caller refuses refunds; one here charges nothing).
  cost = math.min(cost, 2 * limit - in_window)
  allowed = cost > 0
else
  -- Differences, not sums: in_window + cost could pass 2^53.
  allowed = cost <= limit - in_window
end
remaining, retry = math.max(limit - in_window, 0), 0
-- The newest entry (nil for an empty log).
local newest, newest_cost
if complete then
  if #items >= 3 then
    newest, newest_cost = tonumber(items[#items - 1]), tonumber(items[#items])
  end
else
  local tail = redis.call('LRANGE', key, -2, -1)
  newest, newest_cost = tonumber(tail[1]), tonumber(tail[2])
end

if allowed and (consume or adjust) then
  total = in_window + cost
  remaining = math.max(limit - total, 0)
  if #items == 0 then
    redis.call('RPUSH', key, int(total), int(now), int(cost))
    newest = now
  else
    if newest and newest >= now then
      -- Same instant (or a clock that stepped back): add to the newest entry.
      redis.call('LSET', key, -1, int(newest_cost + cost))
    else
      redis.call('RPUSH', key, int(now), int(cost))
      newest = now
    end
    if expired > 0 then
      -- Drop the old total and the expired entries, then put the new total in front.
      redis.call('LTRIM', key, 2 * expired + 1, -1)
      redis.call('LPUSH', key, int(total))
    else
      redis.call('LSET', key, 0, int(total))
    end
  end
  -- Spent once the newest entry has left the window.
  ttl_us = newest + period - now
end
if adjust then
  -- Then a peek of one unit, on the log as now written (read afresh: a write may have
  -- trimmed it).
  if allowed then
    items = redis.call('LRANGE', key, 0, LOG_CHUNK)
    complete, expired, in_window = #items <= LOG_CHUNK, 0, total
  end
  cost = 1
  allowed = cost <= limit - in_window
  remaining = math.max(limit - in_window, 0)
end
if not allowed then
  -- Wait until enough of the oldest entries leave the window.
  local to_free = cost - (limit - in_window)
  local i = expired + 1
  while true do
    local at, c = log_entry(i)
    if not at then
      break
    end
    if c >= to_free then
      retry = math.max(at + period - now, 0)
      break
    end
    to_free = to_free - c
    i = i + 1
  end
end
reset = 0
if newest and newest + period > now then
  reset = newest + period - now
end
else
  error({ err = 'TOLLGATE unknown algorithm code ' .. tostring(code) })
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
    -- Policy i's answer goes to reply slots 6i-5 .. 6i (a monthly period as the longest month).
    local r = 6 * i
    reply[r - 5] = allowed and 1 or 0
    reply[r - 4] = remaining
    reply[r - 3] = reset
    reply[r - 2] = retry
    reply[r - 1] = capacity
    reply[r] = period == 0 and LONGEST_MONTH_US or period
    all_allowed = all_allowed and allowed
  end
  if not (consume or peek) and all_allowed then
    consume = true -- every policy allows: decide them all again, consuming
  else
    if not (consume or peek) then
      -- Some policy rejects: nothing was written, and all read as rejected.
      for i = 1, count do
        reply[6 * i - 5] = 0
      end
    end
    -- As in one_policy_end.lua: six little-endian doubles per policy.
    local packed = {}
    for i = 1, count do
      local r = 6 * i
      packed[i] = struct.pack('<dddddd', reply[r - 5], reply[r - 4], reply[r - 3], reply[r - 2],
        reply[r - 1], reply[r])
    end
    return table.concat(packed)
  end
end

-- One lease operation (script.rs LEASE_SOURCE): the concurrency.lua block, inline.
-- KEYS[1]: the lease set. ARGV: op, lease id, cost, limit, lease in µs; then optionally now in
-- µs (tests inject time; production reads Redis TIME). Returns the block's answer.
local now = tonumber(ARGV[6])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end

-- An integer as text with all its digits (tostring keeps only 14 significant digits).
local function int(x)
  return string.format('%d', x)
end

local key, op, id = KEYS[1], ARGV[1], ARGV[2]
local cost, limit, lease = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local answer
-- Concurrency (crates/tollgate/src/algorithm/concurrency.rs): at most `limit` units leased at
-- once per key; a lease not released expires `lease` after it was granted or renewed.
--
-- A block, pasted by script.rs into lease_single.lua (one operation) and lease_batch.lua (a
-- batch of them): it reads key, op, id, cost, limit, lease, now and sets `answer`.
--
-- key:  a sorted set with one member per leased unit, scored by its lease's expiry (µs): the
--       lease id for a lease's first unit, `<id>#<k>` for its unit k. So the units held are
--       ZCARD, and the units expiring first are the lowest scores.
-- op:   'a' acquire, 'r' release, 'n' renew; id: the lease id; cost: the lease's units.
-- answer: allowed (acquire granted, released lease was held, renewed lease was found),
--       remaining, reset_after_us, retry_after_us, lease_expires_in_us: five little-endian
--       doubles.

-- Every call to Redis is most of what a call costs here, so none is made whose answer is
-- already known.
--
-- Leases whose expiry has come are released: trimmed before anything is counted (an absent
-- set has none to trim).
local held = redis.call('ZCARD', key)
if held > 0 then
  held = held - redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now))
end
-- The lease's members (released by 'r') or, for 'a' and 'n', the ZADD arguments setting each
-- to expire a full lease from now. A table, not a function: a function would be a new closure
-- on every call (see prelude.lua).
local expiry = int(now + lease)
local members = op == 'r' and { id } or { expiry, id }
for k = 2, cost do
  if op == 'r' then
    members[k] = id .. '#' .. k
  else
    members[2 * k - 1], members[2 * k] = expiry, id .. '#' .. k
  end
end

local allowed, retry, expires_in = false, 0, 0
if op == 'a' then
  if cost <= limit - held then
    -- An id granted again (a retried request) keeps its members: ZADD only rescores them, and
    -- counts only the members it added.
    held = held + redis.call('ZADD', key, unpack(members))
    allowed, expires_in = true, lease
  else
    -- Refused: wait until the unit whose expiry frees enough units has expired.
    local rank = held + cost - limit - 1
    local unit = redis.call('ZRANGE', key, rank, rank, 'WITHSCORES')
    retry = math.max(tonumber(unit[2]) - now, 0)
  end
elseif op == 'r' then
  local removed = redis.call('ZREM', key, unpack(members))
  allowed = removed > 0
  held = held - removed
elseif op == 'n' then
  if redis.call('ZSCORE', key, id) then
    redis.call('ZADD', key, 'XX', unpack(members))
    allowed, expires_in = true, lease
  end
else
  error({ err = 'TOLLGATE unknown lease operation ' .. tostring(op) })
end

-- The key lives until its last lease expires (an empty sorted set is deleted by Redis). Only
-- a granted or renewed lease can outlast the key's TTL: a release or a refusal leaves it.
-- With no unit held there is no last lease; when the lease just granted holds every unit, it
-- is the last.
local reset = 0
if held > 0 then
  if op == 'a' and allowed and held == cost then
    reset = lease
  else
    local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
    reset = tonumber(last[2]) - now
  end
  if expires_in > 0 then
    redis.call('PEXPIRE', key, int(math.ceil(reset / 1000) + 1000))
  end
end
answer = struct.pack('<ddddd', allowed and 1 or 0, math.max(limit - held, 0), reset, retry,
  expires_in)
return answer

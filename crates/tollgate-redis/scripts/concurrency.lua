-- Concurrency (crates/tollgate/src/algorithm/concurrency.rs): at most `limit` units leased at
-- once per key; a lease not released expires `lease` after it was granted or renewed.
--
-- KEYS[1]: a sorted set with one member per leased unit, scored by its lease's expiry (µs):
--          the lease id for a lease's first unit, `<id>#<k>` for its unit k. So the units held
--          are ZCARD, and the units expiring first are the lowest scores.
-- ARGV: op ('a' acquire, 'r' release, 'n' renew), lease id, the lease's cost (its units),
--       limit, lease in µs; then optionally now in µs (tests inject time; production reads
--       Redis TIME).
-- Returns allowed (acquire granted, released lease was held, renewed lease was found),
-- remaining, reset_after_us, retry_after_us, lease_expires_in_us: five little-endian doubles.
local key = KEYS[1]
local op, id = ARGV[1], ARGV[2]
local cost, limit, lease = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now = tonumber(ARGV[6])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end

-- An integer as text with all its digits (tostring keeps only 14 significant digits).
local function int(x)
  return string.format('%d', x)
end

-- Leases whose expiry has come are released: trimmed before anything is counted.
redis.call('ZREMRANGEBYSCORE', key, '-inf', int(now))
local held = redis.call('ZCARD', key)
local units = { id }
for k = 2, cost do
  units[k] = id .. '#' .. k
end
-- ZADD arguments setting every unit of the lease to expire a full lease from now.
local function scored()
  local args, expiry = {}, int(now + lease)
  for k = 1, cost do
    args[2 * k - 1], args[2 * k] = expiry, units[k]
  end
  return args
end

local allowed, retry, expires_in = false, 0, 0
if op == 'a' then
  if cost <= limit - held then
    -- An id granted again (a retried request) keeps its members: ZADD only rescores them.
    redis.call('ZADD', key, unpack(scored()))
    held = redis.call('ZCARD', key)
    allowed, expires_in = true, lease
  else
    -- Refused: wait until the unit whose expiry frees enough units has expired.
    local rank = held + cost - limit - 1
    local unit = redis.call('ZRANGE', key, rank, rank, 'WITHSCORES')
    retry = math.max(tonumber(unit[2]) - now, 0)
  end
elseif op == 'r' then
  local removed = redis.call('ZREM', key, unpack(units))
  allowed = removed > 0
  held = held - removed
elseif op == 'n' then
  if redis.call('ZSCORE', key, id) then
    redis.call('ZADD', key, 'XX', unpack(scored()))
    allowed, expires_in = true, lease
  end
else
  error({ err = 'TOLLGATE unknown lease operation ' .. tostring(op) })
end

-- The key lives until its last lease expires (an empty sorted set is deleted by Redis).
local reset = 0
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if last[2] then
  reset = tonumber(last[2]) - now
  redis.call('PEXPIRE', key, int(math.ceil(reset / 1000) + 1000))
end
return struct.pack('<ddddd', allowed and 1 or 0, math.max(limit - held, 0), reset, retry,
  expires_in)

-- A batch of lease operations (batch.rs): each applied in turn, exactly as if it were a call
-- of its own, the batch as a whole atomic.
-- KEYS: one lease set per operation. ARGV: per operation op, lease id, cost, limit, lease in
-- µs; then optionally now in µs. Returns the answers concatenated; only if some operation
-- failed, an array of each answer or that operation's error.
local count = #KEYS
local now = tonumber(ARGV[5 * count + 1])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end

-- An integer as text with all its digits (tostring keeps only 14 significant digits).
local function int(x)
  return string.format('%d', x)
end

local function apply(key, op, id, cost, limit, lease)
  local answer

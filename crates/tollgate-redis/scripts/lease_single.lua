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

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

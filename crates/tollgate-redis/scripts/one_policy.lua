-- One policy: the frame of the per-algorithm scripts.
--
-- KEYS[1]: the policy's key.
-- ARGV: cost, limit, period_us, capacity (burst for token bucket and GCRA, else limit); then,
--       both optional: mode ('c' consume, the default, or 'p' peek) and now in µs (tests
--       inject time; production never does, and Redis TIME is read).
-- Returns allowed (1/0), remaining, reset_after_us, retry_after_us (one_policy_end.lua).
local key = KEYS[1]
local cost, limit, period, capacity =
  tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local consume = ARGV[5] ~= 'p'
local now = tonumber(ARGV[6])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local allowed, remaining, reset, retry, state, ttl_us

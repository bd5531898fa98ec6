-- The dispatcher: one atomic call decides every policy of one identifier.
--
-- KEYS: one key per policy, all of one identifier (one Cluster slot).
-- ARGV: mode ('c' consume, 'p' peek), cost, now in µs or '' for Redis TIME (tests inject
--       time; production never does), then per policy: algorithm code, limit, period_us,
--       capacity (burst for token bucket and GCRA, else limit).
-- Returns 4 integers per policy: allowed (1/0), remaining, reset_after_us, retry_after_us.
--
-- One policy consumes directly. Several are first decided without writing; only if all allow
-- are they decided again consuming (memory.rs Entry::decide). Otherwise nothing is written
-- and every policy reads as a rejection with what is left now.

local ALGORITHMS = { fixed_window, sliding_log, sliding_window, token_bucket, gcra }

local consume = ARGV[1] == 'c'
local cost = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end

-- Decide policy i: allowed, remaining, reset_after_us, retry_after_us.
local function decide(i, consume_it)
  local base = 4 * i
  local algorithm = ALGORITHMS[tonumber(ARGV[base])]
  if not algorithm then
    error({ err = 'TOLLGATE unknown algorithm code ' .. tostring(ARGV[base]) })
  end
  return algorithm(KEYS[i], now, cost, consume_it,
    tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3]))
end

local count = #KEYS
if count == 1 then
  -- The common case: the reply in one constructor (filling a table slot by slot makes Lua
  -- grow it three times).
  local allowed, remaining, reset, retry = decide(1, consume)
  return { allowed and 1 or 0, remaining, reset, retry }
end

-- Several policies: policy i's answer goes to reply slots 4i-3 .. 4i.
local reply = {}
local function decide_into_reply(i, consume_it)
  local allowed, remaining, reset, retry = decide(i, consume_it)
  local base = 4 * i
  reply[base - 3] = allowed and 1 or 0
  reply[base - 2] = remaining
  reply[base - 1] = reset
  reply[base] = retry
  return allowed
end

if not consume then
  for i = 1, count do
    decide_into_reply(i, false)
  end
  return reply
end
local all_allowed = true
for i = 1, count do
  all_allowed = decide_into_reply(i, false) and all_allowed
end
if all_allowed then
  for i = 1, count do
    decide_into_reply(i, true)
  end
else
  for i = 1, count do
    reply[4 * i - 3] = 0
  end
end
return reply

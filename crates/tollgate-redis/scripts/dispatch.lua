-- The dispatcher: one atomic call decides every policy of one identifier.
--
-- KEYS: one key per policy, all of one identifier (one Cluster slot).
-- ARGV: mode ('c' consume, 'p' peek), cost, now in µs or '' for Redis TIME (tests inject
--       time; production never does), then per policy: algorithm code, limit, period_us,
--       capacity (burst for token bucket and GCRA, else limit).
-- Returns 4 integers per policy: allowed (1/0), remaining, reset_after_us, retry_after_us.
--
-- One policy consumes directly. Several: each is decided without writing; only if all allow
-- are the new states written, otherwise nothing is and every decision reads as a rejection
-- with what is left now (memory.rs Entry::decide).

local consume = ARGV[1] == 'c'
local cost = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end

local count = #KEYS
local algorithms, params = {}, {}
for i = 1, count do
  local base = 3 + 4 * (i - 1)
  local algorithm = ALGORITHMS[tonumber(ARGV[base + 1])]
  if not algorithm then
    return redis.error_reply('TOLLGATE unknown algorithm code ' .. tostring(ARGV[base + 1]))
  end
  algorithms[i] = algorithm
  params[i] = { tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4]) }
end

local reply = {}
local function answer(i, allowed, remaining, reset, retry)
  local at = 4 * (i - 1)
  reply[at + 1] = allowed and 1 or 0
  reply[at + 2] = remaining
  reply[at + 3] = reset
  reply[at + 4] = retry
end

if count == 1 then
  local algorithm, p = algorithms[1], params[1]
  local state = algorithm.read(KEYS[1])
  local allowed, remaining, reset, retry, new =
    algorithm.decide(state, now, cost, consume, p[1], p[2], p[3])
  if new then
    algorithm.write(KEYS[1], new, now, p[1], p[2])
  end
  answer(1, allowed, remaining, reset, retry)
  return reply
end

local states, news, all_allowed = {}, {}, true
for i = 1, count do
  local algorithm, p = algorithms[i], params[i]
  states[i] = algorithm.read(KEYS[i])
  local allowed, remaining, reset, retry, new =
    algorithm.decide(states[i], now, cost, consume, p[1], p[2], p[3])
  answer(i, allowed, remaining, reset, retry)
  news[i] = new
  all_allowed = all_allowed and allowed
end
if not consume then
  return reply
end
if all_allowed then
  for i = 1, count do
    algorithms[i].write(KEYS[i], news[i], now, params[i][1], params[i][2])
  end
  return reply
end
-- Rejected as a whole: nothing is consumed; report each policy as it stands now.
for i = 1, count do
  if reply[4 * (i - 1) + 1] == 1 then
    local p = params[i]
    local _, remaining, reset = algorithms[i].decide(states[i], now, cost, false, p[1], p[2], p[3])
    answer(i, false, remaining, reset, 0)
  end
end
return reply

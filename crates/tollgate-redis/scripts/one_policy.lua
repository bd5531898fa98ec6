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

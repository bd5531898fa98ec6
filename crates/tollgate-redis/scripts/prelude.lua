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

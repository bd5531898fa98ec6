-- The key's override, read in the same call that decides (overrides.rs): a hash at `okey`,
-- in the state's slot, whose fields replace limit, period and capacity when it was set for
-- this algorithm (an override set before a reload changed the policy's algorithm does not
-- apply). A cost above the capacity can never pass while it stands: rejected, nothing written,
-- retry after one period (an adjustment's delta is not a cost: it always runs the block). The
-- block below runs only otherwise (its `end` follows it).
-- HGETALL rather than HMGET of the four fields: almost every key has no override, and an empty
-- reply costs Redis less than four nils (bench/HISTORY.md, "The override read").
local overridden = redis.call('HGETALL', okey)
if overridden[1] then
  local field = {}
  for i = 1, #overridden, 2 do
    field[overridden[i]] = overridden[i + 1]
  end
  if field.algorithm == ALGORITHM then
    limit, period, capacity = tonumber(field.limit), tonumber(field.period_us), tonumber(field.burst)
  end
end
if cost > capacity and not adjust then
  -- One period; for a monthly policy (period 0) the longest month (calendar.rs).
  local wait = period
  if wait == 0 then
    wait = LONGEST_MONTH_US
  end
  allowed, remaining, reset, retry = false, 0, wait, wait
else

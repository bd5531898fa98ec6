-- The key's override, read in the same call that decides (overrides.rs): a hash at `okey`,
-- in the state's slot, whose fields replace limit, period and capacity when it was set for
-- this algorithm (an override set before a reload changed the policy's algorithm does not
-- apply). A cost above the capacity can never pass while it stands: rejected, nothing written,
-- retry after one period (an adjustment's delta is not a cost: it always runs the block). The
-- block below runs only otherwise (its `end` follows it).
local overridden = redis.call('HMGET', okey, 'algorithm', 'limit', 'period_us', 'burst')
if overridden[1] == ALGORITHM then
  limit, period, capacity =
    tonumber(overridden[2]), tonumber(overridden[3]), tonumber(overridden[4])
end
if cost > capacity and not adjust then
  -- One period; for a monthly policy (period 0) the longest month (calendar.rs).
  local wait = period
  if wait == 0 then
    wait = 2678400000000
  end
  allowed, remaining, reset, retry = false, 0, wait, wait
else

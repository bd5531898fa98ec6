-- After a block: the new state (or, for the sliding log, only the TTL) of a consuming decision.
if ttl_us then
  local ttl = string.format('%d', math.ceil(ttl_us / 1000) + 1000)
  if state then
    redis.call('SET', key, state, 'PX', ttl)
  else
    redis.call('PEXPIRE', key, ttl)
  end
end

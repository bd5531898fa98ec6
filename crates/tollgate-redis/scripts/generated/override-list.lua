local before = redis.call('PTTL', KEYS[1])
redis.call('ZADD', KEYS[1], 0, ARGV[1])
local ttl = tonumber(ARGV[2])
if ttl == 0 then
  redis.call('PERSIST', KEYS[1])
elseif before == -2 or (before >= 0 and before < ttl) then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
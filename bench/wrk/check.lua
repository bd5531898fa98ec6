-- wrk script: POST /v1/check with {"policy":"api","key":"user-N"}, N cycling over 10,000 keys.
-- The same body and key sequence as ../shared/peers/http-floor/lua/floor.lua, so tollgate serve
-- and the HTTP floor (a fixed answer) see identical requests. Each wrk thread starts at its own
-- offset so threads do not move in lockstep.
--   wrk -t2 -c50 -d5s --latency -s bench/wrk/check.lua http://127.0.0.1:PORT
wrk.method = "POST"
wrk.path = "/v1/check"
wrk.headers["Content-Type"] = "application/json"

local KEYS = 10000
local counter = 0
local threads = 0

function setup(thread)
  thread:set("tid", threads) -- the global `tid` in that thread's Lua state
  threads = threads + 1
end

function init(args)
  counter = (tid or 0) * 5003
end

function request()
  counter = counter + 1
  local body = '{"policy":"api","key":"user-' .. (counter % KEYS) .. '"}'
  return wrk.format(nil, nil, nil, body)
end

-- Non-2xx answers are counted by wrk itself ("Non-2xx or 3xx responses"); bench.sh fails the
-- row when there are any.

-- Sliding log (code 2): exact, the sum of costs admitted in (now - P, now].
-- State: a list [total, at1, cost1, at2, cost2, ...] of integers as text: the sum of the
-- costs, then the admitted requests oldest first, equal timestamps merged (so at most L
-- entries). Entries that left the window are skipped by reads and dropped by the next
-- consuming write. The list is read in chunks, so a decision costs O(1 + entries it must look
-- at), not O(L). (The two helpers below are closures made only when this block runs.)
local LOG_CHUNK = 32 -- list elements fetched per LRANGE (16 entries)
local items = redis.call('LRANGE', key, 0, LOG_CHUNK)
local complete = #items <= LOG_CHUNK

-- Entry i (1-based) of the log as at, cost; nil past the end. Fetches chunks on demand.
local function log_entry(i)
  local index = 2 * i -- position of at_i in items (items[1] is the total)
  while index + 1 > #items and not complete do
    local from = #items
    local more = redis.call('LRANGE', key, from, from + LOG_CHUNK - 1)
    for j = 1, #more do
      items[from + j] = more[j]
    end
    complete = #more < LOG_CHUNK
  end
  local at = items[index]
  if not at then
    return nil
  end
  return tonumber(at), tonumber(items[index + 1])
end

-- An integer as text with all its digits: tostring keeps only 14 significant digits, and '%d'
-- (a C long here) is exact below 2^53.
local function int(x)
  return string.format('%d', x)
end

local total = 0
if #items > 0 then
  total = tonumber(items[1])
  if not total or #items % 2 == 0 then
    error({ err = MALFORMED .. key })
  end
end
-- Entries at or before now - P have left the window: skip them.
local expired, expired_cost = 0, 0
while true do
  local at, c = log_entry(expired + 1)
  if not at or at + period > now then
    break
  end
  expired = expired + 1
  expired_cost = expired_cost + c
end
local in_window = total - expired_cost
if adjust then
  -- SlidingLog::charge: a charge is admitted as a request of that cost, up to twice the
  -- limit (the caller refuses refunds; one here charges nothing).
  cost = math.min(cost, 2 * limit - in_window)
  allowed = cost > 0
else
  -- Differences, not sums: in_window + cost could pass 2^53.
  allowed = cost <= limit - in_window
end
remaining, retry = math.max(limit - in_window, 0), 0
-- The newest entry (nil for an empty log).
local newest, newest_cost
if complete then
  if #items >= 3 then
    newest, newest_cost = tonumber(items[#items - 1]), tonumber(items[#items])
  end
else
  local tail = redis.call('LRANGE', key, -2, -1)
  newest, newest_cost = tonumber(tail[1]), tonumber(tail[2])
end

if allowed and (consume or adjust) then
  total = in_window + cost
  remaining = math.max(limit - total, 0)
  if #items == 0 then
    redis.call('RPUSH', key, int(total), int(now), int(cost))
    newest = now
  else
    if newest and newest >= now then
      -- Same instant (or a clock that stepped back): add to the newest entry.
      redis.call('LSET', key, -1, int(newest_cost + cost))
    else
      redis.call('RPUSH', key, int(now), int(cost))
      newest = now
    end
    if expired > 0 then
      -- Drop the old total and the expired entries, then put the new total in front.
      redis.call('LTRIM', key, 2 * expired + 1, -1)
      redis.call('LPUSH', key, int(total))
    else
      redis.call('LSET', key, 0, int(total))
    end
  end
  -- Spent once the newest entry has left the window.
  ttl_us = newest + period - now
end
if adjust then
  -- Then a peek of one unit, on the log as now written (read afresh: a write may have
  -- trimmed it).
  if allowed then
    items = redis.call('LRANGE', key, 0, LOG_CHUNK)
    complete, expired, in_window = #items <= LOG_CHUNK, 0, total
  end
  cost = 1
  allowed = cost <= limit - in_window
  remaining = math.max(limit - in_window, 0)
end
if not allowed then
  -- Wait until enough of the oldest entries leave the window.
  local to_free = cost - (limit - in_window)
  local i = expired + 1
  while true do
    local at, c = log_entry(i)
    if not at then
      break
    end
    if c >= to_free then
      retry = math.max(at + period - now, 0)
      break
    end
    to_free = to_free - c
    i = i + 1
  end
end
reset = 0
if newest and newest + period > now then
  reset = newest + period - now
end

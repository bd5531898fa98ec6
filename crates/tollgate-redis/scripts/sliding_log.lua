-- Sliding log (code 2): exact, the sum of costs admitted in (now - P, now].
-- State: a list [total, at1, cost1, at2, cost2, ...]: the sum of the costs, then the admitted
-- requests oldest first, equal timestamps merged (so at most L entries). Entries that left the
-- window are dropped by the next consuming write; reads skip them. The list is read in chunks,
-- so a decision costs O(1 + entries it must look at), not O(L).

local LOG_CHUNK = 32 -- list elements fetched per LRANGE (16 entries)

-- Entry i (1-based) of the log as at, cost; nil past the end. Fetches chunks on demand.
local function log_entry(s, i)
  local index = 2 * i -- 1-based position of at_i in s.items (items[1] is the total)
  while index + 1 > #s.items and not s.complete do
    local from = #s.items
    local more = redis.call('LRANGE', s.key, from, from + LOG_CHUNK - 1)
    for j = 1, #more do
      s.items[from + j] = more[j]
    end
    s.complete = #more < LOG_CHUNK
  end
  local at = s.items[index]
  if not at then
    return nil
  end
  return tonumber(at), tonumber(s.items[index + 1])
end

-- The newest entry as at, cost; nil for an empty log.
local function log_last(s)
  if s.complete then
    local n = #s.items
    if n < 3 then
      return nil
    end
    return tonumber(s.items[n - 1]), tonumber(s.items[n])
  end
  local tail = redis.call('LRANGE', s.key, -2, -1)
  return tonumber(tail[1]), tonumber(tail[2])
end

ALGORITHMS[2] = {
  read = function(key)
    local items = redis.call('LRANGE', key, 0, LOG_CHUNK)
    local total = 0
    if #items > 0 then
      total = tonumber(items[1])
      if not total or #items % 2 == 0 then
        malformed(key)
      end
    end
    return { key = key, items = items, complete = #items <= LOG_CHUNK, total = total }
  end,

  decide = function(s, now, cost, consume, limit, period)
    -- Entries at or before now - P have left the window: skip them.
    local expired, expired_cost = 0, 0
    while true do
      local at, c = log_entry(s, expired + 1)
      if not at or at + period > now then
        break
      end
      expired = expired + 1
      expired_cost = expired_cost + c
    end
    local in_window = s.total - expired_cost
    local allowed = in_window + cost <= limit
    local remaining, retry, new = max(limit - in_window, 0), 0, nil
    local last_at, last_cost = log_last(s)
    local newest = last_at

    if allowed and consume then
      new = { absent = #s.items == 0, expired = expired, total = in_window + cost, cost = cost }
      if last_at and last_at >= now then
        -- Same instant (or a clock that stepped back): add to the newest entry.
        new.merge = last_cost + cost
      else
        newest = now
      end
      new.newest = newest
      remaining = max(limit - new.total, 0)
    elseif not allowed then
      -- Wait until enough of the oldest entries leave the window.
      local to_free = in_window + cost - limit
      local i = expired + 1
      while true do
        local at, c = log_entry(s, i)
        if not at then
          break
        end
        if c >= to_free then
          retry = max(at + period - now, 0)
          break
        end
        to_free = to_free - c
        i = i + 1
      end
    end
    local reset = 0
    if newest and newest + period > now then
      reset = newest + period - now
    end
    return allowed, remaining, reset, retry, new
  end,

  write = function(key, new, now, limit, period)
    if new.absent then
      redis.call('RPUSH', key, int(new.total), int(now), int(new.cost))
    else
      if new.merge then
        redis.call('LSET', key, -1, int(new.merge))
      else
        redis.call('RPUSH', key, int(now), int(new.cost))
      end
      if new.expired > 0 then
        -- Drop the total and the expired entries, then put the new total in front.
        redis.call('LTRIM', key, 2 * new.expired + 1, -1)
        redis.call('LPUSH', key, int(new.total))
      else
        redis.call('LSET', key, 0, int(new.total))
      end
    end
    -- Spent once the newest entry has left the window.
    redis.call('PEXPIRE', key, ttl_ms(new.newest + period - now))
  end,
}

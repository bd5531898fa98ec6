    -- Policy i's answer goes to reply slots 6i-5 .. 6i (a monthly period as the longest month).
    local r = 6 * i
    reply[r - 5] = allowed and 1 or 0
    reply[r - 4] = remaining
    reply[r - 3] = reset
    reply[r - 2] = retry
    reply[r - 1] = capacity
    reply[r] = period == 0 and LONGEST_MONTH_US or period
    all_allowed = all_allowed and allowed
  end
  if not (consume or peek) and all_allowed then
    consume = true -- every policy allows: decide them all again, consuming
  else
    if not (consume or peek) then
      -- Some policy rejects: nothing was written, and all read as rejected.
      for i = 1, count do
        reply[6 * i - 5] = 0
      end
    end
    -- As in one_policy_end.lua: six little-endian doubles per policy.
    local packed = {}
    for i = 1, count do
      local r = 6 * i
      packed[i] = struct.pack('<dddddd', reply[r - 5], reply[r - 4], reply[r - 3], reply[r - 2],
        reply[r - 1], reply[r])
    end
    return table.concat(packed)
  end
end

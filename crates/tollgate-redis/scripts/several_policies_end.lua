    -- Policy i's answer goes to reply slots 5i-4 .. 5i.
    local r = 5 * i
    reply[r - 4] = allowed and 1 or 0
    reply[r - 3] = remaining
    reply[r - 2] = reset
    reply[r - 1] = retry
    reply[r] = capacity
    all_allowed = all_allowed and allowed
  end
  if not (consume or peek) and all_allowed then
    consume = true -- every policy allows: decide them all again, consuming
  else
    if not (consume or peek) then
      -- Some policy rejects: nothing was written, and all read as rejected.
      for i = 1, count do
        reply[5 * i - 4] = 0
      end
    end
    -- As in one_policy_end.lua: five little-endian doubles per policy.
    local packed = {}
    for i = 1, count do
      local r = 5 * i
      packed[i] = struct.pack('<ddddd', reply[r - 4], reply[r - 3], reply[r - 2], reply[r - 1],
        reply[r])
    end
    return table.concat(packed)
  end
end

    -- Policy i's answer goes to reply slots 4i-3 .. 4i (base = 4i - 2).
    reply[base - 1] = allowed and 1 or 0
    reply[base] = remaining
    reply[base + 1] = reset
    reply[base + 2] = retry
    all_allowed = all_allowed and allowed
  end
  if not (consume or peek) and all_allowed then
    consume = true -- every policy allows: decide them all again, consuming
  else
    if not (consume or peek) then
      -- Some policy rejects: nothing was written, and all read as rejected.
      for i = 1, count do
        reply[4 * i - 3] = 0
      end
    end
    -- As in one_policy_end.lua: four little-endian doubles per policy.
    local packed = {}
    for i = 1, count do
      local b = 4 * i
      packed[i] = struct.pack('<dddd', reply[b - 3], reply[b - 2], reply[b - 1], reply[b])
    end
    return table.concat(packed)
  end
end

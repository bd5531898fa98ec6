    -- Policy i's answer goes to reply slots 4i-3 .. 4i (base = 4i - 2).
    reply[base - 1] = allowed and 1 or 0
    reply[base] = remaining
    reply[base + 1] = reset
    reply[base + 2] = retry
    all_allowed = all_allowed and allowed
  end
  if consume or peek then
    return reply
  end
  if not all_allowed then
    -- Some policy rejects: nothing was written, and all read as rejected.
    for i = 1, count do
      reply[4 * i - 3] = 0
    end
    return reply
  end
  consume = true
end

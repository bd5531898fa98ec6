  return struct.pack('<dddddd', allowed and 1 or 0, remaining, reset, retry, capacity,
    period == 0 and LONGEST_MONTH_US or period)
end

-- A check that fails has written nothing (every block reads, and fails, before it
-- writes) and fails alone; the others stand, as they would have as calls of their own.
-- Checks of one policy repeat its arguments: equal strings are one interned string in Lua, so
-- comparing them is a pointer comparison, and each is parsed (strtod: about 1k instructions)
-- only when it differs from the check before.
local answers, failed = {}, false
local texts, numbers = {}, {}
for i = 1, count do
  local b = 4 * i - 4
  for j = 1, 4 do
    local text = ARGV[b + j]
    if text ~= texts[j] then
      texts[j], numbers[j] = text, tonumber(text)
    end
  end
  local ok, answer = pcall(decide, KEYS[2 * i - 1], KEYS[2 * i], numbers[1], numbers[2], numbers[3], numbers[4])
  if ok then
    answers[i] = answer
  else
    failed = true
    answers[i] = { err = type(answer) == 'table' and answer.err or tostring(answer) }
  end
end
if failed then
  return answers
end
return table.concat(answers)

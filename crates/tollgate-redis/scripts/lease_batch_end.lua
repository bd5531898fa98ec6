  return answer
end

local answers, failed = {}, false
for i = 1, count do
  local b = 5 * i - 5
  local ok, answer = pcall(apply, KEYS[i], ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3]),
    tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5]))
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

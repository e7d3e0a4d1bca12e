-- Add fetched items: 5 dedupe (0/1), 6.. (fingerprint, entry) pairs.
return upserted(function(created)
  local dedupe = ARGV[5] == '1'
  local n = 0
  for i = 6, #ARGV, 2 do
    if redis.call('SADD', FP, ARGV[i]) == 1 or not dedupe then
      redis.call('RPUSH', F, ARGV[i + 1])
      n = n + 1
    end
  end
  if #ARGV >= 6 then st.fx = true end
  return finish(created, n)
end)

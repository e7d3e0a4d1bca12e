-- Delete messages by id: 5.. the ids. Answers how many were removed.
return edit(function()
  local result = 0
  for i = 5, #ARGV do
    local pos, rec = find_message(ARGV[i])
    if pos then
      redis.call('LSET', M, pos, DELETED)
      redis.call('HDEL', IDS, ARGV[i])
      st.mc, st.tc = st.mc - 1, st.tc - (tonumber(rec.token_count) or 0)
      result = result + 1
    end
  end
  if result > 0 then redis.call('LREM', M, 0, DELETED) end
  return result
end)

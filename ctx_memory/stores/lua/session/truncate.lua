-- Drop the messages after one (5 its id; 6 inclusive: it too, 0/1). Answers how many
-- went, or -1 when the session or the message is not there.
return edit(function()
  local pos = find_message(ARGV[5])
  if not pos then return -1 end
  local cut = pos + 1
  if ARGV[6] == '1' then cut = pos end
  local gone = redis.call('LRANGE', M, cut, -1)
  for _, raw in ipairs(gone) do
    local rec = decode_message(raw)
    if rec then
      if type(rec.id) == 'string' then redis.call('HDEL', IDS, rec.id) end
      st.tc = st.tc - (tonumber(rec.token_count) or 0)
    end
  end
  if cut == 0 then redis.call('DEL', M) else redis.call('LTRIM', M, 0, cut - 1) end
  st.mc = st.mc - #gone
  return #gone
end)

-- Replace one message: 5 its id, 6 the new tokens, 7 the new message. Answers 1, or -1
-- when the session or the message is not there.
return edit(function()
  local pos, rec = find_message(ARGV[5])
  if not pos then return -1 end
  redis.call('LSET', M, pos, ARGV[7])
  st.tc = st.tc + tonumber(ARGV[6]) - (tonumber(rec.token_count) or 0)
  return 1
end)

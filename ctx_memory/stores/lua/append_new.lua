-- Included where session.lua (from ARGV[5]) and append.lua (from ARGV[2]) say
-- "-- @include append_new.lua" with the first ARGV of the triples, which replaces the
-- placeholder below. Appends the (id, tokens, message) triples whose id the session does
-- not hold yet; needs IDS, M and token. A message whose id was stored by this very write
-- token (a retry of a write that landed) counts as added ("again") without being pushed twice.
local n, again, tokens, batch, mine = 0, 0, 0, {}, {}
for i = FIRST, #ARGV, 3 do
  if redis.call('HSETNX', IDS, ARGV[i], token) == 1 then
    mine[ARGV[i]] = true
    n = n + 1
    tokens = tokens + tonumber(ARGV[i + 1])
    batch[#batch + 1] = ARGV[i + 2]
    if #batch == 4000 then
      redis.call('RPUSH', M, unpack(batch))
      batch = {}
    end
  elseif not mine[ARGV[i]] and redis.call('HGET', IDS, ARGV[i]) == token then
    mine[ARGV[i]] = true
    again = again + 1
  end
end
if #batch > 0 then redis.call('RPUSH', M, unpack(batch)) end

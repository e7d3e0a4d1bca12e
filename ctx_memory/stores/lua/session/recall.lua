-- Save recall-index segments (derived data, read back by a plain LRANGE of R): 5 replace
-- (0/1), 6.. the segments; the client sends no index keys and ttl = maxs = 0. Answers 0,
-- writing nothing, when the session does not exist. Not an access and not a write of
-- the session: no TTL refresh, no touch, no counters. R takes the session's remaining
-- TTL (none if it has none), so it may expire before the hash (whose TTL slides on later
-- writes; the segments are rebuilt). Every edit of the history deletes R.
local a = seen_token()
if a then return 1 end
if redis.call('EXISTS', H) == 0 then return 0 end
if ARGV[5] == '1' then redis.call('DEL', R) end
if #ARGV < 6 then return 1 end  -- nothing pushed: a retry changes nothing either
for i = 6, #ARGV, 4000 do
  redis.call('RPUSH', R, unpack(ARGV, i, math.min(i + 3999, #ARGV)))
end
local pttl = redis.call('PTTL', H)
if pttl > 0 then redis.call('PEXPIRE', R, pttl) else redis.call('PERSIST', R) end
keep_token(1, 0, false)  -- the token hashes take the session's expiry, as R does
return 1

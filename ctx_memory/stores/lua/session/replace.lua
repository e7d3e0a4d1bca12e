-- Replace the whole session (an import): 5 sp, 6 md, 7 sh, 8 mc, 9 tc, 10 the number of
-- messages n, 11.. n (id, tokens, message) triples, then (fingerprint, entry) pairs.
-- init 'absent': only if the session does not exist (else nothing is written).
local a, c = seen_token()
if a then return {c, a, {}, {}} end
local existed = redis.call('EXISTS', H)
if init == 'absent' and existed == 1 then return {0, 0, {}, {}} end
redis.call('DEL', H, M, F, FP, IDS, R)
redis.call('HSET', H, 'id', sid, 'sp', ARGV[5], 'md', ARGV[6], 'sh', ARGV[7])
st.mc, st.tc = tonumber(ARGV[8]), tonumber(ARGV[9])
local n = tonumber(ARGV[10])
local last = 10 + 3 * n
local added = 0
for i = 11, last, 3 do
  if redis.call('HSETNX', IDS, ARGV[i], token) == 1 then
    redis.call('RPUSH', M, ARGV[i + 2])
    added = added + 1
  end
end
for j = last + 1, #ARGV, 2 do
  redis.call('SADD', FP, ARGV[j])
  redis.call('RPUSH', F, ARGV[j + 1])
end
st.fx = #ARGV > last
return finish(1 - existed, added)

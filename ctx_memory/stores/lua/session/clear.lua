-- Clear the history (5: keep the fetched items, 0/1) of a live session; answers 0 when
-- it is missing.
local a = seen_token()
if a then return 1 end
if redis.call('EXISTS', H) == 0 then return 0 end
redis.call('DEL', M, IDS, R)
local fx = '0'
if ARGV[5] == '1' then
  fx = redis.call('HGET', H, 'fx') or '0'
else
  redis.call('DEL', F, FP)
end
redis.call('HSET', H, 'mc', 0, 'tc', 0, 'ts', now, 'fx', fx)
redis.call('HDEL', H, 'ev')
keep_token(0, 0, true)
refresh(fx == '1')
if IDX and maxs > 0 then index_touch(IDX, LEX, member, true) end
return 1

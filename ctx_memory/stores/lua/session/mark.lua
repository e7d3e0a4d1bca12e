-- Eviction on a cluster, where the index is in another slot: a victim the index chose
-- (index/write.lua) is marked with the eviction's token before the index drops it; every
-- write of the session removes the mark ('ev'), and evict.lua deletes only a session still
-- marked, so a write that lands during the eviction keeps its session. Answers whether
-- the session exists.
if redis.call('EXISTS', H) == 0 then return 0 end
redis.call('HSET', H, 'ev', token)
return 1

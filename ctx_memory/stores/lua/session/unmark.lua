-- A write that found its session dropped from the LRU index after its first touch (an
-- eviction chose it meanwhile, see mark.lua) takes it back: the mark goes, so evict.lua
-- keeps it. Answers whether the session exists (0: the eviction deleted it already).
if redis.call('EXISTS', H) == 0 then return 0 end
redis.call('HDEL', H, 'ev')
return 1

-- Eviction on a cluster, last step (see mark.lua): delete the victim if still marked.
-- Answers 1 (deleted), 0 (written since its mark: kept), -1 (gone already).
local r = redis.call('HMGET', H, 'id', 'ev')
if not r[1] then return -1 end
if r[2] ~= token then return 0 end
redis.call('DEL', H, M, F, FP, IDS, W, WO, R)
return 1

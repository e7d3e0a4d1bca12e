-- Eviction on a cluster, last step (see mark.lua): delete the victim if still marked.
-- Answers 1 (deleted), 0 (written since its mark: kept), -1 (gone already). Any
-- eviction's mark counts: only the eviction whose forget_stale.lua removed the victim from
-- the index gets here, and a mark still set means no write since the latest one (a write
-- removes it; a write whose first touch came before the choice takes the session back
-- with unmark.lua), so two evictions choosing one victim do not let it escape both.
local r = redis.call('HMGET', H, 'id', 'ev')
if not r[1] then return -1 end
if not r[2] then return 0 end
redis.call('DEL', H, M, F, FP, IDS, W, WO, R)
return 1

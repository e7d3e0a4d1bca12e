-- Delete the session and its index entry (on a single server); answers 1 if it existed,
-- 0 if not, -1 if only its index entry was left: it had expired (the caller reports it).
local existed = redis.call('DEL', H)
redis.call('DEL', M, F, FP, IDS, W, WO, R)
if IDX and index_remove(IDX, LEX, member) == 1 and existed == 0 then return -1 end
return existed

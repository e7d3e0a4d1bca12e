-- Delete the session and its index entry (on a single server); answers whether it existed.
local existed = redis.call('DEL', H)
redis.call('DEL', M, F, FP, IDS, W, WO, R)
if IDX then index_remove(IDX, LEX, member) end
return existed

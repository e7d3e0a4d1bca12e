-- 1.. (member, score) pairs read by a listing that found the session gone, or chosen
-- for eviction on a cluster: remove each only if its score is unchanged (nobody touched
-- it since); answer those removed, so exactly one of several concurrent listings reports
-- each expiry, and one of several evictions takes each victim.
local removed = {}
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', IDX, ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    index_remove(IDX, LEX, ARGV[i])
    table.insert(removed, ARGV[i])
  end
end
return removed

-- 1 member, 2 max sessions, 3 created (0/1), 4 existing only (0/1). Touches the member;
-- for a created session over max sessions, answers the least recently used others as
-- (member, score) pairs, still indexed: the client marks each in its own slot, then
-- removes those whose score is unchanged (forget_stale.lua), then deletes each that no
-- write has unmarked since (RedisOperations._cluster_evict).
local member, maxs = ARGV[1], tonumber(ARGV[2])
local chosen = {}
if ARGV[3] == '1' or maxs > 0 then
  index_touch(IDX, LEX, member, ARGV[4] == '1')
  local over = redis.call('ZCARD', IDX) - maxs
  if ARGV[3] == '1' and maxs > 0 and over > 0 then
    local lru = redis.call('ZRANGE', IDX, 0, over, 'WITHSCORES')
    for i = 1, #lru, 2 do
      if lru[i] ~= member and #chosen < 2 * over then
        table.insert(chosen, lru[i])
        table.insert(chosen, lru[i + 1])
      end
    end
  end
end
return chosen

-- 1 member, 2 max sessions, 3 created (0/1), 4 existing only (0/1), 5 answer whether
-- the member was missing (0/1, optional). Touches the member; for a created session over
-- max sessions, answers the least recently used others as (member, score) pairs, still
-- indexed: the client marks each in its own slot, then removes those whose score is
-- unchanged (forget_stale.lua), then deletes each that no write has unmarked since
-- (RedisOperations._cluster_evict).
-- With 5 = 1 the answer starts with 1 if the member was missing. After a write: an
-- eviction dropped it since the write's first touch, and the client takes the session
-- back. On a write's first touch: it was not indexed, so if the write creates the session
-- it had not expired unreported (RedisOperations._cluster_settled).
local member, maxs = ARGV[1], tonumber(ARGV[2])
local chosen = {}
local missing = 0
if ARGV[3] == '1' or maxs > 0 then
  if index_touch(IDX, LEX, member, ARGV[4] == '1') then missing = 1 end
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
if ARGV[5] == '1' then table.insert(chosen, 1, missing) end
return chosen

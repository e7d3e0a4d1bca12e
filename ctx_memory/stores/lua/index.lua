-- INDEX_SCRIPT: the session index alone (Redis Cluster, gc, list); common.lua comes first.
-- A read's touch is TOUCH_SCRIPT (touch.lua).

local IDX, LEX, LEXV = KEYS[1], KEYS[2], KEYS[3]
local op = ARGV[1]

if op == 'write' then
  -- 2 member, 3 max sessions, 4 created (0/1), 5 existing only (0/1). Touches the member;
  -- for a created session over max sessions, answers the least recently used others as
  -- (member, score) pairs, still indexed: the client marks each in its own slot, then
  -- removes those whose score is unchanged ('forget_stale'), then deletes each that no
  -- write has unmarked since (RedisOperations._cluster_evict).
  local maxs = tonumber(ARGV[3])
  local chosen = {}
  if ARGV[4] == '1' or maxs > 0 then
    index_touch(IDX, LEX, ARGV[2], ARGV[5] == '1')
    local over = redis.call('ZCARD', IDX) - maxs
    if ARGV[4] == '1' and maxs > 0 and over > 0 then
      local lru = redis.call('ZRANGE', IDX, 0, over, 'WITHSCORES')
      for i = 1, #lru, 2 do
        if lru[i] ~= ARGV[2] and #chosen < 2 * over then
          table.insert(chosen, lru[i])
          table.insert(chosen, lru[i + 1])
        end
      end
    end
  end
  return chosen

elseif op == 'members' then
  return redis.call('ZRANGE', IDX, 0, -1, 'WITHSCORES')

elseif op == 'forget' then
  for i = 2, #ARGV do index_remove(IDX, LEX, ARGV[i]) end
  return 1

elseif op == 'page' then
  -- 2 min, 3 max (ZRANGEBYLEX bounds), 4 count: up to count ids in id order, each with
  -- its index member's score (to drop it safely if its session is gone). LEX is built
  -- from IDX once (LEXV marks it built), for sessions indexed before LEX existed.
  if redis.call('EXISTS', LEXV) == 0 then
    local members = redis.call('ZRANGE', IDX, 0, -1)
    for _, m in ipairs(members) do redis.call('ZADD', LEX, 0, string.sub(m, TAGLEN + 1)) end
    redis.call('SET', LEXV, '1')
  end
  return redis.call('ZRANGEBYLEX', LEX, ARGV[2], ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))

elseif op == 'forget_stale' then
  -- 2.. (member, score) pairs read by a listing that found the session gone, or chosen
  -- for eviction on a cluster: remove each only if its score is unchanged (nobody touched
  -- it since); answer those removed, so exactly one of several concurrent listings reports
  -- each expiry, and one of several evictions takes each victim.
  local removed = {}
  for i = 2, #ARGV, 2 do
    local score = redis.call('ZSCORE', IDX, ARGV[i])
    if score and tonumber(score) == tonumber(ARGV[i + 1]) then
      index_remove(IDX, LEX, ARGV[i])
      table.insert(removed, ARGV[i])
    end
  end
  return removed
end
return redis.error_reply('ctx_memory: unknown index operation ' .. tostring(op))

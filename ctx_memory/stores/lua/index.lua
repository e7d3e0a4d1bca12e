-- INDEX_SCRIPT: the session index alone (Redis Cluster, gc, list); common.lua comes first.
-- A read's touch is TOUCH_SCRIPT (touch.lua).

local IDX, LEX, LEXV = KEYS[1], KEYS[2], KEYS[3]
local op = ARGV[1]

if op == 'write' then
  -- 2 member, 3 max sessions, 4 created (0/1), 5 existing only (0/1)
  local maxs = tonumber(ARGV[3])
  local expired, evicted = {}, {}
  if ARGV[4] == '1' or maxs > 0 then
    index_touch(IDX, LEX, ARGV[2], ARGV[5] == '1')
    if ARGV[4] == '1' and maxs > 0 then
      index_evict(IDX, LEX, maxs, ARGV[2], nil, evicted, expired)
    end
  end
  return {expired, evicted}

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
  -- 2.. (member, score) pairs read by a listing that found the session gone: remove each
  -- only if its score is unchanged (nobody re-created it since); answer those removed, so
  -- exactly one of several concurrent listings reports each expiry.
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

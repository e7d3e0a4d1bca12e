-- 1 min, 2 max (ZRANGEBYLEX bounds), 3 count: up to count ids in id order. LEX is built
-- from IDX once (LEXV marks it built), for sessions indexed before LEX existed.
if redis.call('EXISTS', LEXV) == 0 then
  local members = redis.call('ZRANGE', IDX, 0, -1)
  for _, m in ipairs(members) do redis.call('ZADD', LEX, 0, string.sub(m, TAGLEN + 1)) end
  redis.call('SET', LEXV, '1')
end
return redis.call('ZRANGEBYLEX', LEX, ARGV[1], ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))

-- Merge into the shared state: 5 'deep' or 'shallow', 6 the partial object, 7 the size
-- limit of shared in bytes. The partial is parsed before anything is written.
local partial = parse(ARGV[6])
return upserted(function(created)
  local shared = parse(redis.call('HGET', H, 'sh'))
  merge(shared, partial, ARGV[5] == 'deep')
  local text = dump(shared)
  -- 7: the size limit of shared in bytes. Nothing of an existing session has changed yet;
  -- a session this call created (upsert wrote only its hash: no index, no eviction yet)
  -- is removed again, so a refused write leaves no trace.
  if #text > tonumber(ARGV[7]) then
    if created == 1 then redis.call('DEL', H) end
    return 'too_large:' .. #text
  end
  redis.call('HSET', H, 'sh', text)
  return finish(created, 0)
end)

-- Update the header: 5 metadata to merge ('' none), 6 set the system prompt (0/1), 7 it.
local partial = nil
if ARGV[5] ~= '' then partial = parse(ARGV[5]) end
return upserted(function(created)
  if partial then
    local meta = parse(redis.call('HGET', H, 'md'))
    merge(meta, partial, false)
    redis.call('HSET', H, 'md', dump(meta))
  end
  if ARGV[6] == '1' then redis.call('HSET', H, 'sp', ARGV[7]) end
  return finish(created, 0)
end)

-- Append the (id, tokens, message) triples from ARGV[5] whose id is new, creating the
-- session if it is missing (APPEND_SCRIPT, append.lua, serves sessions the client knows).
return upserted(function(created)
  local n, again = append_new()
  if n == 0 and created == 0 then  -- every id known: a no-op
    if again > 0 and redis.call('HGET', H, 'ct') == token then created = 1 end
    return {created, again, {}, {}}
  end
  if created == 1 then redis.call('HSET', H, 'ct', token) end
  return finish(created, n + again)
end)

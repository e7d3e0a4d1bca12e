-- TOUCH_SCRIPT: the LRU touch of a read. The read itself (LRANGE, LLEN, HMGET) is a plain
-- command sent in the same round trip: its reply never passes through Lua, which costs
-- more than the commands (every element becomes a Lua string and back).
-- KEYS: IDX [, H]: H (the session's hash) on a single server; on Redis Cluster it is in
--       another slot, and the client touches only after its read found the session.
-- ARGV: 1 the index member (tag + id).
-- A session is touched only if it exists (H, when given) and is indexed (ZADD XX): a read
-- never puts a deleted or evicted session back in the index, nor lifts a session that
-- expired (whose member waits for gc) above live ones. One already the most recent is left
-- as it is. Answers 0.
local IDX, member = KEYS[1], ARGV[1]
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
local top = redis.call('ZRANGE', IDX, -1, -1, 'WITHSCORES')
if top[1] ~= member then
  redis.call('ZADD', IDX, 'XX', (tonumber(top[2]) or 0) + 1, member)
end
return 0

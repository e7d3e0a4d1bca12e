-- Read the whole document, one snapshot (the header, the history and the fetched items
-- agree). The other reads (history, count, header, fetched items) are plain commands
-- sent with TOUCH_SCRIPT (touch.lua).
local h = redis.call('HMGET', H, 'id', 'sp', 'md', 'sh', 'mc', 'tc', 'ts')
if not h[1] then return false end
read_touch()
return {h, redis.call('LRANGE', M, 0, -1), redis.call('LRANGE', F, 0, -1)}

-- Whether the session exists (a read: it touches the index).
local e = redis.call('EXISTS', H)
if e == 1 then read_touch() end
return e

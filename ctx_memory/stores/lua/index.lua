-- What every operation on the session index shares (Redis Cluster, gc, list): each script
-- lua/index/<operation>.lua follows this text (and common.lua before it). A read's touch
-- is TOUCH_SCRIPT (touch.lua).

local IDX, LEX, LEXV = KEYS[1], KEYS[2], KEYS[3]

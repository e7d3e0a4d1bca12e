-- Helpers shared by session.lua and index.lua (prepended to both, after the line
-- "local TOKEN_WINDOW = <seconds>" that ctx_memory/stores/_redis_lua.py writes).

local TAGLEN = 64
local SUFFIXES = {'h', 'm', 'f', 'fp', 'ids', 'w', 'wo', 'r'}

local function skip_ws(s, i)
  return string.find(s, '[^ \t\r\n]', i) or (#s + 1)
end

local function str_end(s, i)
  local j = i + 1
  while true do
    local k = string.find(s, '["\\]', j)
    if not k then error('ctx_memory: malformed JSON string') end
    if string.sub(s, k, k) == '"' then return k end
    j = k + 2
  end
end

local function value_end(s, i)
  local c = string.sub(s, i, i)
  if c == '"' then return str_end(s, i) end
  if c == '{' or c == '[' then
    local depth, j = 0, i
    while true do
      local k = string.find(s, '[%[%]{}"]', j)
      if not k then error('ctx_memory: malformed JSON value') end
      local d = string.sub(s, k, k)
      if d == '"' then
        j = str_end(s, k) + 1
      else
        if d == '{' or d == '[' then depth = depth + 1 else depth = depth - 1 end
        if depth == 0 then return k end
        j = k + 1
      end
    end
  end
  local k = string.find(s, '[,}%] \t\r\n]', i)
  return (k or (#s + 1)) - 1
end

-- An object becomes {keys = {raw key text...}, vals = {raw key -> node}}; anything else
-- stays the exact text it was.
local function parse_obj(s, i)
  local node = {keys = {}, vals = {}}
  i = skip_ws(s, i + 1)
  if string.sub(s, i, i) == '}' then return node, i + 1 end
  while true do
    if string.sub(s, i, i) ~= '"' then error('ctx_memory: malformed JSON object') end
    local ke = str_end(s, i)
    local key = string.sub(s, i, ke)
    i = skip_ws(s, ke + 1)
    i = skip_ws(s, i + 1)
    local val
    if string.sub(s, i, i) == '{' then
      val, i = parse_obj(s, i)
    else
      local ve = value_end(s, i)
      val = string.sub(s, i, ve)
      i = ve + 1
    end
    if node.vals[key] == nil then table.insert(node.keys, key) end
    node.vals[key] = val
    i = skip_ws(s, i)
    if string.sub(s, i, i) == '}' then return node, i + 1 end
    i = skip_ws(s, i + 1)
  end
end

local function parse(s)
  local i = skip_ws(s, 1)
  if string.sub(s, i, i) ~= '{' then error('ctx_memory: expected a JSON object') end
  local node = parse_obj(s, i)
  return node
end

local function dump(node)
  if type(node) == 'string' then return node end
  local parts = {}
  for n, k in ipairs(node.keys) do parts[n] = k .. ':' .. dump(node.vals[k]) end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- deep: dicts merge key by key, anything else replaces; shallow: every key replaces.
local function merge(target, partial, deep)
  for _, k in ipairs(partial.keys) do
    local pv, cv = partial.vals[k], target.vals[k]
    if deep and type(pv) == 'table' and type(cv) == 'table' then
      merge(cv, pv, true)
    else
      if cv == nil then table.insert(target.keys, k) end
      target.vals[k] = pv
    end
  end
end

-- Index: IDX scores members (tag + id) by a logical access clock (the highest score + 1),
-- so the LRU order is exact even within one millisecond. LEX holds the same sessions by id
-- alone, all scored 0, so ZRANGEBYLEX pages through them in id order. The touch of an
-- existing session on top already (the most recent) leaves it as it is; a write's touch
-- always moves the score, which tells a listing that dropped nothing yet that the session
-- was written (re-created) since it found the session gone (forget_stale).
-- Answers whether the member was missing from the index (and is now in it).
local function index_touch(idx, lex, member, must_exist)
  local top = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
  if must_exist and top[1] == member then return false end
  local tick = (tonumber(top[2]) or 0) + 1
  if must_exist then
    redis.call('ZADD', idx, 'XX', tick, member)
    return false
  end
  local added = redis.call('ZADD', idx, tick, member) == 1
  redis.call('ZADD', lex, 0, string.sub(member, TAGLEN + 1))
  return added
end

-- Answers 1 if the member was in the index, else 0.
local function index_remove(idx, lex, member)
  local removed = redis.call('ZREM', idx, member)
  redis.call('ZREM', lex, string.sub(member, TAGLEN + 1))
  return removed
end

-- Remove the least recently used members until at most maxs remain (never keep).
-- alive(member) tells whether a member's session still exists; members whose session is
-- gone are reported as expired, not evicted. (A single server: the session's own script
-- evicts. On a cluster the index has its own slot: see index.lua's 'write'.)
local function index_evict(idx, lex, maxs, keep, alive, evicted, expired)
  local n = redis.call('ZCARD', idx)
  while n > maxs do
    local c = redis.call('ZRANGE', idx, 0, 1)
    local v = c[1]
    if v == keep then v = c[2] end
    if not v then break end
    index_remove(idx, lex, v)
    if not alive(v) then
      table.insert(expired, v)
    else
      table.insert(evicted, v)
    end
    n = n - 1
  end
end

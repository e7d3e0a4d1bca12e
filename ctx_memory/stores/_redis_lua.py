"""Lua scripts of the Redis store (text only: no I/O here).

Three scripts, each registered once and shared by the sync and asyncio clients:

* :data:`SESSION_SCRIPT` runs every operation on one session (``ARGV[1]`` names it). Its
  ``KEYS`` are the session's four keys, which share one hash slot; on a single server the
  LRU/expiry index keys follow as ``KEYS[5]``/``KEYS[6]`` so that index maintenance and
  eviction happen in the same atomic call. On Redis Cluster the index lives in its own
  slot, so the script gets only the four session keys and the client updates the index with
  :data:`INDEX_SCRIPT` in a second call.
* :data:`INDEX_SCRIPT` maintains the index alone (cluster mode, ``gc`` and ``list``).
* :data:`APPEND_SCRIPT` is the hot path: appending messages to a session that exists. It
  is small (no JSON parsing, no operation dispatch, no helper definitions to instantiate),
  answers one integer and shares the hash fields and TTL rules of :data:`SESSION_SCRIPT`;
  when the session does not exist it changes nothing and answers ``-1``, and the client
  repeats the write with :data:`SESSION_SCRIPT` and the init header. It takes only the
  hash, the list and the id set until the client knows the session has fetched items; if
  it has (and a TTL is set) it answers ``-2``, again having changed nothing, and the
  client repeats the call with the fetched keys too.

Appends are idempotent by message id, with no window: the id set ``IDS`` holds the id of
every message in the history, and a message whose id is in it is skipped (``SADD``
answers 0). A retried append whose first attempt landed therefore adds nothing and
answers ``added = 0``. Other writes (create, merge, header, fetched items, clear, replace)
carry a random write token: the first result of each token is kept in the hash ``W`` for
at least ``TOKEN_WINDOW`` seconds of server time (``W`` becomes ``WO`` when its
generation is that old, and the older ``WO`` is dropped), and a retry whose first attempt
was applied answers that result without applying the write again. A retry arrives within
the client's retry budget (``max_retries`` times the socket timeout and backoff: seconds), far
inside the window, however many other writes happen meanwhile.

JSON is never re-encoded from ``cjson`` (it turns ``[]`` into ``{}`` and rounds numbers
to 14 digits); history edits only read a message's ``id`` and ``token_count`` with it.
The merge code below parses objects *structurally*: it walks the text, keeps
every non-object value as its exact source text and re-emits objects key by key, so
numbers, empty lists and unicode survive byte for byte and key order is preserved.

``KEYS`` of :data:`SESSION_SCRIPT`: ``H, M, F, FP, IDS, W, WO`` (one hash slot), then the
index on a single server. ``ARGV`` (unused slots are ``""``)::

    1 "op:ttl_ms:max_sessions:write_token"   2 session id   3 now (JSON string)
    4 init header JSON ("" when the client believes the session exists; the script then
      answers "init" if it does not)   5.. operation arguments

The key prefix and the index member (tag + id) are derived from ``KEYS[1]``. Writes answer
``{created, added, expired_members, evicted_members}``.
"""

from __future__ import annotations

__all__ = ["APPEND_SCRIPT", "INDEX_SCRIPT", "SESSION_SCRIPT", "SESSION_SUFFIXES", "TAG_LENGTH"]

TAG_LENGTH = 64
"""Length of a session's hash tag (hex SHA-256 of its id); index members are tag + id."""

SESSION_SUFFIXES = ("h", "m", "f", "fp", "ids", "w", "wo")
"""The keys of one session, ``P:{T}:<suffix>``, in the order :data:`SESSION_SCRIPT` takes."""

TOKEN_WINDOW = 600
"""Seconds (server time) a write token's result is kept at least (at most twice that)."""

# Appending (id, tokens, message) triples whose id the session does not hold yet, shared by
# SESSION_SCRIPT (from ARGV[5]) and APPEND_SCRIPT (from ARGV[2]); needs IDS, M and token.
# A message whose id was stored by this very write token (a retry of a write that landed)
# counts as added ("again") without being pushed twice.
_APPEND_NEW = r"""
local n, again, tokens, batch, mine = 0, 0, 0, {}, {}
for i = FIRST, #ARGV, 3 do
  if redis.call('HSETNX', IDS, ARGV[i], token) == 1 then
    mine[ARGV[i]] = true
    n = n + 1
    tokens = tokens + tonumber(ARGV[i + 1])
    batch[#batch + 1] = ARGV[i + 2]
    if #batch == 4000 then
      redis.call('RPUSH', M, unpack(batch))
      batch = {}
    end
  elseif not mine[ARGV[i]] and redis.call('HGET', IDS, ARGV[i]) == token then
    mine[ARGV[i]] = true
    again = again + 1
  end
end
if #batch > 0 then redis.call('RPUSH', M, unpack(batch)) end
"""

_COMMON = (
    f"local TOKEN_WINDOW = {TOKEN_WINDOW}\n"
    + r"""
local TAGLEN = 64
local SUFFIXES = {'h', 'm', 'f', 'fp', 'ids', 'w', 'wo'}

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
-- alone, all scored 0, so ZRANGEBYLEX pages through them in id order.
local function index_touch(idx, lex, member, must_exist)
  local top = redis.call('ZRANGE', idx, -1, -1, 'WITHSCORES')
  local tick = (tonumber(top[2]) or 0) + 1
  if must_exist then
    redis.call('ZADD', idx, 'XX', tick, member)
  else
    redis.call('ZADD', idx, tick, member)
    redis.call('ZADD', lex, 0, string.sub(member, TAGLEN + 1))
  end
end

local function index_remove(idx, lex, member)
  redis.call('ZREM', idx, member)
  redis.call('ZREM', lex, string.sub(member, TAGLEN + 1))
end

-- Remove the least recently used members until at most maxs remain (never keep).
-- alive(member) tells whether a member's session still exists (nil: assume it does);
-- members whose session is gone are reported as expired, not evicted.
local function index_evict(idx, lex, maxs, keep, alive, evicted, expired)
  local n = redis.call('ZCARD', idx)
  while n > maxs do
    local c = redis.call('ZRANGE', idx, 0, 1)
    local v = c[1]
    if v == keep then v = c[2] end
    if not v then break end
    index_remove(idx, lex, v)
    if alive and not alive(v) then
      table.insert(expired, v)
    else
      table.insert(evicted, v)
    end
    n = n - 1
  end
end
"""
)

SESSION_SCRIPT = (
    _COMMON
    + r"""
local H, M, F, FP, IDS, W, WO = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local IDX, LEX = KEYS[8], KEYS[9]
local op, ttl, maxs, token = string.match(ARGV[1], '^([^:]*):(%d+):(%d+):(.*)$')
ttl, maxs = tonumber(ttl), tonumber(maxs)
local sid, now, init = ARGV[2], ARGV[3], ARGV[4]
local prefix = string.sub(H, 1, #H - 69)
local member = string.sub(H, #H - 66, #H - 3) .. sid

-- The session's counters and whether it has fetched items ("fx"): read by upsert(),
-- changed by the operation, written back by finish() in a single HSET.
local st = {mc = 0, tc = 0, fx = false}

local function refresh(fetched)
  if ttl > 0 then
    redis.call('PEXPIRE', H, ttl)
    redis.call('PEXPIRE', M, ttl)
    redis.call('PEXPIRE', IDS, ttl)
    redis.call('PEXPIRE', W, ttl)
    redis.call('PEXPIRE', WO, ttl)
    if fetched then
      redis.call('PEXPIRE', F, ttl)
      redis.call('PEXPIRE', FP, ttl)
    end
  end
end

local function base_of(m)
  return prefix .. ':{' .. string.sub(m, 1, TAGLEN) .. '}:'
end

local function alive(m)
  return redis.call('EXISTS', base_of(m) .. 'h') == 1
end

local function drop_members(members)
  for _, m in ipairs(members) do
    local base = base_of(m)
    for _, suffix in ipairs(SUFFIXES) do redis.call('DEL', base .. suffix) end
  end
end

-- The result {added, created} a write with this token already had, or nil.
local function seen_token()
  if token == '' then return nil end
  local r = redis.call('HGET', W, token) or redis.call('HGET', WO, token)
  if not r then return nil end
  local a, c = string.match(r, '^(%d+):(%d)$')
  return tonumber(a), tonumber(c)
end

-- Keep this write's result under its token; W becomes WO when its generation (started at
-- server time 'wg', seconds) is TOKEN_WINDOW old, so every token is kept at least that long.
local function keep_token(added, created)
  if token == '' then return end
  local t = tonumber(redis.call('TIME')[1])
  local wg = tonumber(redis.call('HGET', H, 'wg') or '0')
  if t - wg >= TOKEN_WINDOW then
    if redis.call('EXISTS', W) == 1 then redis.call('RENAME', W, WO) else redis.call('DEL', WO) end
    redis.call('HSET', H, 'wg', t)
  end
  redis.call('HSET', W, token, added .. ':' .. created)
end

local function read_touch()
  if IDX and maxs > 0 then index_touch(IDX, LEX, member, true) end
end

-- A list element no message can be (messages are JSON objects): marks one to LREM.
local DELETED = '\0ctx_memory:deleted'

local function decode_message(raw)
  local ok, rec = pcall(cjson.decode, raw)
  if ok and type(rec) == 'table' then return rec end
  return nil
end

-- Position (0-based) and decoded record of the message with this id, searching from the
-- newest (edits are usually near the end); nil when the session holds no such id.
local function find_message(mid)
  if redis.call('HEXISTS', IDS, mid) == 0 then return nil end
  local plain = not string.find(mid, '[%c"\\]')  -- appears verbatim in the JSON text
  local hi = redis.call('LLEN', M) - 1
  while hi >= 0 do
    local lo = math.max(0, hi - 99)
    local chunk = redis.call('LRANGE', M, lo, hi)
    for j = #chunk, 1, -1 do
      if not plain or string.find(chunk[j], mid, 1, true) then
        local rec = decode_message(chunk[j])
        if rec and rec.id == mid then return lo + j - 1, rec end
      end
    end
    hi = lo - 1
  end
  return nil
end

-- Returns ('', created) for a live or freshly created session, 'init' when the session is
-- missing and no init header was sent, or (nil, created, added) when this write token was
-- already applied.
local function upsert()
  local a, c = seen_token()
  if a then return nil, c, a end
  local r = redis.call('HMGET', H, 'id', 'mc', 'tc', 'fx')
  if r[1] then
    st.mc, st.tc, st.fx = tonumber(r[2]), tonumber(r[3]), r[4] == '1'
    return '', 0
  end
  if init == '' then return 'init' end
  local root = parse(init)
  local meta = root.vals['"metadata"']
  if type(meta) ~= 'table' then error('ctx_memory: init header has no metadata object') end
  local mc = meta.vals['"message_count"'] or '0'
  local tc = meta.vals['"token_count"'] or '0'
  local sh = root.vals['"shared"'] or '{}'
  redis.call('DEL', M, F, FP, IDS)
  redis.call('HSET', H, 'id', sid, 'sp', dump(root.vals['"system_prompt"'] or 'null'),
    'md', dump(meta), 'sh', dump(sh))
  st.mc, st.tc, st.fx = tonumber(mc), tonumber(tc), false
  return '', 1
end

local function finish(created, added)
  local mc, tc, fx = string.format('%d', st.mc), string.format('%d', st.tc), st.fx and '1' or '0'
  redis.call('HSET', H, 'ts', now, 'mc', mc, 'tc', tc, 'fx', fx)
  keep_token(added, created)
  refresh(st.fx)
  local expired, evicted = {}, {}
  if IDX and (created == 1 or maxs > 0) then
    index_touch(IDX, LEX, member, false)
    if created == 1 and maxs > 0 then
      index_evict(IDX, LEX, maxs, member, alive, evicted, expired)
      drop_members(evicted)
    end
  end
  return {created, added, expired, evicted}
end

-- Append the (id, tokens, message) triples from ARGV[5] whose id is new to the session.
local function append_new()
__APPEND_NEW_5__  st.mc, st.tc = st.mc + n, st.tc + tokens
  return n, again
end

if op == 'append' then
  local recent, created, added = upsert()
  if recent == 'init' then return 'init' end
  if recent == nil then return {created, added, {}, {}} end
  local n, again = append_new()
  if n == 0 and created == 0 then  -- every id known: a no-op
    if again > 0 and redis.call('HGET', H, 'ct') == token then created = 1 end
    return {created, again, {}, {}}
  end
  if created == 1 then redis.call('HSET', H, 'ct', token) end
  return finish(created, n + again)

elseif op == 'fetch' then
  local recent, created, added = upsert()
  if recent == 'init' then return 'init' end
  if recent == nil then return {created, added, {}, {}} end
  local dedupe = ARGV[5] == '1'
  local n = 0
  for i = 6, #ARGV, 2 do
    if redis.call('SADD', FP, ARGV[i]) == 1 or not dedupe then
      redis.call('RPUSH', F, ARGV[i + 1])
      n = n + 1
    end
  end
  if #ARGV >= 6 then st.fx = true end
  return finish(created, n)

elseif op == 'merge' then
  local partial = parse(ARGV[6])
  local recent, created, added = upsert()
  if recent == 'init' then return 'init' end
  if recent == nil then return {created, added, {}, {}} end
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

elseif op == 'header' then
  local partial = nil
  if ARGV[5] ~= '' then partial = parse(ARGV[5]) end
  local recent, created, added = upsert()
  if recent == 'init' then return 'init' end
  if recent == nil then return {created, added, {}, {}} end
  if partial then
    local meta = parse(redis.call('HGET', H, 'md'))
    merge(meta, partial, false)
    redis.call('HSET', H, 'md', dump(meta))
  end
  if ARGV[6] == '1' then redis.call('HSET', H, 'sp', ARGV[7]) end
  return finish(created, 0)

elseif op == 'create' then
  local recent, created, added = upsert()
  if recent == 'init' then return 'init' end
  if recent == nil then return {created, added, {}, {}} end
  return finish(created, 0)

elseif op == 'replace' then
  -- 5 sp, 6 md, 7 sh, 8 mc, 9 tc, 10 number of messages, 11.. messages, then
  -- (fingerprint, entry) pairs.
  -- 5 sp, 6 md, 7 sh, 8 mc, 9 tc, 10 number of messages n, 11.. n (id, tokens, message)
  -- triples, then (fingerprint, entry) pairs.
  local a, c = seen_token()
  if a then return {c, a, {}, {}} end
  local existed = redis.call('EXISTS', H)
  redis.call('DEL', H, M, F, FP, IDS)
  redis.call('HSET', H, 'id', sid, 'sp', ARGV[5], 'md', ARGV[6], 'sh', ARGV[7])
  st.mc, st.tc = tonumber(ARGV[8]), tonumber(ARGV[9])
  local n = tonumber(ARGV[10])
  local last = 10 + 3 * n
  local added = 0
  for i = 11, last, 3 do
    if redis.call('HSETNX', IDS, ARGV[i], token) == 1 then
      redis.call('RPUSH', M, ARGV[i + 2])
      added = added + 1
    end
  end
  for j = last + 1, #ARGV, 2 do
    redis.call('SADD', FP, ARGV[j])
    redis.call('RPUSH', F, ARGV[j + 1])
  end
  st.fx = #ARGV > last
  return finish(1 - existed, added)

elseif op == 'clear' then
  local a = seen_token()
  if a then return 1 end
  if redis.call('EXISTS', H) == 0 then return 0 end
  redis.call('DEL', M, IDS)
  local fx = '0'
  if ARGV[5] == '1' then
    fx = redis.call('HGET', H, 'fx') or '0'
  else
    redis.call('DEL', F, FP)
  end
  redis.call('HSET', H, 'mc', 0, 'tc', 0, 'ts', now, 'fx', fx)
  keep_token(0, 0)
  refresh(fx == '1')
  if IDX and maxs > 0 then index_touch(IDX, LEX, member, true) end
  return 1

elseif op == 'delete' then
  local existed = redis.call('DEL', H)
  redis.call('DEL', M, F, FP, IDS, W, WO)
  if IDX then index_remove(IDX, LEX, member) end
  return existed

elseif op == 'msgdel' or op == 'msgset' or op == 'truncate' then
  -- History edits on a live session: 5.. message ids (msgdel); 5 id, 6 tokens, 7 message
  -- (msgset); 5 id, 6 inclusive 0/1 (truncate). Answers how many messages were removed
  -- or replaced, or -1 when the session or the message is not there (truncate, msgset).
  local a = seen_token()
  if a then return a end
  local r = redis.call('HMGET', H, 'id', 'mc', 'tc', 'fx')
  if not r[1] then return -1 end
  st.mc, st.tc, st.fx = tonumber(r[2]), tonumber(r[3]), r[4] == '1'
  local result = 0
  if op == 'msgdel' then
    for i = 5, #ARGV do
      local pos, rec = find_message(ARGV[i])
      if pos then
        redis.call('LSET', M, pos, DELETED)
        redis.call('HDEL', IDS, ARGV[i])
        st.mc, st.tc = st.mc - 1, st.tc - (tonumber(rec.token_count) or 0)
        result = result + 1
      end
    end
    if result > 0 then redis.call('LREM', M, 0, DELETED) end
  elseif op == 'msgset' then
    local pos, rec = find_message(ARGV[5])
    if not pos then return -1 end
    redis.call('LSET', M, pos, ARGV[7])
    st.tc = st.tc + tonumber(ARGV[6]) - (tonumber(rec.token_count) or 0)
    result = 1
  else
    local pos = find_message(ARGV[5])
    if not pos then return -1 end
    local cut = pos + 1
    if ARGV[6] == '1' then cut = pos end
    local gone = redis.call('LRANGE', M, cut, -1)
    for _, raw in ipairs(gone) do
      local rec = decode_message(raw)
      if rec then
        if type(rec.id) == 'string' then redis.call('HDEL', IDS, rec.id) end
        st.tc = st.tc - (tonumber(rec.token_count) or 0)
      end
    end
    if cut == 0 then redis.call('DEL', M) else redis.call('LTRIM', M, 0, cut - 1) end
    st.mc = st.mc - #gone
    result = #gone
  end
  if result > 0 then
    redis.call('HSET', H, 'ts', now, 'mc', string.format('%d', st.mc),
      'tc', string.format('%d', st.tc))
    refresh(st.fx)
    if IDX and maxs > 0 then index_touch(IDX, LEX, member, true) end
  end
  keep_token(result, 0)
  return result

elseif op == 'doc' then
  local h = redis.call('HMGET', H, 'id', 'sp', 'md', 'sh', 'mc', 'tc', 'ts')
  if not h[1] then return false end
  read_touch()
  return {h, redis.call('LRANGE', M, 0, -1), redis.call('LRANGE', F, 0, -1)}

elseif op == 'head' then
  local h = redis.call('HMGET', H, 'id', 'sp', 'md', 'sh', 'mc', 'tc', 'ts')
  if not h[1] then return false end
  read_touch()
  return h

elseif op == 'msgs' then
  read_touch()
  return redis.call('LRANGE', M, ARGV[5], ARGV[6])

elseif op == 'count' then
  read_touch()
  return redis.call('LLEN', M)

elseif op == 'fetched' then
  read_touch()
  return redis.call('LRANGE', F, 0, -1)

elseif op == 'exists' then
  local e = redis.call('EXISTS', H)
  if e == 1 then read_touch() end
  return e
end
return redis.error_reply('ctx_memory: unknown operation ' .. tostring(op))
"""
).replace("__APPEND_NEW_5__", _APPEND_NEW.replace("FIRST", "5").lstrip())

INDEX_SCRIPT = (
    _COMMON
    + r"""
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

elseif op == 'read' then
  index_touch(IDX, LEX, ARGV[2], true)
  return 1

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
"""
)

APPEND_SCRIPT = r"""
-- KEYS: H, M, IDS [, F, FP] [, IDX, LEX]: F and FP once the client knows the session has
--       fetched items, and always with IDX and LEX, which come when max_sessions is set on
--       a single server (so 3 or 5 keys without the index, 7 with it).
-- ARGV: 1 "<ttl ms, 0: none> <write token, hex> <now JSON>", then (id, tokens, message)
--       triples.
-- Answers -1 (session missing) or -2 (it has fetched items whose TTL must be refreshed
-- but F and FP were not given), both having changed nothing, else added * 2 + created
-- (created only for a retry of the write that created the session: hash field 'ct').
-- Messages whose id is in IDS are skipped; when all are, the
-- call changes nothing. IDS maps each id to the token of the write that stored it, so a
-- retry of that write counts it as added, as the lost first answer did.
local H, M, IDS = KEYS[1], KEYS[2], KEYS[3]
local r = redis.call('HMGET', H, 'id', 'fx', 'mc', 'tc')
if not r[1] then return -1 end
local ttl, token, now = string.match(ARGV[1], '^(%d+) (%x+) (.*)$')
local nk = #KEYS
local fetched = r[2] == '1' and ttl ~= '0'
if fetched and nk < 5 then return -2 end
__APPEND_NEW_2__if n == 0 then  -- nothing new: a no-op (a retry answers what its first attempt did)
  if again > 0 and redis.call('HGET', H, 'ct') == token then return again * 2 + 1 end
  return again * 2
end
redis.call('HSET', H, 'ts', now, 'mc', string.format('%d', tonumber(r[3]) + n),
  'tc', string.format('%d', tonumber(r[4]) + tokens))
if ttl ~= '0' then
  redis.call('PEXPIRE', H, ttl)
  redis.call('PEXPIRE', M, ttl)
  redis.call('PEXPIRE', IDS, ttl)
  if fetched then
    redis.call('PEXPIRE', KEYS[4], ttl)
    redis.call('PEXPIRE', KEYS[5], ttl)
  end
end
if nk == 7 then
  local IDX = KEYS[6]
  local top = redis.call('ZRANGE', IDX, -1, -1, 'WITHSCORES')
  redis.call('ZADD', IDX, (tonumber(top[2]) or 0) + 1, string.sub(H, #H - 66, #H - 3) .. r[1])
  redis.call('ZADD', KEYS[7], 0, r[1])
end
return (n + again) * 2
""".replace("__APPEND_NEW_2__", _APPEND_NEW.replace("FIRST", "2").lstrip())

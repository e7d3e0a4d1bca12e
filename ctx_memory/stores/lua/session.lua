-- SESSION_SCRIPT: every operation on one session (ctx_memory/stores/_redis_lua.py
-- describes its KEYS and ARGV); common.lua comes first.

local H, M, F, FP, IDS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local W, WO, R = KEYS[6], KEYS[7], KEYS[8]
local IDX, LEX = KEYS[9], KEYS[10]
local op, ttl, maxs, token = string.match(ARGV[1], '^([^:]*):(%d+):(%d+):(.*)$')
ttl, maxs = tonumber(ttl), tonumber(maxs)
local sid, now, init = ARGV[2], ARGV[3], ARGV[4]
local prefix = string.sub(H, 1, #H - 69)
local member = string.sub(H, #H - 66, #H - 3) .. sid

-- The session's counters and whether it has fetched items ("fx"): read by upsert(),
-- changed by the operation, written back by finish() in a single HSET.
local st = {mc = 0, tc = 0, fx = false, ev = false}

-- The write token hashes W and WO come first: the clock may move on during a script (it
-- does on Redis 7.0), and their expiry must never be later than the session hash's.
local function refresh(fetched)
  if ttl > 0 then
    redis.call('PEXPIRE', W, ttl)
    redis.call('PEXPIRE', WO, ttl)
    redis.call('PEXPIRE', H, ttl)
    redis.call('PEXPIRE', M, ttl)
    redis.call('PEXPIRE', IDS, ttl)
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

-- W and WO expire when the session's hash H does (or never, if it never does): a write
-- made after the refresh, or without one, would otherwise leave a W with no TTL (appends
-- slide H's TTL, not W's, so W may be gone while H lives on) that outlives the session.
-- Redis 7 gives H's expiry itself (PEXPIRETIME); before, they take its remaining TTL less
-- a millisecond, which the clock may move on between the two commands.
local function expire_tokens_with_session()
  local at = redis.pcall('PEXPIRETIME', H)
  if type(at) == 'number' then
    if at > 0 then
      redis.call('PEXPIREAT', W, at)
      redis.call('PEXPIREAT', WO, at)
      return
    end
  else
    at = redis.call('PTTL', H)
    if at > 0 then
      redis.call('PEXPIRE', W, math.max(at - 1, 1))
      redis.call('PEXPIRE', WO, math.max(at - 1, 1))
      return
    end
  end
  if at == -1 then
    redis.call('PERSIST', W)
    redis.call('PERSIST', WO)
  end
end

-- Keep this write's result under its token; W becomes WO when its generation (started at
-- server time 'wg', seconds) is TOKEN_WINDOW old, so every token is kept at least that long.
-- refreshing: refresh() follows in this call, which gives W and WO the session's TTL (so
-- the token must be written before it); else (or with no TTL) they take H's expiry now.
local function keep_token(added, created, refreshing)
  if token == '' then return end
  local t = tonumber(redis.call('TIME')[1])
  local wg = tonumber(redis.call('HGET', H, 'wg') or '0')
  if t - wg >= TOKEN_WINDOW then
    if redis.call('EXISTS', W) == 1 then redis.call('RENAME', W, WO) else redis.call('DEL', WO) end
    redis.call('HSET', H, 'wg', t)
  end
  redis.call('HSET', W, token, added .. ':' .. created)
  if not refreshing or ttl == 0 then expire_tokens_with_session() end
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
  local r = redis.call('HMGET', H, 'id', 'mc', 'tc', 'fx', 'ev')
  if r[1] then
    st.mc, st.tc, st.fx, st.ev = tonumber(r[2]), tonumber(r[3]), r[4] == '1', r[5]
    return '', 0
  end
  if init == '' then return 'init' end
  local root = parse(init)
  local meta = root.vals['"metadata"']
  if type(meta) ~= 'table' then error('ctx_memory: init header has no metadata object') end
  local mc = meta.vals['"message_count"'] or '0'
  local tc = meta.vals['"token_count"'] or '0'
  local sh = root.vals['"shared"'] or '{}'
  redis.call('DEL', M, F, FP, IDS, R)
  redis.call('HSET', H, 'id', sid, 'sp', dump(root.vals['"system_prompt"'] or 'null'),
    'md', dump(meta), 'sh', dump(sh))
  st.mc, st.tc, st.fx = tonumber(mc), tonumber(tc), false
  return '', 1
end

local function finish(created, added)
  local mc, tc, fx = string.format('%d', st.mc), string.format('%d', st.tc), st.fx and '1' or '0'
  redis.call('HSET', H, 'ts', now, 'mc', mc, 'tc', tc, 'fx', fx)
  if st.ev then redis.call('HDEL', H, 'ev') end  -- a write unmarks an eviction's victim
  keep_token(added, created, true)
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
  -- @include append_new.lua FIRST=5
  st.mc, st.tc = st.mc + n, st.tc + tokens
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
  redis.call('DEL', H, M, F, FP, IDS, R)
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
  redis.call('DEL', M, IDS, R)
  local fx = '0'
  if ARGV[5] == '1' then
    fx = redis.call('HGET', H, 'fx') or '0'
  else
    redis.call('DEL', F, FP)
  end
  redis.call('HSET', H, 'mc', 0, 'tc', 0, 'ts', now, 'fx', fx)
  redis.call('HDEL', H, 'ev')
  keep_token(0, 0, true)
  refresh(fx == '1')
  if IDX and maxs > 0 then index_touch(IDX, LEX, member, true) end
  return 1

elseif op == 'mark' then
  -- Eviction on a cluster, where the index is in another slot: the victim chosen by the
  -- index (index.lua 'write') is marked with the eviction's token before the index drops
  -- it; every write of the session removes the mark ('ev'), and 'evict' deletes only a
  -- session still marked, so a write that lands during the eviction keeps its session.
  if redis.call('EXISTS', H) == 0 then return 0 end
  redis.call('HSET', H, 'ev', token)
  return 1

elseif op == 'evict' then
  -- Answers 1 (deleted), 0 (written since its mark: kept), -1 (gone already).
  local r = redis.call('HMGET', H, 'id', 'ev')
  if not r[1] then return -1 end
  if r[2] ~= token then return 0 end
  redis.call('DEL', H, M, F, FP, IDS, W, WO, R)
  return 1

elseif op == 'delete' then
  local existed = redis.call('DEL', H)
  redis.call('DEL', M, F, FP, IDS, W, WO, R)
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
  -- The token before the refresh, which gives it the session's TTL. An edit that changed
  -- nothing keeps its token too (a retry must answer 0 even if the id came since), with
  -- the session's expiry: nothing is refreshed.
  keep_token(result, 0, result > 0)
  if result > 0 then
    redis.call('DEL', R)
    redis.call('HSET', H, 'ts', now, 'mc', string.format('%d', st.mc),
      'tc', string.format('%d', st.tc))
    redis.call('HDEL', H, 'ev')
    refresh(st.fx)
    if IDX and maxs > 0 then index_touch(IDX, LEX, member, true) end
  end
  return result

elseif op == 'recall' then
  -- Save recall-index segments (derived data, read back by a plain LRANGE of R): 5 replace
  -- (0/1), 6.. the segments; the client sends no index keys and ttl = maxs = 0. Answers 0,
  -- writing nothing, when the session does not exist. Not an access and not a write of
  -- the session: no TTL refresh, no touch, no counters. R takes the session's remaining
  -- TTL (none if it has none), so it may expire before the hash (whose TTL slides on later
  -- writes; the segments are rebuilt). Every edit of the history deletes R.
  local a = seen_token()
  if a then return 1 end
  if redis.call('EXISTS', H) == 0 then return 0 end
  if ARGV[5] == '1' then redis.call('DEL', R) end
  if #ARGV < 6 then return 1 end  -- nothing pushed: a retry changes nothing either
  for i = 6, #ARGV, 4000 do
    redis.call('RPUSH', R, unpack(ARGV, i, math.min(i + 3999, #ARGV)))
  end
  local pttl = redis.call('PTTL', H)
  if pttl > 0 then redis.call('PEXPIRE', R, pttl) else redis.call('PERSIST', R) end
  keep_token(1, 0, false)  -- the token hashes take the session's expiry, as R does
  return 1

-- Reads: the whole document, one snapshot (the header, the history and the fetched items
-- agree), and whether the session exists. The other reads (history, count, header, fetched
-- items) are plain commands sent with TOUCH_SCRIPT (touch.lua).
elseif op == 'doc' then
  local h = redis.call('HMGET', H, 'id', 'sp', 'md', 'sh', 'mc', 'tc', 'ts')
  if not h[1] then return false end
  read_touch()
  return {h, redis.call('LRANGE', M, 0, -1), redis.call('LRANGE', F, 0, -1)}

elseif op == 'exists' then
  local e = redis.call('EXISTS', H)
  if e == 1 then read_touch() end
  return e
end
return redis.error_reply('ctx_memory: unknown operation ' .. tostring(op))

-- What every operation on one session shares: each script lua/session/<operation>.lua
-- follows this text (and common.lua before it). ctx_memory/stores/_redis_lua.py describes
-- their KEYS and ARGV.

local H, M, F, FP, IDS = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local W, WO, R = KEYS[6], KEYS[7], KEYS[8]
local IDX, LEX = KEYS[9], KEYS[10]
local ttl, maxs, token = string.match(ARGV[1], '^(%d+):(%d+):(.*)$')
ttl, maxs = tonumber(ttl), tonumber(maxs)
local sid, now, init = ARGV[2], ARGV[3], ARGV[4]
local prefix = string.sub(H, 1, #H - 69)
local member = string.sub(H, #H - 66, #H - 3) .. sid

-- The session's counters and whether it has fetched items ("fx"): read by upsert(),
-- changed by the operation, written back by finish() in a single HSET.
local st = {mc = 0, tc = 0, fx = false, ev = false}

-- The write token hashes W and WO come first: the clock may move on during a script (it
-- does on Redis 7.0), and their expiry must never be later than the session hash's.
-- With no TTL (0: never) the same keys are made permanent: a session written before under
-- a TTL (another store object, or the setting before a change) would otherwise keep that
-- TTL and expire with everything written since, where SQLite and PostgreSQL keep it.
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
  else
    redis.call('PERSIST', W)
    redis.call('PERSIST', WO)
    redis.call('PERSIST', H)
    redis.call('PERSIST', M)
    redis.call('PERSIST', IDS)
    redis.call('PERSIST', R)  -- the saved recall index keeps the session's expiry
    if fetched then
      redis.call('PERSIST', F)
      redis.call('PERSIST', FP)
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
-- refreshing: refresh() follows in this call, which gives W and WO the session's TTL, or
-- none with no TTL (so the token must be written before it); else they take H's expiry now.
local function keep_token(added, created, refreshing)
  if token == '' then return end
  local t = tonumber(redis.call('TIME')[1])
  local wg = tonumber(redis.call('HGET', H, 'wg') or '0')
  if t - wg >= TOKEN_WINDOW then
    if redis.call('EXISTS', W) == 1 then redis.call('RENAME', W, WO) else redis.call('DEL', WO) end
    redis.call('HSET', H, 'wg', t)
  end
  redis.call('HSET', W, token, added .. ':' .. created)
  if not refreshing then expire_tokens_with_session() end
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
    -- A session this write created that was indexed already had expired (its keys were
    -- gone, its member waited for gc): the write takes the member over, so no gc() or
    -- listing could find that expiry any more, and it is reported here, once.
    if not index_touch(IDX, LEX, member, false) and created == 1 then
      table.insert(expired, member)
    end
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

-- A write that creates the session when it is missing: body(created) runs once it exists.
-- A missing session without an init header answers 'init' (the client sends it again with
-- one); a write whose token was already applied answers that first result.
local function upserted(body)
  local recent, created, added = upsert()
  if recent == 'init' then return 'init' end
  if recent == nil then return {created, added, {}, {}} end
  return body(created)
end

-- A history edit of a live session (msgdel, msgset, truncate): change() edits M and the
-- counters in st and answers how many messages it removed or replaced, or -1 when the
-- message is not there (nothing changed). Answers that, or -1 when the session is missing.
local function edit(change)
  local a = seen_token()
  if a then return a end
  local r = redis.call('HMGET', H, 'id', 'mc', 'tc', 'fx')
  if not r[1] then return -1 end
  st.mc, st.tc, st.fx = tonumber(r[2]), tonumber(r[3]), r[4] == '1'
  local result = change()
  if result < 0 then return -1 end
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
end

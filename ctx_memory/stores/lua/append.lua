-- APPEND_SCRIPT: the hot path, appending messages to a session that exists.
-- KEYS: H, M, IDS [, F, FP] [, IDX, LEX]: F and FP once the client knows the session has
--       fetched items, and always with IDX and LEX, which come when max_sessions is set on
--       a single server (so 3 or 5 keys without the index, 7 with it).
-- ARGV: 1 "<ttl ms, 0: none> <write token, hex> <now JSON>", then (id, tokens, message)
--       triples.
-- Answers -1 (session missing) or -2 (it has fetched items whose TTL must be refreshed,
-- or removed with no TTL, but F and FP were not given), both having changed nothing, else
-- added * 2 + created
-- (created only for a retry of the write that created the session: hash field 'ct').
-- Messages whose id is in IDS are skipped; when all are, the
-- call changes nothing. IDS maps each id to the token of the write that stored it, so a
-- retry of that write counts it as added, as the lost first answer did.
local H, M, IDS = KEYS[1], KEYS[2], KEYS[3]
local r = redis.call('HMGET', H, 'id', 'fx', 'mc', 'tc', 'ev')
if not r[1] then return -1 end
local ttl, token, now = string.match(ARGV[1], '^(%d+) (%x+) (.*)$')
local nk = #KEYS
local fetched = r[2] == '1'
if fetched and nk < 5 then return -2 end
-- @include append_new.lua FIRST=2
if n == 0 then  -- nothing new: a no-op (a retry answers what its first attempt did)
  if again > 0 and redis.call('HGET', H, 'ct') == token then return again * 2 + 1 end
  return again * 2
end
-- A write unmarks a session chosen for eviction on a cluster (session.lua: 'mark').
if r[5] then redis.call('HDEL', H, 'ev') end
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
else  -- no TTL (never): a TTL an earlier write gave the session must not stay
  redis.call('PERSIST', H)
  redis.call('PERSIST', M)
  redis.call('PERSIST', IDS)
  if fetched then
    redis.call('PERSIST', KEYS[4])
    redis.call('PERSIST', KEYS[5])
  end
end
if nk == 7 then
  -- The LRU touch: nothing when the session is the most recent already (a chat's user and
  -- assistant messages come in pairs; the session exists, so the write that created it
  -- moved its score already, see index_touch); the id list LEX only when the session was
  -- missing from the index (LEX is written with IDX, or built from it once: it holds every
  -- indexed session).
  local IDX, member = KEYS[6], string.sub(H, #H - 66, #H - 3) .. r[1]
  local top = redis.call('ZRANGE', IDX, -1, -1, 'WITHSCORES')
  if top[1] ~= member and redis.call('ZADD', IDX, (tonumber(top[2]) or 0) + 1, member) == 1 then
    redis.call('ZADD', KEYS[7], 0, r[1])
  end
end
return (n + again) * 2

-- Shared helpers of the admission-token scripts. RedisStore loads this file after common.lua
-- and before each token script.
--
-- KEYS: the eight event keys of common.lua, then two token keys as the last two:
--   KEYS[#KEYS - 1] tokens        HASH  jti -> token record JSON
--   KEYS[#KEYS]     token_expiry  ZSET  jti -> ms at which the record is dropped
--
-- A record is {"q":queue_id,"d":device_id,"x":expires ms,"i":issued ms[,"c":consumed ms]
-- [,"r":revoked ms]}. It is dropped at "x", the token's exp plus the verification leeway,
-- by the purge of the next token script, and a lookup ignores a record past "x" at once.
-- Every ms value stays below 10^14, so cjson's 14 significant digits encode it exactly.

local K_TOKENS = KEYS[#KEYS - 1]
local K_TOKEN_EXPIRY = KEYS[#KEYS]

-- Return the fields fixed at join of an entry's JSON text (see common.lua).
local function entry_fixed(raw)
  return cjson.decode(string.sub(raw, fixed_start(raw) + string.len(',"f":'), -2))
end

-- Drop at most PURGE_BATCH records whose expiry has passed.
local function purge_tokens(now_ms)
  local due = redis.call('ZRANGEBYSCORE', K_TOKEN_EXPIRY, '-inf', int_str(now_ms),
    'LIMIT', 0, PURGE_BATCH)
  if #due > 0 then
    call_in_chunks('HDEL', K_TOKENS, due)
    call_in_chunks('ZREM', K_TOKEN_EXPIRY, due)
  end
end

-- Return the decoded record of `jti`, or nil when there is none or it has expired.
local function load_token(jti, now_ms)
  local raw = redis.call('HGET', K_TOKENS, jti)
  if not raw then
    return nil
  end
  local record = cjson.decode(raw)
  if record.x <= now_ms then
    return nil
  end
  return record
end

local function save_token(jti, record)
  redis.call('HSET', K_TOKENS, jti, cjson.encode(record))
  redis.call('ZADD', K_TOKEN_EXPIRY, int_str(record.x), jti)
end

-- Record token `jti` from the live admitted entry of `device_id` when that entry's token id is
-- `jti`, and return the record, or nil. This adopts tokens issued by a path that did not
-- record them. The record lasts until the session's end plus `leeway_ms`.
local function adopt_token(jti, device_id, leeway_ms, now_ms)
  if device_id == '' then
    return nil
  end
  local queue_id = redis.call('HGET', K_DEVICES, device_id)
  local raw = queue_id and redis.call('HGET', K_ENTRIES, queue_id)
  if not raw or entry_status(raw) ~= 'admitted' or entry_fixed(raw).t ~= jti then
    return nil
  end
  -- Ids contain no quotes, so the first "x" is the session expiry in the entry's head.
  local session_expires_ms = tonumber(string.match(raw, '"x":(%d+)'))
  local record = {q = queue_id, d = device_id, x = session_expires_ms + leeway_ms, i = now_ms}
  save_token(jti, record)
  return record
end

-- Return the state of token `jti` with `record` (or nil). Mirrors records.token_state:
-- unknown, revoked, expired, session_ended, consumed, active, checked in this order.
local function token_state(jti, record)
  if not record then
    return 'unknown'
  end
  if record.r then
    return 'revoked'
  end
  local raw = redis.call('HGET', K_ENTRIES, record.q)
  if not raw then
    return 'session_ended'
  end
  local status = entry_status(raw)
  local owns = entry_fixed(raw).t == jti
  if status == 'expired' and owns then
    return 'expired'
  end
  if status ~= 'admitted' or not owns then
    return 'session_ended'
  end
  if record.c then
    return 'consumed'
  end
  return 'active'
end

-- Return the reply every token lookup shares: {'ok', state, record JSON or false, now_ms}.
local function token_reply(state, record, now_ms)
  local encoded = false
  if record then
    encoded = cjson.encode(record)
  end
  return {'ok', state, encoded, now_ms}
end

-- Purge due entries and token records, then find the token's record (adopting one from the
-- device's live entry when it has none). Returns cfg, st, now_ms, record, state; cfg is nil
-- for an unknown event, and then the caller replies 'unknown'.
local function read_token(jti, device_id, leeway_ms)
  local now_ms = clock_ms()
  local cfg = load_config()
  if not cfg then
    return nil, nil, now_ms, nil, 'unknown'
  end

  local st = load_state(now_ms)
  purge(cfg, st, now_ms)
  purge_tokens(now_ms)

  local record = load_token(jti, now_ms) or adopt_token(jti, device_id, leeway_ms, now_ms)
  return cfg, st, now_ms, record, token_state(jti, record)
end

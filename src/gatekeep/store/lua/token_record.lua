-- token_record: record the token of an admitted entry, or extend the record's expiry.
-- KEYS: the eight event keys of common.lua, then the two token keys of token_common.lua.
-- ARGV[1] queue_id, ARGV[2] jti (the entry's token_id), ARGV[3] expires_at_ms: the token's exp
-- plus the verification leeway, in ms.
-- Returns {'ok', created 1|0, record JSON, now_ms}, {'entry_not_found'} (also for an unknown
-- event) or {'not_admitted'} when the entry is not admitted with this token id.
-- Calling it again for the same token changes nothing unless expires_at_ms is later.
local queue_id = ARGV[1]
local jti = ARGV[2]
local expires_at_ms = tonumber(ARGV[3])

local cfg = load_config()
if not cfg then
  return {'entry_not_found'}
end

local now_ms = clock_ms()
local st = load_state(now_ms)
purge(cfg, st, now_ms)
purge_tokens(now_ms)

local raw = redis.call('HGET', K_ENTRIES, queue_id)
if not raw then
  finish(cfg, st)
  return {'entry_not_found'}
end
local fixed = entry_fixed(raw)
if entry_status(raw) ~= 'admitted' or fixed.t ~= jti then
  finish(cfg, st)
  return {'not_admitted'}
end

local created = 0
local record = load_token(jti, now_ms)
if not record then
  record = {q = queue_id, d = fixed.d, x = expires_at_ms, i = now_ms}
  save_token(jti, record)
  created = 1
elseif expires_at_ms > record.x then
  record.x = expires_at_ms
  save_token(jti, record)
end

finish(cfg, st)
return {'ok', created, cjson.encode(record), now_ms}

-- token_consume: mark an active token as consumed. Of any number of calls for one token, at
-- most one finds it active, because Redis runs scripts one at a time.
-- KEYS: the eight event keys of common.lua, then the two token keys of token_common.lua.
-- ARGV[1] jti, ARGV[2] device_id from the token ('' when unknown), ARGV[3] leeway_ms: a token
-- without a record is adopted from the device's live entry (see adopt_token).
-- Returns {'ok', state, record JSON or false, now_ms}: state 'active' means this call consumed
-- the token; any other state says why it was not consumed. An unknown event gives 'unknown'.
local jti = ARGV[1]
local device_id = ARGV[2]
local leeway_ms = tonumber(ARGV[3])

local cfg, st, now_ms, record, state = read_token(jti, device_id, leeway_ms)
if not cfg then
  return token_reply(state, nil, now_ms)
end
if state == 'active' then
  record.c = now_ms
  save_token(jti, record)
end

finish(cfg, st)
return token_reply(state, record, now_ms)

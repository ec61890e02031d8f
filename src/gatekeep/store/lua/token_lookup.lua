-- token_lookup: return the record of a token and the state it gives the token now.
-- KEYS: the eight event keys of common.lua, then the two token keys of token_common.lua.
-- ARGV[1] jti, ARGV[2] device_id from the token ('' when unknown), ARGV[3] leeway_ms: a token
-- without a record is adopted from the device's live entry (see adopt_token).
-- Returns {'ok', state, record JSON or false, now_ms}. An unknown event gives 'unknown'.
local jti = ARGV[1]
local device_id = ARGV[2]
local leeway_ms = tonumber(ARGV[3])

local cfg, st, now_ms, record, state = read_token(jti, device_id, leeway_ms)
if not cfg then
  return token_reply(state, nil, now_ms)
end

finish(cfg, st)
return token_reply(state, record, now_ms)

-- disable_priority_code: mark one priority code as disabled, so later joins reject it.
-- KEYS: the eight event keys described in common.lua, then KEYS[9] priority codes (HASH).
-- ARGV[1] code_id.
-- Returns {'ok', code JSON}, {'event_not_found'} or {'code_not_found'}.
local code_id = ARGV[1]
local K_CODES = KEYS[9]

if redis.call('EXISTS', K_CONFIG) == 0 then
  return {'event_not_found'}
end
local raw = redis.call('HGET', K_CODES, code_id)
if not raw then
  return {'code_not_found'}
end

local code = cjson.decode(raw)
code.d = 1
local text = cjson.encode(code)
redis.call('HSET', K_CODES, code_id, text)
return {'ok', text}

-- put_priority_codes: add priority codes to an event.
-- KEYS: the eight event keys described in common.lua, then KEYS[9] priority codes (HASH).
-- ARGV: code_id, code JSON, code_id, code JSON, ... The JSON is {"h": sha256 of the code,
-- "b": bucket, "m": max uses (0 = unlimited), "u": uses, "d": disabled 0|1, "c": created ms}.
-- Returns {'ok'}, {'event_not_found'} or {'unknown_bucket', bucket}.
-- The codes hash has no expiry: codes are configuration.
local K_CODES = KEYS[9]

local cfg = load_config()
if not cfg then
  return {'event_not_found'}
end

for i = 2, #ARGV, 2 do
  local bucket = cjson.decode(ARGV[i]).b
  if not bucket_rank(cfg, bucket) then
    return {'unknown_bucket', bucket}
  end
end
call_in_chunks('HSET', K_CODES, ARGV)
return {'ok'}

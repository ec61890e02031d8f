-- join_with_code: a join that redeems a priority code. The code is checked first, and one use
-- is counted only when the join creates an entry, in the same atomic step.
-- KEYS: the eight event keys described in common.lua, then KEYS[9] priority codes (HASH).
-- ARGV: the arguments of join.lua, then code_id and the code's sha256 as the last two.
-- Returns what join.lua returns, or {'priority_code_invalid'}, {'priority_code_disabled'},
-- {'priority_code_used'}. RedisStore inserts join.lua's body as the function run_join.
local K_CODES = KEYS[9]
local code_id = ARGV[#ARGV - 1]
local code_hash = ARGV[#ARGV]

if redis.call('EXISTS', K_CONFIG) == 0 then
  return {'event_not_found'}
end
local raw = redis.call('HGET', K_CODES, code_id)
if not raw then
  return {'priority_code_invalid'}
end
local code = cjson.decode(raw)
if code.h ~= code_hash then
  return {'priority_code_invalid'}
end
if code.d == 1 then
  return {'priority_code_disabled'}
end
if code.m > 0 and code.u >= code.m then
  return {'priority_code_used'}
end

local reply = run_join()
-- finish() gave every key a TTL, but codes are configuration.
redis.call('PERSIST', K_CODES)
if reply[1] == 'ok' and reply[2] == 1 then
  code.u = code.u + 1
  redis.call('HSET', K_CODES, code_id, cjson.encode(code))
end
return reply

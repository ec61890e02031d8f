-- set_paused: settle the credit at the current setting, then pause or resume releases.
-- KEYS: the eight event keys described in common.lua.
-- ARGV[1] paused: '1' to pause, '0' to resume.
-- Returns {'ok', config pairs} or {'event_not_found'}.
local paused = ARGV[1]

local cfg = load_config()
if not cfg then
  return {'event_not_found'}
end

local now_ms = clock_ms()
local st = load_state(now_ms)
settle(cfg, st, now_ms)
redis.call('HSET', K_CONFIG, 'paused', paused)

finish(cfg, st)
return {'ok', redis.call('HGETALL', K_CONFIG)}

-- reset_event: drop every queue entry, session, device link, counter and wait sample of an
-- event, keeping its configuration and priority codes. Old queue ids then read as not found.
-- KEYS: the eight event keys described in common.lua, then KEYS[9] wait samples (LIST).
-- ARGV: none.
-- Returns {'ok', waiting count, admitted count} (what was dropped) or {'event_not_found'}.
local cfg = load_config()
if not cfg then
  return {'event_not_found'}
end

local waiting = redis.call('ZCARD', K_WAITING)
local admitted = redis.call('ZCARD', K_ADMITTED)
for i = 2, #KEYS do
  redis.call('DEL', KEYS[i])
end

-- A fresh state hash settles from now, so the reset neither keeps nor grants release credit.
local now_ms = clock_ms()
local st = load_state(now_ms)
finish(cfg, st)
return {'ok', waiting, admitted}

-- event_snapshot: purge, then return the event's configuration and live counters without
-- settling the credit.
-- KEYS: the eight event keys described in common.lua.
-- ARGV: none.
-- Returns {'ok', snapshot reply} or {'event_not_found'}.
local cfg = load_config()
if not cfg then
  return {'event_not_found'}
end

local now_ms = clock_ms()
local st = load_state(now_ms)
purge(cfg, st, now_ms)

finish(cfg, st)
return {'ok', snapshot_reply(cfg, st, now_ms)}

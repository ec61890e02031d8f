-- inspect_entry: purge, then return one entry and the event snapshot without recording a
-- heartbeat, for operators.
-- KEYS: the eight event keys described in common.lua.
-- ARGV[1] queue_id.
-- Returns {'ok', entry reply, snapshot reply}, {'entry_not_found'} or {'event_not_found'}.
local queue_id = ARGV[1]

local cfg = load_config()
if not cfg then
  return {'event_not_found'}
end

local now_ms = clock_ms()
local st = load_state(now_ms)
purge(cfg, st, now_ms)

local reply = entry_reply(queue_id)
finish(cfg, st)
if not reply then
  return {'entry_not_found'}
end
return {'ok', reply, snapshot_reply(cfg, st, now_ms)}

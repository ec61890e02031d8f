-- touch: return an entry and, when it is waiting, record this call as its heartbeat.
-- KEYS: the eight event keys described in common.lua.
-- ARGV[1] queue_id.
-- Returns {'ok', entry reply, snapshot reply} or {'entry_not_found'} (also for an unknown event).
local queue_id = ARGV[1]

local cfg = load_config()
if not cfg then
  return {'entry_not_found'}
end

local now_ms = clock_ms()
local st = load_state(now_ms)
purge(cfg, st, now_ms)

if redis.call('HEXISTS', K_ENTRIES, queue_id) == 0 then
  finish(cfg, st)
  return {'entry_not_found'}
end

-- Only waiting entries have a heartbeat, and ZADD XX leaves ended and admitted entries alone.
redis.call('ZADD', K_HEARTBEATS, 'XX', int_str(now_ms), queue_id)

finish(cfg, st)
return {'ok', entry_reply(queue_id), snapshot_reply(cfg, st, now_ms)}

-- leave: end a waiting entry or an admitted session with status `left`, freeing its place.
-- KEYS: the eight event keys described in common.lua.
-- ARGV[1] queue_id.
-- Returns {'ok', entry reply, snapshot reply} or {'entry_not_found'} (also for an unknown event).
-- An entry that already ended is returned unchanged.
local queue_id = ARGV[1]

local cfg = load_config()
if not cfg then
  return {'entry_not_found'}
end

local now_ms = clock_ms()
local st = load_state(now_ms)
purge(cfg, st, now_ms)

local raw = redis.call('HGET', K_ENTRIES, queue_id)
if not raw then
  finish(cfg, st)
  return {'entry_not_found'}
end

local status = entry_status(raw)
if status == 'waiting' or status == 'admitted' then
  end_entry(queue_id, raw, 'left', now_ms)
  st.left_total = st.left_total + 1
  st.dirty = true
end

finish(cfg, st)
return {'ok', entry_reply(queue_id), snapshot_reply(cfg, st, now_ms)}

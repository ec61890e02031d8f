-- open_event: apply the fairness order to the frozen pre-queue and open the event.
-- KEYS: the eight event keys described in common.lua, then the three of control.lua.
-- ARGV[1] open_seq: the freeze the order was computed for (from prequeue.lua).
-- ARGV[2] publication: the fairness publication JSON, kept at KEYS[11].
-- ARGV[3..] score, queue_id pairs: the new waiting scores in the fairness order.
-- Returns {'ok', 1, opened_at_ms} when this call opened the event, {'ok', 0} when another call
-- already did (or the freeze changed), or {'event_not_found'}.
local open_seq = ARGV[1]
local publication = ARGV[2]

local cfg = load_config()
if not cfg then
  return {'event_not_found'}
end

local now_ms = clock_ms()
local st = load_state(now_ms)
local ctl = load_control(cfg)
if ctl.phase ~= 'opening' or ctl.open_seq ~= open_seq then
  return {'ok', 0}
end

-- ZADD XX changes only members still waiting, so an entry that left or expired since the
-- pre-queue was read stays gone. CHUNK is even, so a score never splits from its id.
for first = 3, #ARGV, CHUNK do
  local last = math.min(first + CHUNK - 1, #ARGV)
  redis.call('ZADD', K_WAITING, 'XX', unpack(ARGV, first, last))
end

redis.call('SET', K_FAIRNESS, publication)
redis.call('HSET', K_CONTROL, 'phase', 'open', 'opened_at_ms', int_str(now_ms))
finish(cfg, st)
refresh_control_ttl()
return {'ok', 1, now_ms}

-- join: add a waiting entry for a device, or return the device's live entry. Before `opens_at`
-- the entry joins the pre-queue, which the opening orders by the fairness seed; later joins
-- queue behind it. In `passthrough` mode an open event admits at once, up to capacity.
-- KEYS: the eight event keys described in common.lua, then the three of control.lua.
-- ARGV[1] queue_id, ARGV[2] device_id, ARGV[3] user_id ('' when none), ARGV[4] bucket name,
-- ARGV[5] token_id, ARGV[6] nonce, ARGV[7] ticket_id, ARGV[8] seed_hex and ARGV[9]
-- commitment_hex (a fairness seed candidate, stored only when the event has none).
-- Returns {'ok', created 1|0, entry reply, snapshot reply}, {'event_not_found'},
-- {'event_disabled'}, {'event_closed'}, {'sold_out'}, {'joins_rejected'},
-- {'queue_full', release_rate} or {'unknown_bucket'}.
local queue_id = ARGV[1]
local device_id = ARGV[2]
local user_id = ARGV[3]
local bucket = ARGV[4]
local token_id = ARGV[5]
local nonce = ARGV[6]
local ticket_id = ARGV[7]

local cfg = load_config()
if not cfg then
  return {'event_not_found'}
end
if not cfg.enabled then
  return {'event_disabled'}
end

local now_ms = clock_ms()
local st = load_state(now_ms)
purge(cfg, st, now_ms)
local ctl = load_control(cfg)
ensure_seed(ctl, ARGV[8], ARGV[9])
-- Freezing before this join takes its sequence number puts it behind the pre-queue.
freeze_if_due(cfg, ctl, now_ms)

-- Every reply after this point passes through `reply_with`, which saves the state.
local function reply_with(reply)
  finish(cfg, st)
  refresh_control_ttl()
  return reply
end

if is_closed(cfg, now_ms) then
  return reply_with({'event_closed'})
end
if is_sold_out(ctl) then
  return reply_with({'sold_out'})
end

-- A device has at most one live entry. A link to an entry that is gone or ended is dropped.
local live_queue_id = redis.call('HGET', K_DEVICES, device_id)
if live_queue_id then
  local live = redis.call('ZSCORE', K_HEARTBEATS, live_queue_id)
    or redis.call('ZSCORE', K_ADMITTED, live_queue_id)
  local reply = live and entry_reply(live_queue_id)
  if reply then
    return reply_with({'ok', 0, reply, snapshot_reply(cfg, st, now_ms)})
  end
  redis.call('HDEL', K_DEVICES, device_id)
end

if cfg.mode == 'reject' then
  return reply_with({'joins_rejected'})
end

if redis.call('ZCARD', K_WAITING) >= cfg.max_queue_size then
  return reply_with({'queue_full', float_str(cfg.release_rate)})
end

local rank = bucket_rank(cfg, bucket)
if not rank then
  return reply_with({'unknown_bucket'})
end

local seq = redis.call('HINCRBY', K_STATE, 'seq', 1)
local fixed = {d = device_id, b = bucket, j = now_ms, t = token_id, n = nonce, k = ticket_id}
if user_id ~= '' then
  fixed.u = user_id
end

redis.call('ZADD', K_WAITING, int_str(rank * SEQ_SPAN + seq), queue_id)
redis.call('ZADD', K_HEARTBEATS, int_str(now_ms), queue_id)
redis.call('HSET', K_ENTRIES, queue_id, new_entry_text(now_ms, fixed))
redis.call('HSET', K_DEVICES, device_id, queue_id)

if cfg.mode == 'passthrough' and not cfg.paused and ctl.phase == 'open' then
  local capacity_left = math.max(0, cfg.max_capacity - redis.call('ZCARD', K_ADMITTED))
  local count = math.min(capacity_left, PURGE_BATCH)
  local admitted = admit(cfg, ctl, pick_in_order(count), now_ms, 'join')
  if #admitted > 0 then
    st.admitted_total = st.admitted_total + #admitted
    st.dirty = true
  end
end

return reply_with({'ok', 1, entry_reply(queue_id), snapshot_reply(cfg, st, now_ms)})

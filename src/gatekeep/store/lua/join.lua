-- join: add a waiting entry for a device, or return the device's live entry.
-- KEYS: the eight event keys described in common.lua.
-- ARGV[1] queue_id, ARGV[2] device_id, ARGV[3] user_id ('' when none), ARGV[4] bucket name,
-- ARGV[5] token_id, ARGV[6] nonce.
-- Returns {'ok', created 1|0, entry reply, snapshot reply}, {'event_not_found'},
-- {'event_disabled'}, {'queue_full', release_rate} or {'unknown_bucket'}.
local queue_id = ARGV[1]
local device_id = ARGV[2]
local user_id = ARGV[3]
local bucket = ARGV[4]
local token_id = ARGV[5]
local nonce = ARGV[6]

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

-- A device has at most one live entry. A link to an entry that is gone or ended is dropped.
local live_queue_id = redis.call('HGET', K_DEVICES, device_id)
if live_queue_id then
  local live = redis.call('ZSCORE', K_HEARTBEATS, live_queue_id)
    or redis.call('ZSCORE', K_ADMITTED, live_queue_id)
  local reply = live and entry_reply(live_queue_id)
  if reply then
    finish(cfg, st)
    return {'ok', 0, reply, snapshot_reply(cfg, st, now_ms)}
  end
  redis.call('HDEL', K_DEVICES, device_id)
end

if redis.call('ZCARD', K_WAITING) >= cfg.max_queue_size then
  finish(cfg, st)
  return {'queue_full', float_str(cfg.release_rate)}
end

local rank = bucket_rank(cfg, bucket)
if not rank then
  finish(cfg, st)
  return {'unknown_bucket'}
end

local seq = redis.call('HINCRBY', K_STATE, 'seq', 1)
local fixed = {d = device_id, b = bucket, j = now_ms, t = token_id, n = nonce}
if user_id ~= '' then
  fixed.u = user_id
end

redis.call('ZADD', K_WAITING, int_str(rank * SEQ_SPAN + seq), queue_id)
redis.call('ZADD', K_HEARTBEATS, int_str(now_ms), queue_id)
redis.call('HSET', K_ENTRIES, queue_id, new_entry_text(now_ms, fixed))
redis.call('HSET', K_DEVICES, device_id, queue_id)

finish(cfg, st)
return {'ok', 1, entry_reply(queue_id), snapshot_reply(cfg, st, now_ms)}

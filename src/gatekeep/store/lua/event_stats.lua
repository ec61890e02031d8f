-- event_stats: purge, then return the event's snapshot, the waiting count of each bucket and
-- the recent wait samples.
-- KEYS: the eight event keys described in common.lua, then KEYS[9] wait samples (LIST).
-- ARGV: none.
-- Returns {'ok', snapshot reply, {waiting count per bucket, in bucket order}, {wait ms...}}
-- or {'event_not_found'}.
local K_WAITS = KEYS[9]

local cfg = load_config()
if not cfg then
  return {'event_not_found'}
end

local now_ms = clock_ms()
local st = load_state(now_ms)
purge(cfg, st, now_ms)

-- Scores are bucket_rank * SEQ_SPAN + seq, so each bucket is one score range.
local counts = {}
for index = 1, #cjson.decode(cfg.buckets_json) do
  local low = (index - 1) * SEQ_SPAN
  counts[index] = redis.call('ZCOUNT', K_WAITING, int_str(low), '(' .. int_str(low + SEQ_SPAN))
end
local waits = redis.call('LRANGE', K_WAITS, 0, -1)

finish(cfg, st)
return {'ok', snapshot_reply(cfg, st, now_ms), counts, waits}

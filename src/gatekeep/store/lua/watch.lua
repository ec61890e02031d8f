-- watch: read the status and position of many entries of one event, and record the call as
-- the heartbeat of each waiting one (an open stream is a sign of life).
-- KEYS: the eight event keys described in common.lua.
-- ARGV: the queue ids, one per argument.
-- Returns {'ok', snapshot reply, item 1, item 2, ...} or {'event_not_found'}, where item i is,
-- for ARGV[i]: the position (an integer) while the entry waits, the entry JSON once it
-- stopped waiting, or false when no entry has the id.
local cfg = load_config()
if not cfg then
  return {'event_not_found'}
end

local now_ms = clock_ms()
local st = load_state(now_ms)
purge(cfg, st, now_ms)

local waiting_ids = {}
local items = {}
for i, queue_id in ipairs(ARGV) do
  local rank = redis.call('ZRANK', K_WAITING, queue_id)
  if rank then
    items[i] = rank + 1
    waiting_ids[#waiting_ids + 1] = queue_id
  else
    items[i] = redis.call('HGET', K_ENTRIES, queue_id)
  end
end

-- Heartbeat pairs for ZADD: every id here is waiting, so XX only guards against a bug.
local now_text = int_str(now_ms)
local heartbeat_pairs = {}
for _, queue_id in ipairs(waiting_ids) do
  heartbeat_pairs[#heartbeat_pairs + 1] = now_text
  heartbeat_pairs[#heartbeat_pairs + 1] = queue_id
end
for first = 1, #heartbeat_pairs, CHUNK do
  local last = math.min(first + CHUNK - 1, #heartbeat_pairs)
  redis.call('ZADD', K_HEARTBEATS, 'XX', unpack(heartbeat_pairs, first, last))
end

finish(cfg, st)
local reply = {'ok', snapshot_reply(cfg, st, now_ms)}
for i = 1, #ARGV do
  reply[#reply + 1] = items[i]
end
return reply

-- prequeue: read the frozen pre-queue that the opening must order.
-- KEYS: the eight event keys described in common.lua, then the three of control.lua.
-- Returns {'ok', open_seq, frozen_at_ms, seed, commitment, then for each pre-queue entry still
-- waiting: queue_id, ticket_id, bucket rank}, {'not_opening'} when no pre-queue is frozen,
-- or {'event_not_found'}.
local cfg = load_config()
if not cfg then
  return {'event_not_found'}
end

local ctl = load_control(cfg)
if ctl.phase ~= 'opening' then
  return {'not_opening'}
end

local open_seq = tonumber(ctl.open_seq)
local reply = {'ok', ctl.open_seq, ctl.frozen_at_ms, ctl.seed or '', ctl.commitment or ''}
local buckets = cjson.decode(cfg.buckets_json)
for rank = 0, #buckets - 1 do
  -- The pre-queue of a bucket is its entries with seq <= open_seq, because later joins took
  -- higher sequence numbers.
  local low = int_str(rank * SEQ_SPAN)
  local high = int_str(rank * SEQ_SPAN + open_seq)
  local queue_ids = redis.call('ZRANGEBYSCORE', K_WAITING, low, high)
  local raws = fetch_in_chunks('HMGET', K_ENTRIES, queue_ids)
  for i, queue_id in ipairs(queue_ids) do
    if raws[i] then
      reply[#reply + 1] = queue_id
      reply[#reply + 1] = entry_ticket_id(queue_id, raws[i])
      reply[#reply + 1] = rank
    end
  end
end
return reply

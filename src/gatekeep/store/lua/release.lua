-- release: run one release step, admitting the first waiting entries that the credit, the
-- free capacity and max_batch allow, and start a session for each.
-- KEYS: the eight event keys described in common.lua.
-- ARGV[1] max_batch: the most entries to admit in this call.
-- Returns {'ok', waiting entries expired, sessions expired, admitted queue ids...} or
-- {'event_not_found'}.
local max_batch = tonumber(ARGV[1])

local cfg = load_config()
if not cfg then
  return {'event_not_found'}
end

local now_ms = clock_ms()
local st = load_state(now_ms)
local expired_waiting, expired_sessions = purge(cfg, st, now_ms)

local waiting_before = redis.call('ZCARD', K_WAITING)
local dt_s = settle(cfg, st, now_ms)
local capacity_left = math.max(0, cfg.max_capacity - redis.call('ZCARD', K_ADMITTED))
-- The epsilon absorbs float error, so 0.1 credit added ten times admits one user.
local count = math.min(math.floor(st.credit + 1e-9), capacity_left, waiting_before, max_batch)
count = math.max(0, count)
if cfg.paused then
  -- A pause stops admission at once, even with credit saved from before it.
  count = 0
end

local reply = {'ok', expired_waiting, expired_sessions}
if count > 0 then
  -- Take the first `count` waiting ids in queue order. ZRANGE plus one range removal is
  -- cheaper than ZPOPMIN, which formats and returns every score.
  local queue_ids = redis.call('ZRANGE', K_WAITING, 0, count - 1)
  redis.call('ZREMRANGEBYRANK', K_WAITING, 0, count - 1)

  local heartbeats = fetch_in_chunks('ZMSCORE', K_HEARTBEATS, queue_ids)
  local raws = fetch_in_chunks('HMGET', K_ENTRIES, queue_ids)
  call_in_chunks('ZREM', K_HEARTBEATS, queue_ids)

  -- Every admitted entry gets the same head apart from `h`, so its parts are built once. This
  -- loop runs up to max_batch times inside one atomic call.
  local expires_text = int_str(now_ms + cfg.session_ttl_ms)
  local head_start = '{"s":"admitted","h":'
  local head_end = ',"a":' .. int_str(now_ms) .. ',"x":' .. expires_text
  local entry_pairs = {}
  local session_pairs = {}
  local pair_count = 0
  for i, queue_id in ipairs(queue_ids) do
    -- A waiting id always has an entry. One without is skipped, so it is neither admitted
    -- nor counted.
    local raw = raws[i]
    if raw then
      local heartbeat_text = heartbeats[i]
      if not heartbeat_text then
        heartbeat_text = entry_heartbeat_text(raw)
      elseif not string.find(heartbeat_text, '^%d+$') then
        heartbeat_text = int_str(tonumber(heartbeat_text))
      end
      pair_count = pair_count + 2
      entry_pairs[pair_count - 1] = queue_id
      entry_pairs[pair_count] = head_start .. heartbeat_text .. head_end
        .. string.sub(raw, fixed_start(raw))
      session_pairs[pair_count - 1] = expires_text
      session_pairs[pair_count] = queue_id
      reply[#reply + 1] = queue_id
    end
  end
  call_in_chunks('HSET', K_ENTRIES, entry_pairs)
  call_in_chunks('ZADD', K_ADMITTED, session_pairs)
end

local admitted = #reply - 3
st.credit = st.credit - admitted
if count == waiting_before or count == capacity_left then
  -- Nothing more can be released now, so the credit stops at one user. An idle or full event
  -- never saves up a burst beyond the configured rate.
  st.credit = math.min(st.credit, 1.0)
end
st.admitted_total = st.admitted_total + admitted
if waiting_before > 0 and not cfg.paused then
  local decay = math.exp(-dt_s / OBSERVED_RATE_TAU_S)
  st.obs_count = st.obs_count * decay + admitted
  st.obs_time_s = st.obs_time_s * decay + dt_s
end

finish(cfg, st)
return reply

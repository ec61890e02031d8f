-- token_revoke: revoke tokens and end the admitted sessions they stand for, with status
-- `left`, freeing their capacity at once.
-- KEYS: the eight event keys of common.lua, then the two token keys of token_common.lua.
-- ARGV[1] scope: 'jti', 'device' or 'event'; ARGV[2] the jti or device id ('' for 'event').
-- 'device' and 'event' also end admitted sessions whose token was never recorded (nobody
-- polled since the admission), and read every record of the event: O(records).
-- Returns {'ok', tokens revoked, sessions ended} or {'event_not_found'}.
local scope = ARGV[1]
local value = ARGV[2]

local cfg = load_config()
if not cfg then
  return {'event_not_found'}
end

local now_ms = clock_ms()
local st = load_state(now_ms)
purge(cfg, st, now_ms)
purge_tokens(now_ms)

local revoked = 0
local ended = 0

local function end_session(queue_id)
  local raw = redis.call('HGET', K_ENTRIES, queue_id)
  if raw and entry_status(raw) == 'admitted' then
    end_entry(queue_id, raw, 'left', now_ms)
    st.left_total = st.left_total + 1
    st.dirty = true
    ended = ended + 1
  end
end

local function revoke(jti, record)
  if not record.r then
    record.r = now_ms
    save_token(jti, record)
    revoked = revoked + 1
  end
  -- Only the session this token stands for ends: an entry with another token id is a later
  -- admission of the same device and keeps its place.
  local raw = redis.call('HGET', K_ENTRIES, record.q)
  if raw and entry_fixed(raw).t == jti then
    end_session(record.q)
  end
end

if scope == 'jti' then
  local record = load_token(value, now_ms)
  if record then
    revoke(value, record)
  end
else
  local flat = redis.call('HGETALL', K_TOKENS)
  for i = 1, #flat, 2 do
    local record = cjson.decode(flat[i + 1])
    if record.x > now_ms and (scope == 'event' or record.d == value) then
      revoke(flat[i], record)
    end
  end

  if scope == 'event' then
    local admitted = redis.call('ZRANGE', K_ADMITTED, 0, -1)
    for _, queue_id in ipairs(admitted) do
      end_session(queue_id)
    end
  else
    local live_queue_id = redis.call('HGET', K_DEVICES, value)
    if live_queue_id then
      end_session(live_queue_id)
    end
  end
end

finish(cfg, st)
return {'ok', revoked, ended}

-- Shared prelude of every Gatekeep script: key names, config and state access, purge, settle,
-- TTL refresh and reply building. RedisStore prepends the tuning constants and this file to each
-- operation file when it loads them.
--
-- KEYS (every script, in keys.EventKeys order):
--   KEYS[1] config      HASH  EventConfig fields; no expiry
--   KEYS[2] state       HASH  credit (users), last_ms, seq, obs_count, obs_time_s, *_total
--   KEYS[3] waiting     ZSET  queue_id -> bucket_rank * SEQ_SPAN + seq
--   KEYS[4] heartbeats  ZSET  queue_id -> last heartbeat ms, waiting entries only
--   KEYS[5] admitted    ZSET  queue_id -> session expiry ms, active sessions only
--   KEYS[6] entries     HASH  queue_id -> entry JSON
--   KEYS[7] devices     HASH  device_id -> queue_id of the device's live entry
--   KEYS[8] retired     ZSET  queue_id -> purge-at ms of ended entries
--
-- An entry is the JSON object {"s":status,"h":ms[,"a":ms,"x":ms][,"e":ms],"f":{...}}. The head
-- (s status, h last_heartbeat_ms, a admitted_at_ms, x session_expires_at_ms, e ended_at_ms)
-- comes first in this order and holds only a status word and integers, so scripts rewrite it
-- with string operations and a release decodes no JSON. "f" contains the fields fixed at join:
-- d device_id, u user_id (absent when none), b bucket, j joined_at_ms, t token_id, n nonce.
-- While an entry waits, `h` is stale and the heartbeats ZSET has the current value; `h` is
-- written when the entry leaves the waiting list.
--
-- Times are ms since the Unix epoch from redis TIME. Redis 7 replicates script effects, so
-- reading TIME before writing is safe.

local K_CONFIG = KEYS[1]
local K_STATE = KEYS[2]
local K_WAITING = KEYS[3]
local K_HEARTBEATS = KEYS[4]
local K_ADMITTED = KEYS[5]
local K_ENTRIES = KEYS[6]
local K_DEVICES = KEYS[7]
local K_RETIRED = KEYS[8]

-- Items per variadic command, which keeps `unpack` far below Lua's C stack limit of 8000.
local CHUNK = 1000

local function clock_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- Round half to even, as Python's round() does, so durations match the memory store.
local function round_half_even(x)
  local floor = math.floor(x)
  local fraction = x - floor
  if fraction > 0.5 or (fraction == 0.5 and floor % 2 == 1) then
    return floor + 1
  end
  return floor
end

-- Format an integer-valued number without an exponent (score bounds, ZADD scores).
local function int_str(x)
  return string.format('%d', x)
end

-- Format a float so Python's float() reads back the same double.
local function float_str(x)
  return string.format('%.17g', x)
end

-- Mirror of constants.release_burst: the cap on accumulated credit, in users.
local function release_burst(release_rate)
  return math.max(1.0, release_rate * RELEASE_BURST_S)
end

local function pairs_to_table(flat)
  local result = {}
  for i = 1, #flat, 2 do
    result[flat[i]] = flat[i + 1]
  end
  return result
end

-- Run a variadic command on `items` (a flat list) in CHUNK-sized calls. CHUNK is even, so
-- field/value pairs never split.
local function call_in_chunks(command, key, items)
  for first = 1, #items, CHUNK do
    local last = math.min(first + CHUNK - 1, #items)
    redis.call(command, key, unpack(items, first, last))
  end
end

-- Like call_in_chunks for commands that return one value per item (HMGET, ZMSCORE).
local function fetch_in_chunks(command, key, items)
  local values = {}
  for first = 1, #items, CHUNK do
    local last = math.min(first + CHUNK - 1, #items)
    local part = redis.call(command, key, unpack(items, first, last))
    for i = 1, #part do
      values[#values + 1] = part[i]
    end
  end
  return values
end

-- Batched scripts (store/pipeline.py): return the shared arguments and the calls, each as
-- {keys = {...}, args = {...}}, read from the batch layout of KEYS and ARGV.
local function batch_calls()
  local shared_key_count = tonumber(ARGV[1])
  local shared_arg_count = tonumber(ARGV[2])
  local shared = {}
  for i = 1, shared_arg_count do
    shared[i] = ARGV[2 + i]
  end

  local calls = {}
  local next_key = shared_key_count + 1
  local next_arg = 3 + shared_arg_count
  while next_arg <= #ARGV do
    local key_count = tonumber(ARGV[next_arg])
    local arg_count = tonumber(ARGV[next_arg + 1])
    local call = {keys = {}, args = {}}
    for i = 1, key_count do
      call.keys[i] = KEYS[next_key + i - 1]
    end
    for i = 1, arg_count do
      call.args[i] = ARGV[next_arg + 1 + i]
    end
    calls[#calls + 1] = call
    next_key = next_key + key_count
    next_arg = next_arg + 2 + arg_count
  end
  return shared, calls
end

-- Config

-- Config fields every script may read. `document` is the whole config as JSON, which replies
-- carry back for Python to decode, and `revision` names the document's version.
local CONFIG_FIELDS = {'event_id', 'enabled', 'paused', 'max_queue_size', 'max_capacity',
  'release_rate', 'session_ttl_s', 'heartbeat_timeout_s', 'buckets', 'mode', 'opens_at_ms',
  'closes_at_ms', 'stock', 'max_session_s', 'document', 'revision'}

-- Return the fields of a hash named in `fields` as a table, with nil for a missing one.
local function hash_fields(key, fields)
  local values = redis.call('HMGET', key, unpack(fields))
  local raw = {}
  for i, name in ipairs(fields) do
    if values[i] then
      raw[name] = values[i]
    end
  end
  return raw
end

-- Read the config, or only its `fields` when given (they must include `enabled`); nil when
-- the event does not exist.
local function load_config(fields)
  local raw = hash_fields(K_CONFIG, fields or CONFIG_FIELDS)
  if not raw.enabled then
    return nil
  end
  return {
    raw = raw,
    enabled = raw.enabled == '1',
    paused = raw.paused == '1',
    max_queue_size = tonumber(raw.max_queue_size or ''),
    max_capacity = tonumber(raw.max_capacity or ''),
    release_rate = tonumber(raw.release_rate),
    session_ttl_ms = round_half_even(tonumber(raw.session_ttl_s) * 1000),
    heartbeat_timeout_ms = round_half_even(tonumber(raw.heartbeat_timeout_s) * 1000),
    buckets_json = raw.buckets,
  }
end

-- Return the 0-based rank of `bucket` in the event's priority order, or nil when unknown.
local function bucket_rank(cfg, bucket)
  for index, name in ipairs(cjson.decode(cfg.buckets_json)) do
    if name == bucket then
      return index - 1
    end
  end
  return nil
end

-- State

local STATE_FIELDS = {'credit', 'last_ms', 'obs_count', 'obs_time_s', 'admitted_total',
  'expired_total', 'left_total', 'ttl_refreshed_ms'}

-- Read the state hash. A missing hash means a brand-new event with no credit, settled at now.
local function load_state(now_ms)
  local raw = hash_fields(K_STATE, STATE_FIELDS)
  return {
    credit = tonumber(raw.credit) or 0,
    last_ms = tonumber(raw.last_ms) or now_ms,
    obs_count = tonumber(raw.obs_count) or 0,
    obs_time_s = tonumber(raw.obs_time_s) or 0,
    admitted_total = tonumber(raw.admitted_total) or 0,
    expired_total = tonumber(raw.expired_total) or 0,
    left_total = tonumber(raw.left_total) or 0,
    ttl_refreshed_ms = tonumber(raw.ttl_refreshed_ms) or 0,
    dirty = raw.last_ms == nil,
  }
end

-- Write the state fields kept in `st`. Only join changes `seq`, with HINCRBY.
local function save_state(st)
  redis.call('HSET', K_STATE,
    'credit', float_str(st.credit),
    'last_ms', int_str(st.last_ms),
    'obs_count', float_str(st.obs_count),
    'obs_time_s', float_str(st.obs_time_s),
    'admitted_total', int_str(st.admitted_total),
    'expired_total', int_str(st.expired_total),
    'left_total', int_str(st.left_total))
end

-- Add the credit earned since the last settlement, none while paused, and return the seconds
-- that passed. A clock that went back counts as no time.
local function settle(cfg, st, now_ms)
  local dt_s = math.max(0, now_ms - st.last_ms) / 1000
  if not cfg.paused then
    st.credit = math.min(st.credit + dt_s * cfg.release_rate, release_burst(cfg.release_rate))
  end
  st.last_ms = now_ms
  st.dirty = true
  return dt_s
end

-- Return the credit a settlement at `now_ms` would give, without changing `st`.
local function credit_now(cfg, st, now_ms)
  if cfg.paused then
    return st.credit
  end
  local dt_s = math.max(0, now_ms - st.last_ms) / 1000
  return math.min(st.credit + dt_s * cfg.release_rate, release_burst(cfg.release_rate))
end

-- Return the lifetime of the event's non-config keys: the longest-lived thing they can contain
-- (a session or a heartbeat window), then the retention of the ended entry.
local function event_ttl_ms(cfg)
  return math.max(cfg.session_ttl_ms, cfg.heartbeat_timeout_ms) + ENTRY_RETENTION_MS
end

-- Give every non-config key the event's lifetime.
-- NOTE: an event that no script touches for that long loses its totals and sequence counter
-- too. That is harmless only while the release loop keeps calling every event.
-- The state hash records when, so a poll can tell that the TTLs are fresh without a PTTL.
local function refresh_ttl(cfg)
  local ttl_ms = event_ttl_ms(cfg)
  redis.call('HSET', K_STATE, 'ttl_refreshed_ms', int_str(clock_ms()))
  for i = 2, #KEYS do
    redis.call('PEXPIRE', KEYS[i], ttl_ms)
  end
end

-- True while the last full refresh is less than TTL_REFRESH_SLACK_MS old. Every key got the
-- same TTL then, so each still lives at least the event's lifetime minus the slack, which is
-- far less than ENTRY_RETENTION_MS.
local function ttl_is_fresh(st, now_ms)
  return now_ms - st.ttl_refreshed_ms < TTL_REFRESH_SLACK_MS
end

-- Refresh the TTLs once they ran down by more than the slack, for scripts that created no key
-- and wrote only heartbeats or session expiries.
local function refresh_ttl_if_stale(cfg, st, now_ms)
  if not ttl_is_fresh(st, now_ms) then
    refresh_ttl(cfg)
  end
end

-- Persist the state when it changed and refresh the TTLs. Every script that may have written
-- event keys calls this before it returns.
local function finish(cfg, st)
  if st.dirty then
    save_state(st)
  end
  refresh_ttl(cfg)
end

-- Entries

-- Return the JSON text of a new waiting entry from `fixed`, the fields fixed at join.
local function new_entry_text(now_ms, fixed)
  return '{"s":"waiting","h":' .. int_str(now_ms) .. ',"f":' .. cjson.encode(fixed) .. '}'
end

-- Return the status word of an entry's JSON text.
local function entry_status(raw)
  return string.match(raw, '^{"s":"([%a_]+)"')
end

-- Return the heartbeat ms written in an entry's head, as digits.
local function entry_heartbeat_text(raw)
  return string.match(raw, '^{"s":"[%a_]+","h":(%d+)')
end

-- Return the position of ',"f":' in an entry's JSON text. The head contains only a status
-- word and integers, so the first match starts the fixed part.
local function fixed_start(raw)
  return (string.find(raw, ',"f":', 1, true))
end

-- Return the device id of an entry's JSON text.
local function entry_device_id(raw)
  return cjson.decode(string.sub(raw, fixed_start(raw) + string.len(',"f":'), -2)).d
end

-- Return the JSON text of a live entry after it ends with `status` at `now_ms`. A waiting
-- entry's head becomes {"s","h","e"}, with `heartbeat_text` as its current heartbeat. An
-- admitted entry keeps "h", "a" and "x".
local function ended_entry_text(raw, status, now_ms, heartbeat_text)
  local fixed_at = fixed_start(raw)
  local kept_head
  if heartbeat_text then
    kept_head = ',"h":' .. heartbeat_text
  else
    kept_head = string.sub(raw, string.find(raw, ',', 1, true), fixed_at - 1)
  end
  return '{"s":"' .. status .. '"' .. kept_head .. ',"e":' .. int_str(now_ms)
    .. string.sub(raw, fixed_at)
end

-- Move a live entry to an ended status, freeing its place in the queue or its session, and
-- keep it readable for ENTRY_RETENTION_MS.
local function end_entry(queue_id, raw, status, now_ms)
  local heartbeat_text = nil
  if entry_status(raw) == 'waiting' then
    local heartbeat = redis.call('ZSCORE', K_HEARTBEATS, queue_id)
    heartbeat_text = heartbeat and int_str(tonumber(heartbeat)) or entry_heartbeat_text(raw)
    redis.call('ZREM', K_WAITING, queue_id)
    redis.call('ZREM', K_HEARTBEATS, queue_id)
  else
    redis.call('ZREM', K_ADMITTED, queue_id)
  end

  -- A device link names the device's newest live entry, so keep it when it names another.
  local device_id = entry_device_id(raw)
  if redis.call('HGET', K_DEVICES, device_id) == queue_id then
    redis.call('HDEL', K_DEVICES, device_id)
  end

  redis.call('HSET', K_ENTRIES, queue_id, ended_entry_text(raw, status, now_ms, heartbeat_text))
  redis.call('ZADD', K_RETIRED, int_str(now_ms + ENTRY_RETENTION_MS), queue_id)
end

-- Expire a batch of live entries: `queue_ids` are all waiting (with `heartbeats`, their
-- heartbeat ms as strings) or, when `heartbeats` is nil, all admitted. Uses a fixed number of
-- bulk commands, so a purge of PURGE_BATCH entries stays short. Returns how many ids had an
-- entry; an id without one is only dropped from the index.
local function expire_batch(queue_ids, heartbeats, now_ms)
  if #queue_ids == 0 then
    return 0
  end

  local raws = fetch_in_chunks('HMGET', K_ENTRIES, queue_ids)
  if heartbeats then
    call_in_chunks('ZREM', K_WAITING, queue_ids)
    call_in_chunks('ZREM', K_HEARTBEATS, queue_ids)
  else
    call_in_chunks('ZREM', K_ADMITTED, queue_ids)
  end

  local retire_text = int_str(now_ms + ENTRY_RETENTION_MS)
  local entry_pairs = {}
  local retired_pairs = {}
  local device_ids = {}
  local owners = {}
  for i, queue_id in ipairs(queue_ids) do
    local raw = raws[i]
    if raw then
      local heartbeat_text = heartbeats and int_str(tonumber(heartbeats[i]))
      entry_pairs[#entry_pairs + 1] = queue_id
      entry_pairs[#entry_pairs + 1] = ended_entry_text(raw, 'expired', now_ms, heartbeat_text)
      retired_pairs[#retired_pairs + 1] = retire_text
      retired_pairs[#retired_pairs + 1] = queue_id
      device_ids[#device_ids + 1] = entry_device_id(raw)
      owners[#owners + 1] = queue_id
    end
  end
  if #owners == 0 then
    return 0
  end
  call_in_chunks('HSET', K_ENTRIES, entry_pairs)
  call_in_chunks('ZADD', K_RETIRED, retired_pairs)

  -- Drop a device link only while it still names the expired entry, as end_entry does.
  local links = fetch_in_chunks('HMGET', K_DEVICES, device_ids)
  local unlinked = {}
  for i, device_id in ipairs(device_ids) do
    if links[i] == owners[i] then
      unlinked[#unlinked + 1] = device_id
    end
  end
  if #unlinked > 0 then
    call_in_chunks('HDEL', K_DEVICES, unlinked)
  end
  return #owners
end

-- True when purge would change a position or a count: a waiting entry went silent or a
-- session ended. Retired entries past their retention change neither, so they wait for the
-- next full purge.
local function purge_due(cfg, now_ms)
  local cutoff_ms = now_ms - cfg.heartbeat_timeout_ms
  return #redis.call('ZRANGEBYSCORE', K_HEARTBEATS, '-inf', '(' .. int_str(cutoff_ms),
      'LIMIT', 0, 1) > 0
    or #redis.call('ZRANGEBYSCORE', K_ADMITTED, '-inf', int_str(now_ms), 'LIMIT', 0, 1) > 0
end

-- Expire silent waiting entries and ended sessions, then drop retired entries that are due,
-- at most PURGE_BATCH of each. Returns (waiting entries expired, sessions expired).
local function purge(cfg, st, now_ms)
  local cutoff_ms = now_ms - cfg.heartbeat_timeout_ms
  local silent = redis.call('ZRANGEBYSCORE', K_HEARTBEATS, '-inf', '(' .. int_str(cutoff_ms),
    'WITHSCORES', 'LIMIT', 0, PURGE_BATCH)
  local silent_ids = {}
  local silent_heartbeats = {}
  for i = 1, #silent, 2 do
    silent_ids[#silent_ids + 1] = silent[i]
    silent_heartbeats[#silent_heartbeats + 1] = silent[i + 1]
  end
  local expired_waiting = expire_batch(silent_ids, silent_heartbeats, now_ms)

  local ended = redis.call('ZRANGEBYSCORE', K_ADMITTED, '-inf', int_str(now_ms),
    'LIMIT', 0, PURGE_BATCH)
  local expired_sessions = expire_batch(ended, nil, now_ms)

  if expired_waiting + expired_sessions > 0 then
    st.expired_total = st.expired_total + expired_waiting + expired_sessions
    st.dirty = true
  end

  local due = redis.call('ZRANGEBYSCORE', K_RETIRED, '-inf', int_str(now_ms),
    'LIMIT', 0, PURGE_BATCH)
  if #due > 0 then
    call_in_chunks('HDEL', K_ENTRIES, due)
    call_in_chunks('ZREM', K_RETIRED, due)
  end
  return expired_waiting, expired_sessions
end

-- Replies

-- Return {document or false, paused '1'|'0', revision or false}. The document is left out when
-- the caller named this revision as the one it has (cfg.known_revision).
local function config_reply(cfg)
  local revision = cfg.raw.revision
  if revision and revision == cfg.known_revision then
    return {false, cfg.raw.paused, revision}
  end
  local document = cfg.raw.document or redis.call('HGET', K_CONFIG, 'document')
  return {document, cfg.raw.paused, revision or false}
end

-- Return the event snapshot as {config_reply, now_ms, waiting_count, admitted_active,
-- release_credit, observed_rate_per_s or nil, admitted_total, expired_total, left_total}.
-- Floats travel as strings because Redis truncates Lua numbers in replies to integers.
local function snapshot_reply(cfg, st, now_ms)
  local observed = false
  if st.obs_time_s >= OBSERVED_RATE_MIN_WINDOW_S then
    observed = float_str(st.obs_count / st.obs_time_s)
  end
  return {
    config_reply(cfg),
    now_ms,
    redis.call('ZCARD', K_WAITING),
    redis.call('ZCARD', K_ADMITTED),
    float_str(credit_now(cfg, st, now_ms)),
    observed,
    st.admitted_total,
    st.expired_total,
    st.left_total,
  }
end

-- Return {queue_id, entry JSON, position or nil, current heartbeat ms or nil}, or nil when the
-- entry does not exist. Position and heartbeat are set only while the entry waits.
local function entry_reply(queue_id)
  local raw = redis.call('HGET', K_ENTRIES, queue_id)
  if not raw then
    return nil
  end
  local heartbeat = redis.call('ZSCORE', K_HEARTBEATS, queue_id)
  local rank = redis.call('ZRANK', K_WAITING, queue_id)
  if not heartbeat or not rank then
    return {queue_id, raw, false, false}
  end
  return {queue_id, raw, rank + 1, heartbeat}
end

-- touch: a batch of status polls and heartbeats of one event, in the batch layout of
-- store/pipeline.py. Each call counts against its rate limits, then returns its entry and,
-- when the entry is waiting, records the call as its heartbeat. A waiting entry of an event
-- that closed or sold out ends with that status instead. With renew = '1', an admitted session
-- is renewed: its expiry moves to now + session_ttl_s, but never past admitted_at +
-- max_session_s, and never earlier than it was.
--
-- Shared KEYS: the eight event keys described in common.lua, then the three of control.lua.
-- Shared ARGV: the config revision the caller has ('' for none), so replies can leave it out.
-- Each call's own KEYS: one STRING per rate limit, "WINDOW CURRENT PREVIOUS": the index of the
--   window it counts, the count in that window and the count in the window before.
-- Each call's own ARGV: queue_id, renew ('1' or '0'), then amount and window_ms per limit.
-- A limit is named by its 1-based index among the call's limits.
--
-- The calls run in order at one clock reading; each reads the writes of the calls before it.
-- Replies, one per call: {'ok', entry reply, snapshot reply, tightest limit or false},
-- {'rate_limited', index, remaining, reset_s} (nothing else changed), or
-- {'entry_not_found'} (also for an unknown event).
local shared, calls = batch_calls()

-- The config fields a poll reads; the document is read only when the caller lacks it.
local cfg = load_config({'enabled', 'paused', 'release_rate', 'session_ttl_s',
  'heartbeat_timeout_s', 'closes_at_ms', 'stock', 'max_session_s', 'revision'})
if not cfg then
  local replies = {}
  for i = 1, #calls do
    replies[i] = {'entry_not_found'}
  end
  return replies
end
cfg.known_revision = shared[1]
local now_ms = clock_ms()

-- Rate limits

-- The counters of every limit key of the batch, read with one MGET and written once at the
-- end: key -> {window, current, previous, px_ms, changed}. px_ms is set once a count starts a
-- window that Redis does not have yet, so the write starts the key's lifetime again.
-- Otherwise the write keeps the lifetime. Only changed counters are written.
local counters = {}

local function read_counters()
  local keys = {}
  for _, call in ipairs(calls) do
    for _, key in ipairs(call.keys) do
      keys[#keys + 1] = key
    end
  end
  if #keys == 0 then
    return
  end
  local stored = redis.call('MGET', unpack(keys))
  for i, key in ipairs(keys) do
    if not counters[key] then
      local window, current, previous = nil, 0, 0
      if stored[i] then
        local w, c, p = string.match(stored[i], '^(%d+) (%d+) (%d+)$')
        window, current, previous = tonumber(w), tonumber(c), tonumber(p)
      end
      counters[key] = {window, current, previous, false, false}
    end
  end
end

-- Return the ms until counts of `current` and `previous` leave room for one more call, as
-- ratewindow._wait_ms does.
local function wait_ms(amount, current, previous, left_ms, window_ms)
  local room = amount - 1 - current
  if room >= 0 then
    return left_ms - room * window_ms / previous
  elseif current > 0 then
    return left_ms + window_ms * (1 - (amount - 1) / current)
  end
  return left_ms + window_ms
end

-- The arithmetic of gatekeep.ratewindow.count_window, in the same order, so both stores agree.
-- Returns the outcomes of one call's limits, {index, remaining, reset_s, allowed, counted}
-- each, where `counted` is the key's counters if the call is counted.
local function count_limits(call)
  local outcomes = {}
  for i, key in ipairs(call.keys) do
    local amount = tonumber(call.args[2 * i + 1])
    local window_ms = tonumber(call.args[2 * i + 2])

    local window = math.floor(now_ms / window_ms)
    local left_ms = window_ms - (now_ms - window * window_ms)
    local stored = counters[key]
    local current, previous = 0, 0
    local px_ms = 2 * window_ms  -- a new window starts the key's lifetime again
    if stored[1] == window then
      current, previous, px_ms = stored[2], stored[3], stored[4]
    elseif stored[1] == window - 1 then
      previous = stored[2]
    end

    local weighted = previous * left_ms / window_ms + current
    if weighted + 1 <= amount then
      local remaining = math.floor(amount - weighted - 1)
      local reset_ms = left_ms
      if remaining == 0 then
        reset_ms = wait_ms(amount, current + 1, previous, left_ms, window_ms)
      end
      local counted = {window, current + 1, previous, px_ms, true}
      outcomes[i] = {i, remaining, math.max(1, math.ceil(reset_ms / 1000)), true, counted}
    else
      local waited_ms = wait_ms(amount, current, previous, left_ms, window_ms)
      outcomes[i] = {i, 0, math.max(1, math.ceil(waited_ms / 1000)), false}
    end
  end
  return outcomes
end

-- Count one call against every one of its limits, after count_limits allowed them all.
local function add_counts(call, outcomes)
  for i, key in ipairs(call.keys) do
    counters[key] = outcomes[i][5]
  end
end

local function write_counters()
  for key, stored in pairs(counters) do
    if stored[5] then
      -- The values are small integers, which concatenation writes without an exponent.
      local text = stored[1] .. ' ' .. stored[2] .. ' ' .. stored[3]
      if stored[4] then
        redis.call('SET', key, text, 'PX', stored[4])
      else
        redis.call('SET', key, text, 'KEEPTTL')
      end
    end
  end
end

-- First rejected outcome, else the one with the fewest calls left, as ratewindow.tightest.
local function tightest(outcomes)
  local best = nil
  for _, outcome in ipairs(outcomes) do
    if not outcome[4] then
      return outcome
    end
    if not best or outcome[2] < best[2] then
      best = outcome
    end
  end
  return best
end

-- Event state, read once and again after a call that changed it

local st, ctl, fast, snapshot

local function load_event_state()
  st = load_state(now_ms)
  -- ending_status reads the stock only. Without stock in the config nothing is sold out, so
  -- the control hash is not read (the release step applies a removed stock to it).
  ctl = {}
  if (cfg.raw.stock or '') == '' then
    load_controller_config(cfg)
  else
    ctl = load_control(cfg, {'stock_config', 'stock_left'})
  end
  -- True while a waiting entry's poll has nothing else to do: no state to create, no stock
  -- to apply, nothing ending or to purge, no TTL to refresh.
  fast = not st.dirty and not ctl.written and not ending_status(cfg, ctl, now_ms)
    and not purge_due(cfg, now_ms) and ttl_is_fresh(st, now_ms)
  snapshot = nil
end

-- A reply that carries the config document makes the later replies of the batch leave it
-- out: the caller keeps the document by revision.
local function reply_snapshot()
  local reply = snapshot_reply(cfg, st, now_ms)
  if reply[1][1] then
    cfg.known_revision = cfg.raw.revision
  end
  return reply
end

-- The snapshot is the same for every poll that changed no count.
local function shared_snapshot()
  if snapshot then
    return snapshot
  end
  local reply = reply_snapshot()
  if not reply[1][1] then
    snapshot = reply
  end
  return reply
end

-- Touch one entry. The common case comes first: a waiting entry that polls while the event
-- runs, which writes only the heartbeat.
local function touch_entry(queue_id, renew)
  local raw = redis.call('HGET', K_ENTRIES, queue_id)
  if fast and raw and entry_status(raw) == 'waiting' then
    redis.call('ZADD', K_HEARTBEATS, 'XX', int_str(now_ms), queue_id)
    local rank = redis.call('ZRANK', K_WAITING, queue_id)
    if rank then
      return {'ok', {queue_id, raw, rank + 1, now_ms}, shared_snapshot()}
    end
  end

  purge(cfg, st, now_ms)
  raw = redis.call('HGET', K_ENTRIES, queue_id)  -- the purge may have ended it
  local created_keys = false
  if raw then
    local status = entry_status(raw)
    if status == 'waiting' then
      local ending = ending_status(cfg, ctl, now_ms)
      if ending then
        end_entry(queue_id, raw, ending, now_ms)
        created_keys = true
      else
        redis.call('ZADD', K_HEARTBEATS, 'XX', int_str(now_ms), queue_id)
      end
    elseif status == 'admitted' and renew and cfg.max_session_ms then
      local admitted_at_ms = tonumber(string.match(raw, ',"a":(%d+)'))
      local expires_at_ms = tonumber(string.match(raw, ',"x":(%d+)'))
      local renewed_ms = math.min(now_ms + cfg.session_ttl_ms, admitted_at_ms + cfg.max_session_ms)
      if renewed_ms > expires_at_ms then
        redis.call('ZADD', K_ADMITTED, 'XX', int_str(renewed_ms), queue_id)
        local renewed_raw = string.gsub(raw, ',"x":%d+', ',"x":' .. int_str(renewed_ms), 1)
        redis.call('HSET', K_ENTRIES, queue_id, renewed_raw)
      end
    end
  end

  -- A plain poll created no key, so its TTL refresh can wait; anything else refreshes now.
  if st.dirty or created_keys then
    finish(cfg, st)
  else
    refresh_ttl_if_stale(cfg, st, now_ms)
  end
  if ctl.written or created_keys then
    refresh_control_ttl()
  end

  local reply = {'entry_not_found'}
  if raw then
    reply = {'ok', entry_reply(queue_id), reply_snapshot()}
  end
  load_event_state()  -- this call may have changed what the next one reads
  return reply
end

local function touch_call(call)
  local outcomes = count_limits(call)
  local limit = tightest(outcomes)
  if limit and not limit[4] then
    return {'rate_limited', limit[1], limit[2], limit[3]}
  end

  local reply = touch_entry(call.args[1], call.args[2] == '1')
  add_counts(call, outcomes)
  if reply[1] == 'ok' then
    reply[4] = limit and {limit[1], limit[2], limit[3]} or false
  end
  return reply
end

read_counters()
load_event_state()
local replies = {}
for i, call in ipairs(calls) do
  local ok, reply = pcall(touch_call, call)
  if not ok then
    -- A failed call fails alone. An error raised by redis.call is already an error reply.
    reply = type(reply) == 'table' and reply or redis.error_reply(tostring(reply))
  end
  replies[i] = reply
end
write_counters()
return replies

-- touch: count the call against its rate limits, then return an entry and, when it is waiting,
-- record this call as its heartbeat. A waiting entry of an event that closed or sold out ends
-- with that status instead. With ARGV[2] = '1', an admitted session is renewed: its expiry
-- moves to now + session_ttl_s, but never past admitted_at + max_session_s, and never earlier
-- than it was.
-- KEYS: the eight event keys described in common.lua, the three of control.lua, then one
--   STRING per rate limit: "WINDOW CURRENT PREVIOUS", the index of the window it counts, the
--   count in that window and the count in the window before.
-- ARGV[1] queue_id, ARGV[2] renew: '1' to renew an admitted session, '0' otherwise,
-- ARGV[3] the config revision the caller has ('' for none), so the reply can leave it out,
-- ARGV[4] number of rate limits, then for each: amount, window_ms.
-- A limit is named by its 1-based index in ARGV in replies, {index, remaining, reset_s}.
-- Returns {'ok', entry reply, snapshot reply, tightest limit or false},
-- {'rate_limited', index, remaining, reset_s} (nothing else changed), or
-- {'entry_not_found'} (also for an unknown event).
local queue_id = ARGV[1]
local renew = ARGV[2] == '1'
local known_revision = ARGV[3]
local limit_count = tonumber(ARGV[4]) or 0
local FIRST_LIMIT_KEY = 12

-- The arithmetic of gatekeep.ratewindow.count_window, in the same order, so both stores agree.
-- Returns the outcomes ({index, remaining, reset_s, allowed}) and the counters to write.
local function count_limits(now_ms)
  local outcomes = {}
  local writes = {}
  if limit_count == 0 then
    return outcomes, writes
  end
  local last_key = FIRST_LIMIT_KEY + limit_count - 1
  local all_stored = redis.call('MGET', unpack(KEYS, FIRST_LIMIT_KEY, last_key))
  for i = 1, limit_count do
    local key = KEYS[FIRST_LIMIT_KEY + i - 1]
    local amount = tonumber(ARGV[2 * i + 3])
    local window_ms = tonumber(ARGV[2 * i + 4])

    local window = math.floor(now_ms / window_ms)
    local left_ms = window_ms - (now_ms - window * window_ms)
    local stored = all_stored[i]
    local stored_window, stored_current, stored_previous = nil, 0, 0
    if stored then
      local w, c, p = string.match(stored, '^(%d+) (%d+) (%d+)$')
      stored_window, stored_current, stored_previous = tonumber(w), tonumber(c), tonumber(p)
    end
    local current, previous = 0, 0
    if stored_window == window then
      current, previous = stored_current, stored_previous
    elseif stored_window == window - 1 then
      previous = stored_current
    end

    local weighted = previous * left_ms / window_ms + current
    if weighted + 1 <= amount then
      local remaining = math.floor(amount - weighted - 1)
      outcomes[i] = {i, remaining, math.max(1, math.ceil(left_ms / 1000)), true}
      writes[i] = {key, window, current + 1, previous, 2 * window_ms, stored_window == window}
    else
      local room = amount - 1 - current
      local wait_ms
      if room >= 0 then
        wait_ms = left_ms - room * window_ms / previous
      elseif current > 0 then
        wait_ms = left_ms + window_ms * (1 - (amount - 1) / current)
      else
        wait_ms = left_ms + window_ms
      end
      outcomes[i] = {i, 0, math.max(1, math.ceil(wait_ms / 1000)), false}
    end
  end
  return outcomes, writes
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

-- The config fields a poll reads; the document is read only when the caller lacks it.
local cfg = load_config({'enabled', 'paused', 'release_rate', 'session_ttl_s',
  'heartbeat_timeout_s', 'closes_at_ms', 'stock', 'max_session_s', 'revision'})
if not cfg then
  return {'entry_not_found'}
end
cfg.known_revision = known_revision

local now_ms = clock_ms()
local outcomes, limit_writes = count_limits(now_ms)
local limit = tightest(outcomes)
if limit and not limit[4] then
  return {'rate_limited', limit[1], limit[2], limit[3]}
end

-- Writes the counters of the limits the call was counted against; call it once, last.
local function write_limits()
  for _, write in pairs(limit_writes) do
    -- The values are small integers, which concatenation writes without an exponent.
    local counters = write[2] .. ' ' .. write[3] .. ' ' .. write[4]
    if write[6] then
      redis.call('SET', write[1], counters, 'KEEPTTL')  -- set with PX when the window began
    else
      redis.call('SET', write[1], counters, 'PX', write[5])
    end
  end
end

local function limit_reply()
  if not limit then
    return false
  end
  return {limit[1], limit[2], limit[3]}
end

local st = load_state(now_ms)
-- ending_status reads the stock only. Without stock in the config nothing is sold out, so the
-- control hash is not read (the release step applies a removed stock to it).
local ctl = {}
if (cfg.raw.stock or '') == '' then
  load_controller_config(cfg)
else
  ctl = load_control(cfg, {'stock_config', 'stock_left'})
end
local raw = redis.call('HGET', K_ENTRIES, queue_id)

-- The common case first: a waiting entry polls while the event runs and nothing else is due
-- (no state to create, no stock to apply, nothing to purge, no TTL to refresh). It writes only
-- the heartbeat and the limit counters, and the rest of the script is never reached.
if raw and entry_status(raw) == 'waiting' and not st.dirty and not ctl.written
    and not ending_status(cfg, ctl, now_ms) and not purge_due(cfg, now_ms)
    and ttl_is_fresh(st, now_ms) then
  redis.call('ZADD', K_HEARTBEATS, 'XX', int_str(now_ms), queue_id)
  local rank = redis.call('ZRANK', K_WAITING, queue_id)
  if rank then
    write_limits()
    return {'ok', {queue_id, raw, rank + 1, now_ms}, snapshot_reply(cfg, st, now_ms), limit_reply()}
  end
end

-- gatekeep: rest of the prelude

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
write_limits()

if not raw then
  return {'entry_not_found'}
end
return {'ok', entry_reply(queue_id), snapshot_reply(cfg, st, now_ms), limit_reply()}

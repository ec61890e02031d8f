-- touch: return an entry and, when it is waiting, record this call as its heartbeat. A waiting
-- entry of an event that closed or sold out ends with that status instead. With ARGV[2] = '1',
-- an admitted session is renewed: its expiry moves to now + session_ttl_s, but never past
-- admitted_at + max_session_s, and never earlier than it was.
-- KEYS: the eight event keys described in common.lua, then the three of control.lua.
-- ARGV[1] queue_id, ARGV[2] renew: '1' to renew an admitted session, '0' otherwise.
-- Returns {'ok', entry reply, snapshot reply} or {'entry_not_found'} (also for an unknown event).
local queue_id = ARGV[1]
local renew = ARGV[2] == '1'

local cfg = load_config()
if not cfg then
  return {'entry_not_found'}
end

local now_ms = clock_ms()
local st = load_state(now_ms)
purge(cfg, st, now_ms)
local ctl = load_control(cfg)

local raw = redis.call('HGET', K_ENTRIES, queue_id)
if not raw then
  finish(cfg, st)
  return {'entry_not_found'}
end

local status = entry_status(raw)
if status == 'waiting' then
  local ending = ending_status(cfg, ctl, now_ms)
  if ending then
    end_entry(queue_id, raw, ending, now_ms)
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

finish(cfg, st)
refresh_control_ttl()
return {'ok', entry_reply(queue_id), snapshot_reply(cfg, st, now_ms)}

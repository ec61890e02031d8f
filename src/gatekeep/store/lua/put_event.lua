-- put_event: create the event or replace its configuration. The credit is first settled at the
-- old configuration, then capped at the new rate's burst.
-- KEYS: the eight event keys described in common.lua.
-- ARGV: the new config as field, value pairs (floats as repr strings, booleans '1'/'0',
-- buckets as a JSON list).
-- Returns {'ok', created 1|0}.
local config_pairs = ARGV

local old_cfg = load_config()
local now_ms = clock_ms()
local st = load_state(now_ms)
if old_cfg then
  settle(old_cfg, st, now_ms)
else
  -- A brand-new event starts with no credit, settled at now.
  st.credit = 0
  st.last_ms = now_ms
  st.dirty = true
end

redis.call('HSET', K_CONFIG, unpack(config_pairs))
local cfg = load_config()
st.credit = math.min(st.credit, release_burst(cfg.release_rate))

finish(cfg, st)
if old_cfg then
  return {'ok', 0}
end
return {'ok', 1}

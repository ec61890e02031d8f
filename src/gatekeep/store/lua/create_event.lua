-- create_event: create the event only when no event has its id.
-- KEYS: the eight event keys described in common.lua.
-- ARGV: the config as field, value pairs (floats as repr strings, booleans '1'/'0', buckets as
-- a JSON list).
-- Returns {'ok', created 1|0}. An existing event is left unchanged.
local config_pairs = ARGV

if redis.call('EXISTS', K_CONFIG) == 1 then
  return {'ok', 0}
end

local now_ms = clock_ms()
redis.call('HSET', K_CONFIG, unpack(config_pairs))
local cfg = load_config()

-- A brand-new event starts with no credit, settled at now.
local st = load_state(now_ms)
st.credit = 0
st.last_ms = now_ms
st.dirty = true

finish(cfg, st)
return {'ok', 1}

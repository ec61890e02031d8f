-- stock: decrement or set the remaining stock of an event.
-- KEYS: the eight event keys described in common.lua, then the three of control.lua.
-- ARGV[1] operation: 'decrement' or 'set'. ARGV[2] quantity: a whole number >= 0.
-- Returns {'ok', remaining}, {'no_stock'} when the event has no `stock`, or {'event_not_found'}.
-- A decrement below zero stops at zero. The next release step ends the waiting entries.
local operation = ARGV[1]
local quantity = tonumber(ARGV[2])

local cfg = load_config()
if not cfg then
  return {'event_not_found'}
end

local now_ms = clock_ms()
local st = load_state(now_ms)
local ctl = load_control(cfg)
local left = stock_left(ctl)
if left == nil then
  return {'no_stock'}
end

if operation == 'decrement' then
  left = math.max(0, left - quantity)
else
  left = quantity
end
redis.call('HSET', K_CONTROL, 'stock_left', int_str(left))
finish(cfg, st)
refresh_control_ttl()
return {'ok', left}

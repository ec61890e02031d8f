-- delete_event: remove an event's configuration and every queue key this script knows of.
-- KEYS: the eight event keys described in common.lua, then KEYS[9] wait samples (LIST) and
-- KEYS[10] priority codes (HASH).
-- ARGV: none.
-- Returns {'ok', waiting count, admitted count} (what was dropped) or {'event_not_found'}.
-- The caller removes the id from the event index and any other `gk:{E}:*` key afterwards;
-- once the config is gone every other script answers event_not_found, so none recreates them.
if redis.call('EXISTS', K_CONFIG) == 0 then
  return {'event_not_found'}
end

local waiting = redis.call('ZCARD', K_WAITING)
local admitted = redis.call('ZCARD', K_ADMITTED)
redis.call('DEL', unpack(KEYS))
return {'ok', waiting, admitted}

-- record_waits: store the wait (admitted_at_ms - joined_at_ms) of just-admitted entries in a
-- capped list of recent samples, newest first, and return the waits recorded.
-- KEYS: the eight event keys described in common.lua, then KEYS[9] wait samples (LIST).
-- ARGV[1] the most samples kept; ARGV[2..] queue ids admitted by the last release step.
-- Returns {'ok', wait ms...} or {'event_not_found'}. Ids without an admitted_at_ms are skipped.
local max_samples = tonumber(ARGV[1])
local K_WAITS = KEYS[9]

local cfg = load_config()
if not cfg then
  return {'event_not_found'}
end

local queue_ids = {}
for i = 2, #ARGV do
  queue_ids[#queue_ids + 1] = ARGV[i]
end

local reply = {'ok'}
if #queue_ids > 0 then
  local raws = fetch_in_chunks('HMGET', K_ENTRIES, queue_ids)
  local waits = {}
  for i = 1, #queue_ids do
    local raw = raws[i]
    if raw then
      local admitted_at = tonumber(string.match(raw, '"a":([%d%.eE%+]+)'))
      local joined_at = tonumber(string.match(raw, '"j":([%d%.eE%+]+)'))
      if admitted_at and joined_at then
        local wait_ms = math.max(0, admitted_at - joined_at)
        waits[#waits + 1] = int_str(wait_ms)
        reply[#reply + 1] = wait_ms
      end
    end
  end
  if #waits > 0 then
    call_in_chunks('LPUSH', K_WAITS, waits)
    redis.call('LTRIM', K_WAITS, 0, max_samples - 1)
  end
end

refresh_ttl(cfg)
return reply

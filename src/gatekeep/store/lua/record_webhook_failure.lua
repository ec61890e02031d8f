-- record_webhook_failure: add a failed webhook message, stamped with the store clock, to the
-- event's capped list of failures (newest first). The list expires ARGV[2] ms after this write.
-- KEYS: the eight event keys described in common.lua, then KEYS[9] webhook failures (LIST).
-- ARGV[1] the most records kept; ARGV[2] retention in ms; ARGV[3] the record as a JSON object
-- without `failed_at_ms`.
-- Returns {'ok', failed_at_ms}. Does not require the event to exist.
local keep = tonumber(ARGV[1])
local retention_ms = tonumber(ARGV[2])
local record_json = ARGV[3]
local K_FAILURES = KEYS[9]

local now_ms = clock_ms()

-- Append the field as text instead of decoding the record with cjson, which formats numbers
-- with 14 significant digits, so every value stays exactly as Python wrote it.
local stamped = string.sub(record_json, 1, -2) .. ',"failed_at_ms":' .. int_str(now_ms) .. '}'
redis.call('LPUSH', K_FAILURES, stamped)
redis.call('LTRIM', K_FAILURES, 0, keep - 1)
redis.call('PEXPIRE', K_FAILURES, retention_ms)
return {'ok', now_ms}

-- control_state: read the release controller's state of an event, creating its fairness seed
-- when it has none yet.
-- KEYS: the eight event keys described in common.lua, then the three of control.lua.
-- ARGV[1] seed_hex, ARGV[2] commitment_hex: a seed candidate and its SHA-256.
-- ARGV[3] with_publication: '1' to return the publication, which may be large.
-- Returns {'ok', now_ms, phase, opened_at_ms or '', stock left or '', admission log length,
-- commitment, publication JSON or ''} or {'event_not_found'}. Phase is one of 'closed',
-- 'sold_out', 'scheduled' (also while the frozen pre-queue waits for its order) or 'open'
-- (also after opens_at before the next step has frozen the pre-queue).
local cfg = load_config()
if not cfg then
  return {'event_not_found'}
end

local now_ms = clock_ms()
local st = load_state(now_ms)
local with_publication = ARGV[3] == '1'
local ctl = load_control(cfg)
ensure_seed(ctl, ARGV[1], ARGV[2])

local phase = 'open'
if is_closed(cfg, now_ms) then
  phase = 'closed'
elseif is_sold_out(ctl) then
  phase = 'sold_out'
elseif is_scheduled(cfg, ctl, now_ms) or ctl.phase == 'opening' then
  -- 'opening' lasts until a release step applies the order, normally within one tick.
  phase = 'scheduled'
end

finish(cfg, st)
refresh_control_ttl()
return {
  'ok', now_ms, phase, ctl.opened_at_ms or '', ctl.stock_left or '', tonumber(ctl.log_n) or 0,
  ctl.commitment or '', with_publication and redis.call('GET', K_FAIRNESS) or '',
}

-- release: run one release step. It freezes the pre-queue once `opens_at` has passed, and it
-- ends the waiting entries of an event that closed or sold out. Then it admits as many entries
-- as the credit, the free capacity and max_batch allow. `passthrough` mode and a manual
-- release ignore the credit.
-- KEYS: the eight event keys described in common.lua, then the three of control.lua.
-- ARGV[1] max_batch: the most entries to admit in this call.
-- ARGV[2] manual_count: '' for a release tick, or N for a manual release of N users, which
--         ignores the credit and the pause but not the capacity.
-- ARGV[3] rng_hex: fresh random hex from Python, for the draws of `random` mode.
-- ARGV[4] seed_hex, ARGV[5] commitment_hex: a fairness seed candidate and its SHA-256, stored
--         only when the event has no seed yet.
-- Returns {'ok', waiting entries expired, sessions expired, {transitions...}, admitted ids...},
-- {'opening', waiting entries expired, sessions expired} while the frozen pre-queue waits for
-- its order (see open_event.lua), or {'event_not_found'}.
local max_batch = tonumber(ARGV[1])
local manual_count = tonumber(ARGV[2])
local rng_hex = ARGV[3]

local cfg = load_config()
if not cfg then
  return {'event_not_found'}
end

local now_ms = clock_ms()
local st = load_state(now_ms)
local expired_waiting, expired_sessions = purge(cfg, st, now_ms)
local ctl = load_control(cfg)
ensure_seed(ctl, ARGV[4], ARGV[5])
freeze_if_due(cfg, ctl, now_ms)

local waiting_before = redis.call('ZCARD', K_WAITING)
local dt_s = settle(cfg, st, now_ms)

if ctl.phase == 'opening' then
  -- Credit starts once the order is applied, so the frozen moments earn no burst.
  st.credit = 0
  finish(cfg, st)
  refresh_control_ttl()
  return {'opening', expired_waiting, expired_sessions}
end

-- Record each phase change once, and clear the mark when the operator undoes it (a later
-- closes_at, or new stock), so a second change is reported again.
local transitions = {}
if ctl.opened_unreported == '1' then
  -- A join opened the event because its pre-queue was empty.
  ctl.opened_unreported = '0'
  redis.call('HSET', K_CONTROL, 'opened_unreported', '0')
  transitions[#transitions + 1] = 'opened'
end
local function mark(flag, active)
  if active and ctl[flag] ~= '1' then
    ctl[flag] = '1'
    redis.call('HSET', K_CONTROL, flag, '1')
    transitions[#transitions + 1] = flag
  elseif not active and ctl[flag] == '1' then
    ctl[flag] = '0'
    redis.call('HSET', K_CONTROL, flag, '0')
  end
end
mark('closed', is_closed(cfg, now_ms))
mark('sold_out', is_sold_out(ctl))

local ending = ending_status(cfg, ctl, now_ms)
if ending then
  end_waiting(ending, now_ms)
end

local capacity_left = math.max(0, cfg.max_capacity - redis.call('ZCARD', K_ADMITTED))
local kind = 'tick'
local count
if manual_count then
  kind = 'manual'
  count = math.min(manual_count, capacity_left, waiting_before, max_batch)
elseif cfg.paused then
  -- A pause stops admission at once, even with credit saved from before it.
  count = 0
elseif cfg.mode == 'passthrough' then
  count = math.min(capacity_left, waiting_before, max_batch)
else
  -- The epsilon absorbs float error, so 0.1 credit added ten times admits one user.
  count = math.min(math.floor(st.credit + 1e-9), capacity_left, waiting_before, max_batch)
end
if ending or is_scheduled(cfg, ctl, now_ms) then
  count = 0
end
if is_scheduled(cfg, ctl, now_ms) then
  -- Credit starts at opening: time before it earns nothing.
  st.credit = 0
end
count = math.max(0, count)

local picked
if cfg.mode == 'random' then
  picked = pick_at_random(count, rng_hex)
else
  picked = pick_in_order(count)
end
local admitted_ids = admit(cfg, ctl, picked, now_ms, kind)
local admitted = #admitted_ids

-- Only admissions paid by credit use it up: passthrough and manual releases leave it alone.
if kind == 'tick' and cfg.mode ~= 'passthrough' then
  st.credit = st.credit - admitted
end
if count == waiting_before or count == capacity_left then
  -- Nothing more can be released now, so the credit stops at one user. An idle or full event
  -- never saves up a burst beyond the configured rate.
  st.credit = math.min(st.credit, 1.0)
end
st.admitted_total = st.admitted_total + admitted
if waiting_before > 0 and not cfg.paused then
  local decay = math.exp(-dt_s / OBSERVED_RATE_TAU_S)
  st.obs_count = st.obs_count * decay + admitted
  st.obs_time_s = st.obs_time_s * decay + dt_s
end

finish(cfg, st)
refresh_control_ttl()
local reply = {'ok', expired_waiting, expired_sessions, transitions}
for _, queue_id in ipairs(admitted_ids) do
  reply[#reply + 1] = queue_id
end
return reply

-- Release-controller prelude: schedule, modes, stock, admission and the hash-chained admission
-- log. RedisStore prepends it, after common.lua, to every script.
--
-- Scripts that use it receive three more keys after the eight event keys, found by their name
-- suffix because some scripts put keys of their own in between:
--   gk:{E}:control     HASH    phase ('opening' once the pre-queue is frozen, then 'open'),
--                              open_seq, frozen_at_ms, opened_at_ms, seed, commitment,
--                              stock_config, stock_left, closed, sold_out, log_n, log_head
--   gk:{E}:admissions  LIST    admission log records (JSON text), oldest first
--   gk:{E}:fairness    STRING  the fairness publication (JSON), written at opening
-- These keys are kept for AUDIT_RETENTION_MS after their last write, not for the short
-- lifetime of the queue keys, because the log and the publication are evidence.

local function find_key(suffix)
  for i = 9, #KEYS do
    if string.sub(KEYS[i], -#suffix) == suffix then
      return KEYS[i]
    end
  end
  return nil
end

local K_CONTROL = find_key('}:control')
local K_ADMISSIONS = find_key('}:admissions')
local K_FAIRNESS = find_key('}:fairness')

local GENESIS_HASH = string.rep('0', 64)

-- SHA-256 (FIPS 180-4) of a Lua string as lowercase hex. Scripts have only redis.sha1hex, and
-- the admission log is chained with SHA-256. LuaBitOp works on signed 32-bit integers, so every
-- sum is normalised with tobit.
local SHA256_K = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}
-- The constants stay unsigned: every sum that uses one is reduced with tobit, which works modulo
-- 2^32, so a signed or an unsigned constant gives the same word.

local function sha256_hex(message)
  local band, bxor, bnot, bor = bit.band, bit.bxor, bit.bnot, bit.bor
  local rshift, lshift, ror, tobit = bit.rshift, bit.lshift, bit.ror, bit.tobit

  local length_bits = #message * 8
  local length_high = math.floor(length_bits / 4294967296)
  local length_low = length_bits % 4294967296
  local function be32(x)
    return string.char(math.floor(x / 16777216) % 256, math.floor(x / 65536) % 256,
      math.floor(x / 256) % 256, x % 256)
  end
  message = message .. '\128' .. string.rep('\0', (55 - #message) % 64)
    .. be32(length_high) .. be32(length_low)

  local h0, h1, h2, h3 = tobit(0x6a09e667), tobit(0xbb67ae85), tobit(0x3c6ef372), tobit(0xa54ff53a)
  local h4, h5, h6, h7 = tobit(0x510e527f), tobit(0x9b05688c), tobit(0x1f83d9ab), tobit(0x5be0cd19)
  local w = {}
  for chunk = 1, #message, 64 do
    for i = 0, 15 do
      local b1, b2, b3, b4 = string.byte(message, chunk + i * 4, chunk + i * 4 + 3)
      w[i] = bor(lshift(b1, 24), lshift(b2, 16), lshift(b3, 8), b4)
    end
    for i = 16, 63 do
      local v15, v2 = w[i - 15], w[i - 2]
      local s0 = bxor(ror(v15, 7), ror(v15, 18), rshift(v15, 3))
      local s1 = bxor(ror(v2, 17), ror(v2, 19), rshift(v2, 10))
      w[i] = tobit(w[i - 16] + s0 + w[i - 7] + s1)
    end

    local a, b, c, d, e, f, g, h = h0, h1, h2, h3, h4, h5, h6, h7
    for i = 0, 63 do
      local s1 = bxor(ror(e, 6), ror(e, 11), ror(e, 25))
      local choice = bxor(band(e, f), band(bnot(e), g))
      local t1 = h + s1 + choice + SHA256_K[i + 1] + w[i]
      local s0 = bxor(ror(a, 2), ror(a, 13), ror(a, 22))
      local majority = bxor(band(a, b), band(a, c), band(b, c))
      h = g
      g = f
      f = e
      e = tobit(d + t1)
      d = c
      c = b
      b = a
      a = tobit(t1 + s0 + majority)
    end
    h0, h1, h2, h3 = tobit(h0 + a), tobit(h1 + b), tobit(h2 + c), tobit(h3 + d)
    h4, h5, h6, h7 = tobit(h4 + e), tobit(h5 + f), tobit(h6 + g), tobit(h7 + h)
  end
  local hex = bit.tohex
  return hex(h0, 8) .. hex(h1, 8) .. hex(h2, 8) .. hex(h3, 8)
    .. hex(h4, 8) .. hex(h5, 8) .. hex(h6, 8) .. hex(h7, 8)
end

-- Config fields of the controller and the control hash

-- Read the controller's config fields into `cfg`.
local function load_controller_config(cfg)
  local raw = cfg.raw
  cfg.event_id = raw.event_id
  cfg.mode = raw.mode or 'fifo'
  cfg.opens_at_ms = tonumber(raw.opens_at_ms or '')
  cfg.closes_at_ms = tonumber(raw.closes_at_ms or '')
  local max_session_s = tonumber(raw.max_session_s or '')
  cfg.max_session_ms = max_session_s and round_half_even(max_session_s * 1000)
end

-- Read the controller's config fields into `cfg` and return the control hash as a table, or
-- only its `fields` when given. A stock value that differs from the one last applied replaces
-- the remaining stock.
local function load_control(cfg, fields)
  load_controller_config(cfg)
  local raw = cfg.raw
  local ctl
  if fields then
    ctl = hash_fields(K_CONTROL, fields)
  else
    ctl = pairs_to_table(redis.call('HGETALL', K_CONTROL))
  end
  local stock_text = raw.stock or ''
  if (ctl.stock_config or '') ~= stock_text then
    ctl.stock_config = stock_text
    ctl.stock_left = stock_text
    redis.call('HSET', K_CONTROL, 'stock_config', stock_text, 'stock_left', stock_text)
    ctl.written = true
  end
  return ctl
end

-- Store the fairness seed and its commitment unless the event already has one. Python draws
-- the candidate from `secrets`, because math.random in scripts is not a secure generator.
local function ensure_seed(ctl, seed_hex, commitment_hex)
  if ctl.seed or seed_hex == '' then
    return
  end
  ctl.seed = seed_hex
  ctl.commitment = commitment_hex
  redis.call('HSET', K_CONTROL, 'seed', seed_hex, 'commitment', commitment_hex)
end

local function stock_left(ctl)
  return tonumber(ctl.stock_left or '')
end

local function is_sold_out(ctl)
  local left = stock_left(ctl)
  return left ~= nil and left <= 0
end

local function is_closed(cfg, now_ms)
  return cfg.closes_at_ms ~= nil and now_ms >= cfg.closes_at_ms
end

-- True once the pre-queue is frozen: from then on, joins queue behind it in arrival order.
local function is_frozen(ctl)
  return ctl.phase == 'opening' or ctl.phase == 'open'
end

local function is_scheduled(cfg, ctl, now_ms)
  return not is_frozen(ctl) and cfg.opens_at_ms ~= nil and now_ms < cfg.opens_at_ms
end

-- Open at once when the frozen pre-queue is empty, because there is nothing to order. The
-- publication is written here, and the next release step reports "opened".
local function open_if_empty(cfg, ctl, now_ms)
  local open_seq = tonumber(ctl.open_seq)
  if open_seq > 0 then
    local buckets = cjson.decode(cfg.buckets_json)
    for rank = 0, #buckets - 1 do
      local low = int_str(rank * SEQ_SPAN)
      local high = int_str(rank * SEQ_SPAN + open_seq)
      if redis.call('ZCOUNT', K_WAITING, low, high) > 0 then
        return
      end
    end
  end

  local publication = '{"algorithm":"gatekeep-fairness-v1","event_id":'
    .. cjson.encode(cfg.event_id) .. ',"commitment":"' .. (ctl.commitment or '')
    .. '","seed":"' .. (ctl.seed or '') .. '","frozen_at_ms":' .. ctl.frozen_at_ms
    .. ',"buckets":' .. cfg.buckets_json .. ',"tickets":[]}'
  redis.call('SET', K_FAIRNESS, publication)
  ctl.phase = 'open'
  ctl.opened_at_ms = int_str(now_ms)
  ctl.opened_unreported = '1'
  redis.call('HSET', K_CONTROL, 'phase', 'open', 'opened_at_ms', ctl.opened_at_ms,
    'opened_unreported', '1')
end

-- Freeze the pre-queue once `opens_at` has passed: the entries joined so far (seq <= open_seq)
-- are the pre-queue that the opening orders by the fairness seed. An empty pre-queue opens at
-- once. Returns true when it froze.
local function freeze_if_due(cfg, ctl, now_ms)
  if is_frozen(ctl) or is_scheduled(cfg, ctl, now_ms) then
    return false
  end
  local seq = redis.call('HGET', K_STATE, 'seq') or '0'
  ctl.phase = 'opening'
  ctl.open_seq = seq
  ctl.frozen_at_ms = int_str(now_ms)
  redis.call('HSET', K_CONTROL, 'phase', 'opening', 'open_seq', seq, 'frozen_at_ms',
    ctl.frozen_at_ms)
  open_if_empty(cfg, ctl, now_ms)
  return true
end

-- Give the controller's keys the audit lifetime. Call after finish(), which gives every KEYS
-- entry the short queue lifetime.
local function refresh_control_ttl()
  redis.call('PEXPIRE', K_CONTROL, AUDIT_RETENTION_MS)
  redis.call('PEXPIRE', K_ADMISSIONS, AUDIT_RETENTION_MS)
  redis.call('PEXPIRE', K_FAIRNESS, AUDIT_RETENTION_MS)
end

-- Admission

-- Return the public ticket id of an entry's JSON text. Entries created without one get an id
-- derived from the SHA-1 of the queue id, which reveals nothing about the queue id.
local function entry_ticket_id(queue_id, raw)
  local ticket = string.match(raw, '[{,]"k":"(%x+)"', fixed_start(raw))
  return ticket or string.sub(redis.sha1hex(queue_id), 1, 24)
end

-- Append one record to the hash-chained admission log. The record's hash is the SHA-256 of the
-- canonical text below, which fairness.admission_record_hash rebuilds in Python.
local function append_log(cfg, ctl, now_ms, kind, tickets)
  if #tickets == 0 then
    return
  end
  local n = (tonumber(ctl.log_n) or 0) + 1
  local prev = ctl.log_head or GENESIS_HASH
  local canonical = 'gatekeep-admission-v1\n' .. cfg.event_id .. '\n' .. int_str(n) .. '\n'
    .. int_str(now_ms) .. '\n' .. kind .. '\n' .. prev .. '\n' .. table.concat(tickets, ',')
  -- TODO: SHA-256 in Lua costs about 0.1 ms per 64 bytes, so a step admitting 1,000 users
  -- blocks Redis for an estimated tens of ms. Hash the ticket list outside Redis and chain digests.
  local hash = sha256_hex(canonical)
  local record = '{"n":' .. int_str(n) .. ',"event_id":' .. cjson.encode(cfg.event_id)
    .. ',"at_ms":' .. int_str(now_ms) .. ',"kind":"' .. kind .. '","tickets":["'
    .. table.concat(tickets, '","') .. '"],"prev":"' .. prev .. '","hash":"' .. hash .. '"}'
  redis.call('RPUSH', K_ADMISSIONS, record)
  ctl.log_n = int_str(n)
  ctl.log_head = hash
  redis.call('HSET', K_CONTROL, 'log_n', ctl.log_n, 'log_head', hash)
end

-- Admit waiting entries in the order of `queue_ids`: take them off the waiting list, start a
-- session for each and log them as one record of `kind`. Returns the ids admitted; an id
-- without an entry is skipped, so it is neither admitted nor logged.
local function admit(cfg, ctl, queue_ids, now_ms, kind)
  if #queue_ids == 0 then
    return {}
  end
  call_in_chunks('ZREM', K_WAITING, queue_ids)
  local heartbeats = fetch_in_chunks('ZMSCORE', K_HEARTBEATS, queue_ids)
  local raws = fetch_in_chunks('HMGET', K_ENTRIES, queue_ids)
  call_in_chunks('ZREM', K_HEARTBEATS, queue_ids)

  -- Every admitted entry gets the same head apart from `h`, so its parts are built once.
  local expires_text = int_str(now_ms + cfg.session_ttl_ms)
  local head_start = '{"s":"admitted","h":'
  local head_end = ',"a":' .. int_str(now_ms) .. ',"x":' .. expires_text
  local entry_pairs = {}
  local session_pairs = {}
  local admitted = {}
  local tickets = {}
  for i, queue_id in ipairs(queue_ids) do
    local raw = raws[i]
    if raw then
      local heartbeat_text = heartbeats[i]
      if not heartbeat_text then
        heartbeat_text = entry_heartbeat_text(raw)
      elseif not string.find(heartbeat_text, '^%d+$') then
        heartbeat_text = int_str(tonumber(heartbeat_text))
      end
      entry_pairs[#entry_pairs + 1] = queue_id
      entry_pairs[#entry_pairs + 1] = head_start .. heartbeat_text .. head_end
        .. string.sub(raw, fixed_start(raw))
      session_pairs[#session_pairs + 1] = expires_text
      session_pairs[#session_pairs + 1] = queue_id
      admitted[#admitted + 1] = queue_id
      tickets[#tickets + 1] = entry_ticket_id(queue_id, raw)
    end
  end
  if #admitted > 0 then
    call_in_chunks('HSET', K_ENTRIES, entry_pairs)
    call_in_chunks('ZADD', K_ADMITTED, session_pairs)
    append_log(cfg, ctl, now_ms, kind, tickets)
  end
  return admitted
end

-- Return up to `count` waiting ids in queue order.
local function pick_in_order(count)
  if count <= 0 then
    return {}
  end
  return redis.call('ZRANGE', K_WAITING, 0, count - 1)
end

-- Return up to `count` waiting ids drawn uniformly at random, without replacement, among the
-- entries of the best non-empty bucket at each draw. Draw i uses the first 52 bits of
-- SHA-1(rng_hex .. ':' .. i), and rng_hex comes from Python's `secrets` for every call.
local function pick_at_random(count, rng_hex)
  local picked = {}
  for draw = 1, count do
    local first = redis.call('ZRANGE', K_WAITING, 0, 0, 'WITHSCORES')
    if #first == 0 then
      break
    end
    local rank = math.floor(tonumber(first[2]) / SEQ_SPAN)
    local low = int_str(rank * SEQ_SPAN)
    local high = '(' .. int_str((rank + 1) * SEQ_SPAN)
    local size = redis.call('ZCOUNT', K_WAITING, low, high)
    local random = tonumber(string.sub(redis.sha1hex(rng_hex .. ':' .. draw), 1, 13), 16)
    local index = random % size
    local queue_id = redis.call('ZRANGE', K_WAITING, index, index)[1]
    -- The draw must not pick an id twice, so it leaves the list now and admit() finds it gone.
    redis.call('ZREM', K_WAITING, queue_id)
    picked[#picked + 1] = queue_id
  end
  return picked
end

-- End up to PURGE_BATCH waiting entries with `status` ('closed' or 'sold_out'). Returns how
-- many ended; the release loop calls again every tick, so a longer queue drains within ticks.
local function end_waiting(status, now_ms)
  local queue_ids = redis.call('ZRANGE', K_WAITING, 0, PURGE_BATCH - 1)
  for _, queue_id in ipairs(queue_ids) do
    local raw = redis.call('HGET', K_ENTRIES, queue_id)
    if raw then
      end_entry(queue_id, raw, status, now_ms)
    else
      redis.call('ZREM', K_WAITING, queue_id)
      redis.call('ZREM', K_HEARTBEATS, queue_id)
    end
  end
  return #queue_ids
end

-- Return the status ('closed' or 'sold_out') that waiting entries end with now, or nil.
local function ending_status(cfg, ctl, now_ms)
  if is_closed(cfg, now_ms) then
    return 'closed'
  end
  if is_sold_out(ctl) then
    return 'sold_out'
  end
  return nil
end

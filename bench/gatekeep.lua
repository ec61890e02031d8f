-- wrk script for the Gatekeep benchmarks: one request type per run, then one JSON summary line.
-- Usage: wrk -s bench/gatekeep.lua URL -- MODE ARG...
--   join EVENT_ID RUN_TAG  POST /v1/events/EVENT_ID/join with a new device id per request
--   status IDS_FILE        GET /v1/queue/QUEUE_ID, cycling through the ids in IDS_FILE
--   heartbeat IDS_FILE     POST /v1/queue/QUEUE_ID/heartbeat with an empty body
--   get PATH               GET PATH (the baseline endpoint)
-- The summary line starts with "BENCH_JSON "; latencies in it are microseconds.

local created_threads = 0

-- Runs in the main Lua state once per thread, before that thread's init().
function setup(thread)
  thread:set("thread_index", created_threads)
  created_threads = created_threads + 1
end

local mode
local join_path
local run_tag
local get_path
local queue_ids = {}
local next_id = 1
local sent = 0

function init(args)
  mode = args[1]
  if mode == "join" then
    join_path = "/v1/events/" .. args[2] .. "/join"
    run_tag = args[3]
    wrk.headers["Content-Type"] = "application/json"
  elseif mode == "status" or mode == "heartbeat" then
    for line in io.lines(args[2]) do
      if line ~= "" then
        queue_ids[#queue_ids + 1] = line
      end
    end
    if #queue_ids == 0 then
      error("no queue ids in " .. args[2])
    end
    -- Threads start far apart in the list, so they do not poll the same ids in step.
    next_id = (thread_index * 7919) % #queue_ids + 1
  elseif mode == "get" then
    get_path = args[2]
  else
    error("unknown mode " .. tostring(mode) .. "; use join, status, heartbeat or get")
  end
end

local function take_queue_id()
  local queue_id = queue_ids[next_id]
  next_id = next_id % #queue_ids + 1
  return queue_id
end

function request()
  sent = sent + 1
  if mode == "join" then
    local body = string.format('{"device_id":"%s-%d-%d"}', run_tag, thread_index, sent)
    return wrk.format("POST", join_path, nil, body)
  elseif mode == "status" then
    return wrk.format("GET", "/v1/queue/" .. take_queue_id())
  elseif mode == "heartbeat" then
    return wrk.format("POST", "/v1/queue/" .. take_queue_id() .. "/heartbeat", nil, "")
  end
  return wrk.format("GET", get_path)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"errors_connect":%d,"errors_read":%d,'
      .. '"errors_write":%d,"errors_status":%d,"errors_timeout":%d,"latency_mean_us":%.1f,'
      .. '"latency_p50_us":%d,"latency_p90_us":%d,"latency_p99_us":%d,"latency_max_us":%d}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write,
    errors.status, errors.timeout, latency.mean, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max))
end

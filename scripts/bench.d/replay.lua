-- wrk script for scripts/bench: replays pre-signed Slack requests.
-- Env: BENCH_REQS=<prefix> (thread k reads <prefix>.k: ts TAB signature TAB body per line),
--      BENCH_PATH=/slack/commands or /slack/events.
-- Each thread cycles through its own file; if it runs past the end it starts over (users repeat,
-- which a server may answer without storing) and done() reports that as "wrapped".
-- done() prints one machine-readable line: "bench-wrk key=value …".

local prefix = os.getenv("BENCH_REQS")
local path = os.getenv("BENCH_PATH")
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  local host = wrk.headers["Host"]
  reqs = {}
  for line in io.lines(prefix .. "." .. id) do
    local ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
    reqs[#reqs + 1] = wrk.format("POST", path, {
      ["Host"] = host,
      ["Content-Type"] = "application/x-www-form-urlencoded",
      ["X-Slack-Request-Timestamp"] = ts,
      ["X-Slack-Signature"] = sig,
    }, body)
  end
  n, i, wrapped, s2xx, s3xx = #reqs, 0, 0, 0, 0
end

function request()
  i = i + 1
  if i > n then
    i, wrapped = 1, wrapped + 1
  end
  return reqs[i]
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    s2xx = s2xx + 1
  elseif status < 400 then
    s3xx = s3xx + 1
  end
end

function done(summary, latency, requests)
  local w, ok, redirects = 0, 0, 0
  for _, t in ipairs(threads) do
    w = w + t:get("wrapped")
    ok = ok + t:get("s2xx")
    redirects = redirects + t:get("s3xx")
  end
  local e = summary.errors
  io.write(string.format(
    "bench-wrk requests=%d duration_us=%d ok=%d redirects=%d status_errors=%d connect=%d read=%d write=%d timeout=%d wrapped=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, ok, redirects, e.status, e.connect, e.read, e.write, e.timeout, w,
    latency:percentile(50), latency:percentile(99)))
end

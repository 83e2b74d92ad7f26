-- wrk script: send the headers given in the environment and print the latency
-- percentiles and error counts in one line that run.sh collects.
local auth = os.getenv("LOAD_AUTHORIZATION")
local cookie = os.getenv("LOAD_COOKIE")
if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
if cookie and cookie ~= "" then wrk.headers["Cookie"] = cookie end

-- summary.errors.status counts responses with a status of 400 or more; wrk runs
-- a response() hook in per-thread Lua states that done() cannot read.
done = function(summary, latency, requests)
  io.write(string.format(
    "RESULT requests=%d seconds=%.1f rps=%.1f p50_ms=%.1f p95_ms=%.1f p99_ms=%.1f " ..
    "max_ms=%.1f socket_errors=%d http_errors=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, summary.errors.status))
end

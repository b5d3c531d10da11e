-- test/bench/health.lua: GET /health with the same RESULT line as ingest.lua (for ingest.sh).
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) bad, ok = 0, 0 end
function response(status, headers, body)
   if status == 200 then ok = ok + 1 else bad = bad + 1 end
end
function done(summary, latency, requests)
   local bad_total, ok_total = 0, 0
   for _, th in ipairs(threads) do
      bad_total = bad_total + th:get("bad")
      ok_total = ok_total + th:get("ok")
   end
   io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d ok=%d non202=%d exhausted=0 sockerr=%d\n",
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), ok_total, bad_total,
      summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end

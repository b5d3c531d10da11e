-- test/bench/ingest.lua: wrk replays the requests of REQFILE (written by ingest-gen.mjs, each raw
-- HTTP request followed by a NUL byte), each once: thread t of T sends requests t, t+T, t+2T, ...
-- If a thread runs out it starts again (those would be duplicates): done() reports it as
-- "exhausted", and ingest.sh then refuses the run. Statuses other than 202 are counted.
local threads = {}
local nthreads = 0

function setup(thread)
   thread:set("tid", nthreads)
   nthreads = nthreads + 1
   table.insert(threads, thread)
end

function init(args)
   local f = assert(io.open(os.getenv("REQFILE"), "rb"))
   local data = f:read("*a")
   f:close()
   local all, pos = {}, 1
   while true do
      local z = string.find(data, "\0", pos, true)
      if not z then break end
      all[#all + 1] = string.sub(data, pos, z - 1)
      pos = z + 1
   end
   local t, T = tid, tonumber(os.getenv("NTHREADS") or "1")
   reqs = {}
   for i = t + 1, #all, T do reqs[#reqs + 1] = all[i] end
   idx, wrapped, bad, ok = 0, 0, 0, 0
end

function request()
   idx = idx + 1
   if idx > #reqs then
      idx, wrapped = 1, wrapped + 1
   end
   return reqs[idx]
end

function response(status, headers, body)
   if status == 202 then ok = ok + 1 else bad = bad + 1 end
end

function done(summary, latency, requests)
   local wrapped_total, bad_total, ok_total = 0, 0, 0
   for _, th in ipairs(threads) do
      wrapped_total = wrapped_total + th:get("wrapped")
      bad_total = bad_total + th:get("bad")
      ok_total = ok_total + th:get("ok")
   end
   io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d ok=%d non202=%d exhausted=%d sockerr=%d\n",
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      ok_total, bad_total, wrapped_total,
      summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end

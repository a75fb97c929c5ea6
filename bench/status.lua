-- wrk script: counts answers by status class and prints them with the p99, for the overload scenario.
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) s2 = 0; s502 = 0; s503 = 0; other = 0 end
function response(status, headers, body)
  if status < 300 then s2 = s2 + 1 elseif status == 502 then s502 = s502 + 1 elseif status == 503 then s503 = s503 + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local a, b, c, d = 0, 0, 0, 0
  for _, t in ipairs(threads) do a = a + t:get("s2"); b = b + t:get("s502"); c = c + t:get("s503"); d = d + t:get("other") end
  io.write(string.format("2xx=%d 502=%d 503=%d other=%d p99=%.1fms errors=%d/%d/%d/%d\n", a, b, c, d, latency:percentile(99)/1000, summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
end

-- wrk script: POST /api/admins with a name unique to this run, thread and request.
-- Usage: wrk ... -s bench/post.lua URL -- PREFIX TOKEN
local threads = 0

function setup(thread)
   threads = threads + 1
   thread:set("tid", threads)
end

function init(args)
   prefix = args[1] .. "-" .. tid
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = "Bearer " .. args[2]
end

local n = 0
function request()
   n = n + 1
   local body = string.format('{"name":"%s-%d","email":"bench@example.com"}', prefix, n)
   return wrk.format(nil, nil, nil, body)
end

-- wrk script of the mixed round of scripts/bench-proxy.sh (--mix). Run with -t4: wrk gives each
-- thread its own connections (-c / 4), and each thread cycles through one list of requests.
--   threads 1-3 ("plain", 3/4 of the connections): GET / (3 bytes), GET /64k (65536 bytes),
--     POST /upload with a 4 KiB Content-Length body. lbd's fast path takes all three.
--   thread 4 ("hyper", 1/4 of the connections): POST /upload with the same 4 KiB body sent
--     chunked (4 chunks of 1 KiB), and GET / as HTTP/1.0 with Connection: keep-alive. lbd's
--     fast path hands both to hyper, and the connection stays on hyper afterwards, which is
--     why they get connections of their own: mixed into every connection they would move all
--     of lbd's traffic to hyper after a few requests.
-- The backend answers POST /upload with 200 "ok\n" after reading and discarding the body.
-- (No Expect: 100-continue: wrk would count the interim 100 response as a response.)
local threads = 0

function setup(thread)
   threads = threads + 1
   thread:set("kind", threads % 4 == 0 and "hyper" or "plain")
end

local requests, n, i

function init(args)
   local host = wrk.headers["Host"] or "127.0.0.1"
   local body = string.rep("x", 4096)
   local chunk = string.rep("y", 1024)
   local chunked = ""
   for _ = 1, 4 do chunked = chunked .. string.format("%x\r\n%s\r\n", #chunk, chunk) end
   chunked = chunked .. "0\r\n\r\n"
   if kind == "hyper" then
      requests = {
         "POST /upload HTTP/1.1\r\nHost: " .. host .. "\r\nTransfer-Encoding: chunked\r\n" ..
            "Content-Type: application/octet-stream\r\n\r\n" .. chunked,
         "GET / HTTP/1.0\r\nHost: " .. host .. "\r\nConnection: keep-alive\r\n\r\n",
      }
   else
      requests = {
         "GET / HTTP/1.1\r\nHost: " .. host .. "\r\n\r\n",
         "GET /64k HTTP/1.1\r\nHost: " .. host .. "\r\n\r\n",
         "POST /upload HTTP/1.1\r\nHost: " .. host .. "\r\nContent-Length: " .. #body ..
            "\r\nContent-Type: application/octet-stream\r\n\r\n" .. body,
      }
   end
   n = #requests
   i = 0
end

function request()
   i = i % n + 1
   return requests[i]
end

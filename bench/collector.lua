-- wrk script of bench/collector.sh: POST /v1/batch with 100-event batches of a storefront's
-- e-commerce traffic, in the Segment tracking API's shape (what analytics.js and the server SDKs
-- send). Every request is a different device: its own anonymousId and 100 message ids that no
-- other request uses (UUIDs built from RUN_ID, the wrk thread, the position and the request
-- counter), so
-- the collector maps, validates and writes 100 new events each time — a replayed batch would
-- measure nothing real. Needs WRITE_KEY in the environment, and a different RUN_ID (an integer)
-- for each wrk run against the same stream.
--
-- Requests go out for WINDOW_SECS (default 10) from each thread's first request; then the
-- threads send nothing more and wait for their answers, so that when wrk stops (run it with
-- -d longer than the window) no request is in flight: every event written to the stream was
-- answered, and the stream can be checked against the 200s exactly. The latency figures are
-- those of the window's requests only.
--
-- At the end each thread's answers are summed and printed as one line:
--   RESULT requests=… ok=… non2xx=… errors=… p50_us=… p99_us=… p999_us=… window_us=…
-- where window_us runs from the first request sent to the last answer received.

local write_key = os.getenv("WRITE_KEY") or error("WRITE_KEY is not set")
local auth = "Basic " .. (function(s)
  -- base64 of "KEY:" (HTTP basic auth with an empty password)
  local b = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  return ((s:gsub(".", function(x)
    local r, byte = "", x:byte()
    for i = 8, 1, -1 do r = r .. (byte % 2 ^ i - byte % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return b:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#s % 3 + 1])
end)(write_key .. ":")

-- Times are fixed when the script starts: the device says when each event happened and when it
-- sent the batch (one second later), so the collector corrects for its clock as for any device.
local now = os.time()
local function iso(t) return os.date("!%Y-%m-%dT%H:%M:%S", t) .. ".000Z" end
local sent_at = iso(now)

local ua = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
local context = '"context":{"library":{"name":"analytics.js","version":"5.2.0"},"userAgent":"' .. ua ..
    '","ip":"203.0.113.7","locale":"en-GB","page":{"url":"https://shop.example.com/c/shoes?utm_source=newsletter&utm_medium=email&utm_campaign=weekly_picks",' ..
    '"path":"/c/shoes","referrer":"https://mail.example.net/","title":"Shoes"},' ..
    '"campaign":{"source":"newsletter","medium":"email","name":"weekly_picks"}}'
local product = '{"product_id":"p-%d","sku":"SKU-%d","name":"Trail Runner %d","category":"shoes","brand":"Northwind","price":89.90,"quantity":1,"position":%d,"currency":"EUR"}'
local function products(n, first)
  local out = {}
  for i = 1, n do out[i] = product:format(first + i, first + i, first + i, i) end
  return "[" .. table.concat(out, ",") .. "]"
end

-- One shopper's visit: landing page, lists, searches and product views, cart, checkout, order.
-- "\1" stands for the device's anonymousId, "\2" for the message id.
local journey = {
  '{"type":"page","name":"Shoes","properties":{"url":"https://shop.example.com/c/shoes","path":"/c/shoes","title":"Shoes"}',
  '{"type":"track","event":"Product List Viewed","properties":{"list_id":"shoes","category":"shoes","currency":"EUR","products":' .. products(3, 100) .. '}',
  '{"type":"track","event":"Products Searched","properties":{"query":"trail running shoes"}',
  '{"type":"track","event":"Product Clicked","properties":' .. product:format(101, 101, 101, 1) .. '',
  '{"type":"track","event":"Product Viewed","properties":' .. product:format(101, 101, 101, 1) .. '',
  '{"type":"page","name":"Product","properties":{"url":"https://shop.example.com/p/p-101","path":"/p/p-101","title":"Trail Runner 101"}',
  '{"type":"track","event":"Product Viewed","properties":' .. product:format(102, 102, 102, 2) .. '',
  '{"type":"track","event":"Promotion Viewed","properties":{"promotion_id":"promo-spring","name":"Spring sale","creative":"hero_banner"}',
  '{"type":"track","event":"Product Added","properties":{"cart_id":"cart-1","product_id":"p-101","sku":"SKU-101","name":"Trail Runner 101","price":89.90,"quantity":1,"currency":"EUR"}',
  '{"type":"track","event":"Cart Viewed","properties":{"cart_id":"cart-1","currency":"EUR","products":' .. products(1, 100) .. '}',
  '{"type":"track","event":"Checkout Started","properties":{"order_id":"chk-1","value":89.90,"revenue":89.90,"currency":"EUR","products":' .. products(1, 100) .. '}',
  '{"type":"track","event":"Checkout Step Completed","properties":{"checkout_id":"chk-1","step":2,"shipping_method":"DHL"}',
  '{"type":"track","event":"Payment Info Entered","properties":{"checkout_id":"chk-1","payment_method":"card"}',
  '{"type":"identify","userId":"u-1","traits":{"plan":"gold","country":"DE"}',
  '{"type":"track","event":"Order Completed","properties":{"order_id":"o-1","checkout_id":"chk-1","total":94.90,"revenue":89.90,"shipping":5.00,"tax":0,"currency":"EUR","products":' .. products(1, 100) .. '}',
}

-- The batch: 100 messages walking the journey, cut into pieces around the two placeholders.
local pieces = {}
local slots = {} -- "\1" or "\2" for each gap between pieces
do
  local text = {}
  for i = 0, 99 do
    local m = journey[i % #journey + 1]
    text[#text + 1] = m .. ',"anonymousId":"\1","messageId":"\2","timestamp":"' .. iso(now - 1 - (99 - i)) .. '",' .. context .. '}'
  end
  local body = '{"batch":[' .. table.concat(text, ",") .. '],"sentAt":"' .. sent_at .. '"}'
  local start = 1
  while true do
    local at = body:find("[\1\2]", start)
    if not at then break end
    pieces[#pieces + 1] = body:sub(start, at - 1)
    slots[#slots + 1] = body:sub(at, at)
    start = at + 1
  end
  pieces[#pieces + 1] = body:sub(start)
end

-- A monotonic clock in microseconds (wrk runs LuaJIT; os.time has seconds only).
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } shoplake_timespec;
  int clock_gettime(int clk_id, shoplake_timespec *tp);
]]
local ts = ffi.new("shoplake_timespec")
local CLOCK_MONOTONIC = 1
local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end
local window_us = tonumber(os.getenv("WINDOW_SECS") or "10") * 1000000

local threads = {}
local thread_id = 0

function setup(thread)
  thread_id = thread_id + 1
  thread:set("id", thread_id)
  threads[#threads + 1] = thread
end

local counter = 0
-- Globals: done() reads them from each thread with thread:get.
ok, non2xx, started_us, last_us = 0, 0, 0, 0

-- Called before each request: none more once the window is over.
function delay()
  local t = now_us()
  if started_us == 0 then started_us = t end
  if t - started_us >= window_us then return 3600 * 1000 end
  return 0
end

function init(args)
  wrk.headers["Authorization"] = auth
  wrk.headers["Content-Type"] = "application/json"
  wrk.method = "POST"
end

-- Distinct across wrk runs too (each level of bench/collector.sh is a new wrk process).
local run = tonumber(os.getenv("RUN_ID") or os.time()) % 4294967296

function request()
  counter = counter + 1
  local anon = string.format("a-%x-%d-%d", run, id, counter)
  local out, n, position = {}, 0, 0
  for i = 1, #slots do
    n = n + 1
    out[n] = pieces[i]
    n = n + 1
    if slots[i] == "\1" then
      out[n] = anon
    else
      -- A version-4 UUID unique to (run, thread, position, request).
      out[n] = string.format("%08x-%04x-4%03x-8000-%012x", run, id, position, counter)
      position = position + 1
    end
  end
  out[n + 1] = pieces[#pieces]
  return wrk.format(nil, "/v1/batch", nil, table.concat(out))
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1 else non2xx = non2xx + 1 end
  last_us = now_us()
end

function done(summary, latency, requests)
  local total_ok, total_non2xx, first, last = 0, 0, math.huge, 0
  for _, t in ipairs(threads) do
    total_ok = total_ok + t:get("ok")
    total_non2xx = total_non2xx + t:get("non2xx")
    if t:get("started_us") > 0 then first = math.min(first, t:get("started_us")) end
    last = math.max(last, t:get("last_us"))
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d ok=%d non2xx=%d errors=%d p50_us=%d p99_us=%d p999_us=%d window_us=%d\n",
    summary.requests, total_ok, total_non2xx, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), last - first))
end

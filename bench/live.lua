-- wrk script of bench/live.sh: the storefront's questions to the streaming stage.
--   MODE=recs     GET /v1/recommendations/{shopper}?k=10
--   MODE=related  GET /v1/products/{id}/related?k=10
--   MODE=score    POST /v1/fraud/score with an order of that shopper (a checkout)
-- IDS names a file with one shopper id (or product id, for MODE=related) per line: ids known to
-- the stage, so that every request does the real work, not the unknown-id fallback.
-- At the end one line: RESULT requests=… non2xx=… errors=… duration_us=… p50_us=… p99_us=… p999_us=…

local mode = os.getenv("MODE") or error("MODE is not set")
local ids = {}
for line in io.lines(os.getenv("IDS") or error("IDS is not set")) do
  if #line > 0 then ids[#ids + 1] = line end
end
assert(#ids > 0, "no ids")

local order = '{"user_id":"%s","context":{"ip":"203.0.113.%d","device":{"id":"d-bench-%d"}},' ..
    '"properties":{"total":%d.90,"currency":"USD","payment_method":"card","card_fingerprint":"card-%d",' ..
    '"billing_country":"US","shipping_country":"US","products":[{"product_id":"p-00042","price":%d.90,"quantity":1}]}}'
-- TOKEN: a token of a role that may call the storefront endpoints (bench/live.sh makes one).
local token = os.getenv("TOKEN") or error("TOKEN is not set")
local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }

local n = 0
function setup(thread)
  thread:set("offset", math.random(#ids))
end

function request()
  n = n + 1
  local id = ids[(n + (offset or 0)) % #ids + 1]
  if mode == "recs" then
    return wrk.format("GET", "/v1/recommendations/" .. id .. "?k=10", headers)
  elseif mode == "related" then
    return wrk.format("GET", "/v1/products/" .. id .. "/related?k=10", headers)
  else
    local amount = 20 + n % 400
    return wrk.format("POST", "/v1/fraud/score", headers,
      order:format(id, n % 250, n % 5000, amount, n % 20000, amount))
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d non2xx=%d errors=%d duration_us=%d p50_us=%d p99_us=%d p999_us=%d\n",
    summary.requests, e.status, e.connect + e.read + e.write + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end

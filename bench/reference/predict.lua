-- wrk script: POST the workshop's request shape to /predict, varying the ride.
--   wrk -t2 -c16 -d10s -s bench/reference/predict.lua http://127.0.0.1:9696/predict
-- The bodies are prepared once per thread from a small fixed pseudo-random set (an LCG, like the
-- gRPC load generator's), so wrk spends its time sending, not formatting. No `response` hook:
-- defining one makes wrk hand every answer to Lua; wrk already counts non-2xx answers itself.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local bodies = {}
local next_body = 1

function init(args)
  local locations = { 74, 75, 41, 42, 166, 7, 82, 95, 129, 260, 43, 244, 116, 97, 255, 181 }
  local state = 12345
  for n = 1, 256 do
    state = (state * 1103515245 + 12345) % 2147483648
    local pu = locations[(state % #locations) + 1]
    local dropoff = locations[(math.floor(state / 16) % #locations) + 1]
    local distance = 0.5 + (math.floor(state / 256) % 200) / 10
    bodies[n] = string.format(
      '{"ride_id":"w%d","ride":{"PULocationID":%d,"DOLocationID":%d,"trip_distance":%.1f}}',
      n, pu, dropoff, distance)
  end
end

function request()
  local body = bodies[next_body]
  next_body = next_body % #bodies + 1
  return wrk.format(nil, nil, nil, body)
end

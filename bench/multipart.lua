-- wrk script: POST /predict with the file named by $BENCH_IMAGE as the multipart part `image`
-- (what the BentoML client and Swagger UI send). `non2xx` in the summary counts non-2xx/3xx answers.
-- bench/openloop.rs (`request_bytes`) sends the same bytes: change both together.
local path = os.getenv("BENCH_IMAGE")
local f = assert(io.open(path, "rb"))
local data = f:read("*all")
f:close()
local boundary = "----celestialbench7d1f0c"
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
-- $BENCH_AUTHORIZATION (e.g. "Bearer <key>"): sent as the Authorization header (the API-key A/B).
local authorization = os.getenv("BENCH_AUTHORIZATION")
if authorization and authorization ~= "" then
  wrk.headers["Authorization"] = authorization
end
wrk.body = "--" .. boundary .. "\r\n"
  .. "Content-Disposition: form-data; name=\"image\"; filename=\"image.jpg\"\r\n"
  .. "Content-Type: image/jpeg\r\n\r\n"
  .. data .. "\r\n--" .. boundary .. "--\r\n"

function done(summary, latency, requests)
  io.write(string.format("BENCH requests=%d duration_s=%.2f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f errors_connect=%d errors_read=%d errors_write=%d errors_timeout=%d non2xx=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout, summary.errors.status))
end

-- wrk script: POST /v2/models/celestial-bodies/infer with the file named by $BENCH_IMAGE as the BYTES input
-- `image`, in the binary tensor extension (what tritonclient sends: the JSON, then a 4-byte little-endian
-- length and the picture; Inference-Header-Content-Length gives the JSON's length). Answers as JSON.
local path = os.getenv("BENCH_IMAGE")
local f = assert(io.open(path, "rb"))
local data = f:read("*all")
f:close()
local n = #data
local function byte(shift) return math.floor(n / 2 ^ shift) % 256 end -- LuaJIT has no bit shifts
local raw = string.char(byte(0), byte(8), byte(16), byte(24)) .. data
local json = string.format(
  '{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":%d}}]}', #raw)
wrk.method = "POST"
wrk.path = "/v2/models/celestial-bodies/infer"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = tostring(#json)
wrk.body = json .. raw

function done(summary, latency, requests)
  io.write(string.format("BENCH requests=%d duration_s=%.2f rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f max_ms=%.3f errors_connect=%d errors_read=%d errors_write=%d errors_timeout=%d non2xx=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout, summary.errors.status))
end

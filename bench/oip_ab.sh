#!/usr/bin/env bash
# Throughput of the Open Inference Protocol against /predict, alternating round by round so that drifts of
# the shared machine hit every variant alike: the same picture (BENCH_IMAGE) at the same concurrency as
#   predict  POST /predict, multipart (wrk, bench/multipart.lua)
#   rest     POST /v2/models/celestial-bodies/infer, binary tensor extension (wrk, bench/v2_binary.lua)
#   grpc     inference.GRPCInferenceService/ModelInfer over h2c (h2load from Debian's nghttp2-client: C, one
#            stream per connection at a time, the body a ModelInfer message made by bench/grpc_body.py)
# Each run gets a fresh release server. Per run: requests/s, latency (wrk: p50/p99; h2load: mean), the
# server's and the load generator's CPU per request (utime + stime from /proc and getrusage), and for gRPC
# the server's own count of gRPC OK answers (h2load counts HTTP 200, which a gRPC error also is). Not part
# of scripts/test. Results go to stdout and bench/results/<UTC time>-oip.txt.
#
#   bench/oip_ab.sh                                  # 3 rounds, c=32, 8 s per run
#   BENCH_ROUNDS=5 BENCH_C=64 BENCH_DURATION=10 bench/oip_ab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${BENCH_ROUNDS:-3}
C=${BENCH_C:-32}
DURATION=${BENCH_DURATION:-8}
PORT=${BENCH_PORT:-3917}
command -v h2load >/dev/null || {
  echo "bench: installing h2load (Debian package nghttp2-client)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nghttp2-client >&2
}
. bench/setup.sh # wrk, the release build, ORT_DYLIB_PATH, BENCH_IMAGE
server=${CARGO_TARGET_DIR:-target}/release/celestial-server
body=$(mktemp)
trap 'rm -f "$body"' EXIT
python3 bench/grpc_body.py "$BENCH_IMAGE" "$body"
mkdir -p bench/results
exec > >(tee "bench/results/$(date -u +%Y%m%dT%H%M%SZ)-oip.txt") 2>&1
echo "# Open Inference Protocol A/B $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), c=$C, ${DURATION}s per run, $ROUNDS rounds, $(basename "$BENCH_IMAGE")"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
tick=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The load generator's own CPU seconds (user + system), then its output.
measured() { python3 -c 'import resource, subprocess, sys
out = subprocess.run(sys.argv[1:], capture_output=True, text=True).stdout
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"CPU {r.ru_utime + r.ru_stime:.3f}"); print(out)' "$@"; }
url=http://127.0.0.1:$PORT
# The server's count of gRPC ModelInfer calls answered OK (the metrics' status 200).
grpc_ok() {
  curl -s "$url/metrics" | awk '/^celestial_http_requests_total\{route="\/inference.GRPCInferenceService\/ModelInfer",method="POST",status="200"\}/ {n = $2} END {print n + 0}'
}
load() { # variant, duration -> the generator's output (with its CPU line)
  case $1 in
    predict) measured wrk -t 2 -c "$C" -d "$2s" --timeout 10s -s bench/multipart.lua "$url/predict" ;;
    rest) measured wrk -t 2 -c "$C" -d "$2s" --timeout 10s -s bench/v2_binary.lua "$url" ;;
    grpc) measured h2load -t 2 -c "$C" -m 1 -D "$2" -d "$body" -H 'content-type: application/grpc' \
      -H 'te: trailers' "$url/inference.GRPCInferenceService/ModelInfer" ;;
  esac
}
for round in $(seq "$ROUNDS"); do
  for variant in predict rest grpc; do
    "$server" --host 127.0.0.1 --port "$PORT" --log-filter warn >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 200); do curl -sf "$url/readyz" >/dev/null && break; sleep 0.05; done
    load "$variant" 2 >/dev/null # warm-up
    ok_before=$(grpc_ok)
    before=$(cpu_ticks "$pid")
    out=$(load "$variant" "$DURATION")
    server_s=$(awk -v a="$before" -v b="$(cpu_ticks "$pid")" -v t="$tick" 'BEGIN {print (b - a) / t}')
    gen_s=$(sed -n 's/^CPU //p' <<<"$out")
    case $variant in
      grpc)
        n=$(sed -n 's/^requests: \([0-9]*\) total.*/\1/p' <<<"$out")
        rps=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
        mean=$(awk '/^time for request:/ {print $6}' <<<"$out") # min, max, mean, sd
        detail="mean=$mean grpc_ok=$(( $(grpc_ok) - ok_before ))" ;;
      *)
        line=$(grep '^BENCH' <<<"$out")
        n=$(sed -n 's/.*requests=\([0-9]*\).*/\1/p' <<<"$line")
        rps=$(sed -n 's/.* rps=\([0-9.]*\).*/\1/p' <<<"$line")
        detail=$(sed -n 's/.*\(p50_ms=[0-9.]*\).*\(p99_ms=[0-9.]*\).*\(non2xx=[0-9]*\).*/\1 \2 \3/p' <<<"$line") ;;
    esac
    awk -v r="$round" -v v="$variant" -v n="$n" -v rps="$rps" -v s="$server_s" -v g="$gen_s" -v d="$detail" \
      'BEGIN {printf "round=%s %-7s rps=%s requests=%s %s server_cpu_ms_per_req=%.3f generator_cpu_ms_per_req=%.3f\n", r, v, rps, n, d, 1000 * s / n, 1000 * g / n}'
    kill -TERM "$pid"; wait "$pid" || true
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

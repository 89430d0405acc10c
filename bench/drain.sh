#!/usr/bin/env bash
# Drain under load: two servers, A (with --drain-delay) and B, behind a client that
# does what a load balancer does: it sends each request to the servers in turn and, when a
# connection is refused or closes without an answer, retries on the other one. A gets SIGTERM
# in the middle of the run. Counted: answers, failed requests (a non-200 answer, or no server
# answered), retries, and A's 200s carrying `Connection: close` during its drain. The goal is 0
# failed requests. Not part of scripts/test; about 20 s.
#
#   bench/drain.sh                                   # 16 client threads, SIGTERM after 5 s of 14 s
#   BENCH_THREADS=32 BENCH_DRAIN_DELAY=3s bench/drain.sh -- --workers 1   # args after -- go to both servers
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${BENCH_PORT:-3917}
THREADS=${BENCH_THREADS:-16}
DRAIN_DELAY=${BENCH_DRAIN_DELAY:-2s}
SECONDS_TOTAL=${BENCH_SECONDS:-14}
SIGTERM_AFTER=${BENCH_SIGTERM_AFTER:-5}
server_args=()
if [ "${1:-}" = "--" ]; then shift; server_args=("$@"); fi
scripts/build-deps
cargo build --release --locked -p celestial-server >&2
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/onnxruntime.sh)}
dataset=${CELESTIAL_DATASET:-../shared/dataset}
image=${BENCH_IMAGE:-$dataset/raw/$(head -1 model/validation-split.txt)}
[ -f "$image" ] || { echo "bench: image $image not found (set CELESTIAL_DATASET or BENCH_IMAGE)" >&2; exit 1; }
bin=${CARGO_TARGET_DIR:-target}/release/celestial-server
mkdir -p bench/results
out=bench/results/$(date -u +%Y%m%dT%H%M%SZ)-drain.txt
exec > >(tee "$out") 2>&1
echo "# drain under load $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD)$(git diff --quiet -- server bench || echo ' (+ local changes)')"
echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "A: --drain-delay $DRAIN_DELAY, SIGTERM after ${SIGTERM_AFTER} s of ${SECONDS_TOTAL} s; $THREADS client threads; server args: ${server_args[*]:-(defaults)}"
"$bin" --host 127.0.0.1 --port "$PORT" --log-filter warn --drain-delay "$DRAIN_DELAY" "${server_args[@]}" &
a=$!
"$bin" --host 127.0.0.1 --port $((PORT + 1)) --log-filter warn "${server_args[@]}" &
b=$!
trap 'kill -TERM $a $b 2>/dev/null || true' EXIT
for p in "$PORT" $((PORT + 1)); do
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$p/readyz" >/dev/null && break; sleep 0.05; done
  curl -sf "http://127.0.0.1:$p/readyz" >/dev/null || { echo "bench: no server ready on port $p (in use? set BENCH_PORT)" >&2; exit 1; }
done
python3 bench/drain_client.py "$image" "$PORT" $((PORT + 1)) "$THREADS" "$SECONDS_TOTAL" &
client=$!
sleep "$SIGTERM_AFTER"
signalled=$(date +%s.%N)
kill -TERM $a
wait $a && status=0 || status=$?
echo "A: exit $status $(awk -v s="$signalled" -v e="$(date +%s.%N)" 'BEGIN{printf "%.2f", e - s}') s after SIGTERM"
wait $client
kill -TERM $b; wait $b || true
trap - EXIT
echo "results: $out"

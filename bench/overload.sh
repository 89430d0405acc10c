#!/usr/bin/env bash
# Overload goodput: 2xx answers per second at c=64 (the default --max-concurrency, the
# peak) and at c=512 (8x overload, where most requests are refused with 429). 429s keep their
# connection alive, so shedding costs a small answer, not a reconnect; the goal is goodput at
# c=512 within 80 % of goodput at c=64. Not part of scripts/test; about 45 s.
#
#   bench/overload.sh                                  # 20 s per concurrency
#   BENCH_DURATION=10s bench/overload.sh -- --workers 2   # args after -- go to the server
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${BENCH_DURATION:-20s}
PORT=${BENCH_PORT:-3917}
server_args=()
if [ "${1:-}" = "--" ]; then shift; server_args=("$@"); fi
. bench/setup.sh # wrk, the release build, ORT_DYLIB_PATH, BENCH_IMAGE
bin=${CARGO_TARGET_DIR:-target}/release/celestial-server
mkdir -p bench/results
out=bench/results/$(date -u +%Y%m%dT%H%M%SZ)-overload.txt
exec > >(tee "$out") 2>&1
echo "# overload goodput $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD)$(git diff --quiet -- server bench || echo ' (+ local changes)'), $DURATION per run"
echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg); server args: ${server_args[*]:-(defaults)}"
"$bin" --host 127.0.0.1 --port "$PORT" --log-filter warn "${server_args[@]}" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.05; done
wrk -t 2 -c 8 -d 3s -s bench/multipart.lua "http://127.0.0.1:$PORT/predict" >/dev/null   # warm-up
declare -A goodput
for c in 64 512; do
  line=$(wrk -t 2 -c "$c" -d "$DURATION" --timeout 10s -s bench/multipart.lua "http://127.0.0.1:$PORT/predict" | grep '^BENCH')
  goodput[$c]=$(awk -v l="$line" 'BEGIN{n=split(l,f," "); for(i=1;i<=n;i++){split(f[i],kv,"="); v[kv[1]]=kv[2]} printf "%.0f", (v["requests"]-v["non2xx"])/v["duration_s"]}')
  echo "c=$c ${line#BENCH } goodput_rps=${goodput[$c]}"
done
echo "server peak RSS: $(awk '/VmHWM/{print $2, $3}' /proc/$pid/status)"
echo "server rejections: $(curl -s "http://127.0.0.1:$PORT/metrics" | grep '^celestial_rejections_total' | tr '\n' ' ')"
kill -TERM $pid; wait $pid && echo "server exit after SIGTERM: 0"
trap - EXIT
awk -v a="${goodput[64]}" -v b="${goodput[512]}" 'BEGIN{r = (a > 0) ? 100 * b / a : 0; printf "goodput c=512 / c=64: %.0f %% (goal >= 80 %%): %s\n", r, (r >= 80) ? "met" : "NOT met"}'
echo "results: $out"

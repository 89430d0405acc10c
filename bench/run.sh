#!/usr/bin/env bash
# Rerunnable server benchmark (not part of scripts/test). Builds the release binary, then:
#   1. /readyz time from process start (5 trials) and RSS at ready;
#   2. wrk posting a real 128x128 dataset JPEG as multipart `image` to POST /predict at each
#      concurrency for BENCH_DURATION (default 20s), with the server's peak RSS (VmHWM) afterwards;
#   3. the in-process pipeline benchmark (decode -> preprocess -> inference, 1 and 2 threads).
# Everything stays on 127.0.0.1. Results go to stdout and bench/results/<UTC time>.txt.
#
#   bench/run.sh                      # defaults
#   BENCH_DURATION=10s BENCH_CONCURRENCY="1 8 32 64" bench/run.sh -- --workers 2   # args after -- go to the server
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${BENCH_DURATION:-20s}
CONCURRENCY=${BENCH_CONCURRENCY:-1 8 32 64}
PORT=${BENCH_PORT:-3917}
PIPELINE_SECONDS=${BENCH_PIPELINE_SECONDS:-10}
server_args=()
if [ "${1:-}" = "--" ]; then shift; server_args=("$@"); fi

. bench/setup.sh # wrk, the release build, ORT_DYLIB_PATH, BENCH_IMAGE
bin=target/release/celestial-server
mkdir -p bench/results
out=bench/results/$(date -u +%Y%m%dT%H%M%SZ).txt
exec > >(tee "$out") 2>&1

echo "# celestial-server benchmark $(date -u +%FT%TZ)"
echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet -- server bench || echo ' (+ local changes)')"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/{print $2}') GiB"
echo "image: $BENCH_IMAGE ($(stat -c %s "$BENCH_IMAGE") bytes), duration per run: $DURATION, server args: ${server_args[*]:-(defaults)}"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "busiest other processes:"; ps -eo pcpu,comm --sort=-pcpu | head -6 | sed 's/^/  /'

echo; echo "## readyz"
python3 bench/readyz_time.py "$bin" "$PORT" 5 -- "${server_args[@]}"

echo; echo "## HTTP (wrk, multipart image, POST /predict)"
"$bin" --host 127.0.0.1 --port "$PORT" --log-filter warn "${server_args[@]}" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.05; done
wrk -t 2 -c 8 -d 3s -s bench/multipart.lua "http://127.0.0.1:$PORT/predict" >/dev/null   # warm-up
# CPU time stolen by the hypervisor during a run, in % of the machine (the cores are virtual).
cpu_times() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $9}' /proc/stat; }
for c in $CONCURRENCY; do
  t=$(( c < 2 ? 1 : 2 ))
  load=$(cut -d' ' -f1 /proc/loadavg)
  read -r total0 steal0 < <(cpu_times)
  line=$(wrk -t "$t" -c "$c" -d "$DURATION" --timeout 10s -s bench/multipart.lua "http://127.0.0.1:$PORT/predict" | grep '^BENCH')
  read -r total1 steal1 < <(cpu_times)
  steal=$(awk -v a="$total0" -v b="$total1" -v s="$steal0" -v t="$steal1" 'BEGIN{printf "%.1f", (b > a) ? 100 * (t - s) / (b - a) : 0}')
  echo "c=$c ${line#BENCH } load_before=$load steal_pct=$steal"
done
echo "server peak RSS: $(awk '/VmHWM/{print $2, $3}' /proc/$pid/status)"
echo "server rejections: $(curl -s "http://127.0.0.1:$PORT/metrics" | grep '^celestial_rejections_total' | tr '\n' ' ')"
kill -TERM $pid; wait $pid && echo "server exit after SIGTERM: 0"
trap - EXIT

echo; echo "## in-process pipeline"
cargo bench --locked -p celestial-server --bench pipeline -- "$BENCH_IMAGE" "$PIPELINE_SECONDS" 2>/dev/null | grep -E '^(PIPELINE|image)'
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "results: $out"

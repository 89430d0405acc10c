#!/usr/bin/env bash
# Worst-case memory of one pod under hostile images (issue 13, rows 3 and 4). Not part of scripts/test.
# Builds the release binary, generates the hostile images (server/tests/hostile_images.rs, ignored
# test `write_hostile_images`), starts the server with the Kubernetes Deployment's settings
# (kubernetes/deployment.yaml: CELESTIAL_WORKERS=1, other flags at their defaults) and posts a
# mix of them from BENCH_CLIENTS parallel clients for BENCH_DURATION seconds: 16-bit 8000x5000
# PNGs, PNG and GIF decompression bombs, huge progressive and baseline JPEGs, the truncated 631-byte
# JPEG, plus normal dataset JPEGs. Records the status counts and the server's peak RSS (VmHWM),
# which must stay below the Deployment's 256Mi limit. Loopback only. Results go to stdout and
# bench/results/<UTC time>-memory.txt.
#
#   bench/memory.sh                                   # 16 clients, 60 s
#   BENCH_CLIENTS=32 BENCH_DURATION=120 bench/memory.sh -- --max-decode-bytes 100000000
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${BENCH_CLIENTS:-16}
DURATION=${BENCH_DURATION:-60}
PORT=${BENCH_PORT:-3918}
LIMIT_MIB=256
server_args=()
if [ "${1:-}" = "--" ]; then shift; server_args=("$@"); fi

scripts/build-deps
cargo build --release --locked -p celestial-server >&2
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/onnxruntime.sh)}
dir=$(mktemp -d /tmp/celestial-hostile.XXXXXX)
trap 'rm -rf "$dir"; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true' EXIT
CELESTIAL_HOSTILE_DIR=$dir cargo test --locked -p celestial-server --test hostile_images \
  -- --ignored --exact write_hostile_images --nocapture >&2
dataset=${CELESTIAL_DATASET:-../shared/dataset}
normal=$dataset/raw/$(head -1 model/validation-split.txt)
[ -f "$normal" ] && cp "$normal" "$dir/normal.jpg"

mkdir -p bench/results
exec > >(tee "bench/results/$(date -u +%Y%m%dT%H%M%SZ)-memory.txt") 2>&1
echo "# hostile-image memory $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD)$(git diff --quiet -- server bench || echo ' (+ local changes)')"
echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "clients: $CLIENTS, duration: ${DURATION}s, server: CELESTIAL_WORKERS=1 ${server_args[*]:-}"
ls -l "$dir" | awk 'NR>1 {print "  " $5 " bytes  " $9}'

CELESTIAL_WORKERS=1 CELESTIAL_LOG_FORMAT=json target/release/celestial-server \
  --host 127.0.0.1 --port "$PORT" --log-filter warn "${server_args[@]}" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.05; done
curl -sf -o /dev/null -F "image=@$dir/normal.jpg" "http://127.0.0.1:$PORT/predict" || true
echo "RSS at ready + one prediction: $(awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' /proc/$pid/status)"

files=("$dir"/*.png "$dir"/*.gif "$dir"/*.jpg)
end=$((SECONDS + DURATION))
client() {
  local i=$1 n=0
  while [ $SECONDS -lt $end ]; do
    local f=${files[$(((i + n) % ${#files[@]}))]}
    n=$((n + 1))
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 120 -F "image=@$f" "http://127.0.0.1:$PORT/predict" || echo 000)
    echo "$(basename "$f") $code"
  done
}
for i in $(seq "$CLIENTS"); do client "$i" >"$dir/client-$i.log" & done
peak_seen=0
while [ $SECONDS -lt $end ]; do
  rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
  [ "$rss" -gt "$peak_seen" ] && peak_seen=$rss
  sleep 0.2
done
wait $(jobs -p | grep -v "^$pid$") 2>/dev/null || true
echo "answers (file status count):"
cat "$dir"/client-*.log | sort | uniq -c | awk '{print "  " $2 " " $3 " " $1}'
hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
printf 'PEAK VmHWM=%.1f MiB (sampled VmRSS max %.1f MiB), limit %d MiB: %s\n' \
  "$(echo "$hwm / 1024" | bc -l)" "$(echo "$peak_seen / 1024" | bc -l)" "$LIMIT_MIB" \
  "$([ "$hwm" -lt $((LIMIT_MIB * 1024)) ] && echo below || echo OVER)"
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
pid=

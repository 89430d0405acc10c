#!/usr/bin/env bash
# Worst-case memory of one pod under hostile images (decode budget and row-by-row decoding). Not part of scripts/test.
# Builds the release binary, generates the hostile images (server/tests/hostile_images.rs, ignored
# test `write_hostile_images`: 16-bit 8000x5000 PNG, PNG and GIF decompression bombs, huge
# progressive and baseline JPEGs, the 630-byte JPEG that declares 6000x6000) and runs the server
# with the Kubernetes Deployment's settings (kubernetes/deployment.yaml: CELESTIAL_WORKERS=1, the
# other flags at their defaults):
#   1. single: each image alone against a fresh server: status, wall time, the server's CPU time
#      for the request (utime + stime from /proc) and its peak RSS (VmHWM);
#   2. mix: BENCH_CLIENTS parallel clients post the images (and a normal dataset JPEG) in turn for
#      BENCH_DURATION seconds: status counts and the server's peak RSS, which must stay below the
#      Deployment's 256Mi limit.
# Loopback only. Results go to stdout and bench/results/<UTC time>-memory.txt.
#
#   bench/memory.sh                                   # both phases, 16 clients, 60 s
#   BENCH_CLIENTS=32 BENCH_DURATION=120 bench/memory.sh -- --max-decode-bytes 100000000
#   BENCH_BIN=/tmp/old/celestial-server BENCH_PHASES=single bench/memory.sh   # another build
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${BENCH_CLIENTS:-16}
DURATION=${BENCH_DURATION:-60}
PORT=${BENCH_PORT:-3918}
PHASES=${BENCH_PHASES:-single mix}
LIMIT_MIB=256
server_args=()
if [ "${1:-}" = "--" ]; then shift; server_args=("$@"); fi

scripts/build-deps
cargo build --release --locked -p celestial-server >&2
bin=${BENCH_BIN:-target/release/celestial-server}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/onnxruntime.sh)}
dir=$(mktemp -d /tmp/celestial-hostile.XXXXXX)
pid=
trap 'rm -rf "$dir"; if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi' EXIT
CELESTIAL_HOSTILE_DIR=$dir cargo test --locked -p celestial-server --test hostile_images \
  -- --ignored --exact write_hostile_images --nocapture >&2
dataset=${CELESTIAL_DATASET:-../shared/dataset}
normal=$dataset/raw/$(head -1 model/validation-split.txt)
[ -f "$normal" ] && cp "$normal" "$dir/normal.jpg"

mkdir -p bench/results
exec > >(tee "bench/results/$(date -u +%Y%m%dT%H%M%SZ)-memory.txt") 2>&1
echo "# hostile-image memory $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD)$(git diff --quiet -- server bench || echo ' (+ local changes)')"
echo "binary: $bin; machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "server: CELESTIAL_WORKERS=1 ${server_args[*]:-(other flags at their defaults)}"
find "$dir" -maxdepth 1 -type f -printf '  %s bytes  %f\n' | sort -k3

start_server() {
  CELESTIAL_WORKERS=1 "$bin" --host 127.0.0.1 --port "$PORT" --log-filter warn "${server_args[@]}" >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && return; sleep 0.05; done
  echo "server not ready" >&2; exit 1
}
stop_server() { kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=; }
kib() { awk -v f="$1:" '$1 == f {print $2}' "/proc/$pid/status"; }
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{print int(($14 + $15) * 1000 / hz)}' "/proc/$pid/stat"; }
post() { curl -s -o "$dir/answer" -w '%{http_code} %{time_total}\n' --max-time 120 -F "image=@$1" "http://127.0.0.1:$PORT/predict" || echo "000 0"; }

case " $PHASES " in *" single "*)
  echo
  echo "## single: one request per fresh server (after one normal prediction)"
  printf '%-28s %6s %9s %8s %10s  %s\n' image status wall_s cpu_ms peak_MiB answer
  for f in "$dir"/*.png "$dir"/*.gif "$dir"/*.jpg; do
    start_server
    post "$dir/normal.jpg" >/dev/null
    before=$(cpu_ms)
    read -r code wall < <(post "$f")
    printf '%-28s %6s %9s %8s %10.1f  %s\n' "$(basename "$f")" "$code" "$wall" "$(($(cpu_ms) - before))" \
      "$(echo "$(kib VmHWM) / 1024" | bc -l)" "$(head -c 160 "$dir/answer")"
    stop_server
  done
;; esac

case " $PHASES " in *" mix "*)
  echo
  echo "## mix: $CLIENTS clients for ${DURATION}s"
  start_server
  post "$dir/normal.jpg" >/dev/null
  printf 'RSS at ready + one prediction: %.1f MiB\n' "$(echo "$(kib VmRSS) / 1024" | bc -l)"
  files=("$dir"/*.png "$dir"/*.gif "$dir"/*.jpg)
  end=$((SECONDS + DURATION))
  client() {
    local i=$1 n=0 f code
    while [ $SECONDS -lt $end ]; do
      f=${files[$(((i + n) % ${#files[@]}))]}
      n=$((n + 1))
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 120 -F "image=@$f" "http://127.0.0.1:$PORT/predict" || echo 000)
      echo "$(basename "$f") $code"
    done
  }
  clients=()
  for i in $(seq "$CLIENTS"); do client "$i" >"$dir/client-$i.log" & clients+=($!); done
  rss_max=0
  while [ $SECONDS -lt $end ]; do
    rss=$(kib VmRSS); [ "$rss" -gt "$rss_max" ] && rss_max=$rss
    sleep 0.2
  done
  wait "${clients[@]}" 2>/dev/null || true
  echo "answers (image status count):"
  cat "$dir"/client-*.log | sort | uniq -c | awk '{printf "  %-28s %s %6d\n", $2, $3, $1}'
  hwm=$(kib VmHWM)
  printf 'PEAK VmHWM=%.1f MiB (sampled VmRSS max %.1f MiB); Deployment limit %d MiB: %s\n' \
    "$(echo "$hwm / 1024" | bc -l)" "$(echo "$rss_max / 1024" | bc -l)" "$LIMIT_MIB" \
    "$([ "$hwm" -lt $((LIMIT_MIB * 1024)) ] && echo below || echo OVER)"
  stop_server
;; esac

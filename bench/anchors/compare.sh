#!/usr/bin/env bash
# celestial-server beside the Python anchor(s) of bench/anchors/, under the same wrk load, alternating
# server by server within each round so drifts of the shared machine hit both alike. Records req/s,
# p50, p99, errors and peak RSS (the whole process tree: uvicorn's master and workers) per run, then
# the mean per server and concurrency and the ratio celestial / FastAPI. Not part of scripts/test.
#
#   bench/anchors/compare.sh                       # 3 rounds, c=8 32 64, 8 s per run
#   BENCH_ROUNDS=5 BENCH_CS="32" BENCH_DURATION=10s bench/anchors/compare.sh
#
# Both serve model/celestial-bodies.onnx (MODEL= to change) with 2 workers (one per core here):
# celestial-server --workers 2, uvicorn --workers 2. The anchor's venv (pinned requirements.txt) is
# kept in ${CELESTIAL_CACHE:-~/.cache/celestial}/anchors/, keyed by the requirements' hash.
# Results go to stdout and bench/results/<UTC time>-anchors.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${BENCH_ROUNDS:-3}
CS=${BENCH_CS:-8 32 64}
DURATION=${BENCH_DURATION:-8s}
WORKERS=${BENCH_WORKERS:-2}
PORT=${BENCH_PORT:-3918}
MODEL=${MODEL:-model/celestial-bodies.onnx}
. bench/setup.sh # wrk, the release build, ORT_DYLIB_PATH, BENCH_IMAGE

# The anchor's own venv, pinned.
req=bench/anchors/fastapi/requirements.txt
venv=${CELESTIAL_CACHE:-$HOME/.cache/celestial}/anchors/fastapi-$(sha256sum "$req" | cut -c1-16)
if [ ! -x "$venv/bin/uvicorn" ]; then
  echo "bench: creating the FastAPI anchor's venv $venv" >&2
  rm -rf "$venv"; python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
fi

# Peak RSS (MiB) of a process tree, sampled every 100 ms until the file $2 appears.
peak_rss() {
  local root=$1 stop=$2 peak=0
  while [ ! -e "$stop" ]; do
    local pids=$root kids=$root total=0
    while [ -n "$kids" ]; do kids=$(pgrep -d ' ' -P "${kids// /,}" || true); pids="$pids $kids"; done
    for p in $pids; do total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done
    [ "$total" -gt "$peak" ] && peak=$total
    sleep 0.1
  done
  echo $((peak / 1024))
}

start_server() {
  case $1 in
    celestial) target/release/celestial-server --host 127.0.0.1 --port "$PORT" --workers "$WORKERS" \
                 --model "$MODEL" --log-filter warn >/dev/null 2>&1 & ;;
    fastapi) MODEL=$MODEL "$venv/bin/uvicorn" app:app --app-dir bench/anchors/fastapi --host 127.0.0.1 \
               --port "$PORT" --workers "$WORKERS" --log-level warning --no-access-log >/dev/null 2>&1 & ;;
  esac
  pid=$!
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && return; sleep 0.1; done
  echo "bench: $1 did not get ready" >&2; exit 1
}

mkdir -p bench/results
out=bench/results/$(date -u +%Y%m%dT%H%M%SZ)-anchors.txt
exec > >(tee "$out") 2>&1
echo "# anchors $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), model $MODEL, $WORKERS workers each, c in {$CS}, $DURATION per run, $ROUNDS rounds"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for round in $(seq "$ROUNDS"); do
  for c in $CS; do
    for server in celestial fastapi; do
      start_server "$server"
      wrk -t 2 -c 8 -d 2s -s bench/multipart.lua "http://127.0.0.1:$PORT/predict" >/dev/null # warm-up
      rm -f "$tmp/stop"; peak_rss "$pid" "$tmp/stop" > "$tmp/rss" &
      sampler=$!
      line=$(wrk -t 2 -c "$c" -d "$DURATION" --timeout 10s -s bench/multipart.lua "http://127.0.0.1:$PORT/predict" | grep '^BENCH')
      touch "$tmp/stop"; wait "$sampler"
      echo "round=$round server=$server c=$c ${line#BENCH } rss_peak_mib=$(cat "$tmp/rss")"
      pkill -TERM -P "$pid" 2>/dev/null || true; kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    done
  done
done | tee "$tmp/runs"
echo
echo "# means over $ROUNDS rounds (req/s, p50 ms, p99 ms, errors = connect+read+write+timeout+non2xx, peak RSS MiB)"
awk '
  { split("", f); for (i = 1; i <= NF; i++) { n = index($i, "="); if (n) f[substr($i, 1, n - 1)] = substr($i, n + 1) }
    k = f["server"] " " f["c"]; runs[k]++; rps[k] += f["rps"]; p50[k] += f["p50_ms"]; p99[k] += f["p99_ms"]
    err[k] += f["errors_connect"] + f["errors_read"] + f["errors_write"] + f["errors_timeout"] + f["non2xx"]
    if (f["rss_peak_mib"] > rss[k]) rss[k] = f["rss_peak_mib"]; cs[f["c"]] = 1 }
  END {
    for (c in cs) {
      a = "celestial " c; b = "fastapi " c
      printf "c=%-3s celestial %8.1f req/s p50 %6.2f p99 %7.2f err %d rss %3d | fastapi %7.1f req/s p50 %7.2f p99 %8.2f err %d rss %3d | ratio %.1fx\n",
        c, rps[a] / runs[a], p50[a] / runs[a], p99[a] / runs[a], err[a], rss[a],
        rps[b] / runs[b], p50[b] / runs[b], p99[b] / runs[b], err[b], rss[b], (rps[a] / runs[a]) / (rps[b] / runs[b])
    }
  }' "$tmp/runs" | sort -t= -k2 -n

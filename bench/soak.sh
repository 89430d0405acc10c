#!/usr/bin/env bash
# Soak test (not part of scripts/test): the release server with the Deployment's settings under
# steady prediction load (wrk, c=SOAK_CONCURRENCY) plus a trickle of hostile requests (corrupt and
# truncated images, wrong media types, uploads abandoned midway, idle connections), for
# SOAK_DURATION (default 10m). RSS is sampled every 10 s; the verdict compares the last sample with
# the one after the warm-up minute: growth must stay <= SOAK_MAX_GROWTH_PCT (default 5).
# Everything stays on 127.0.0.1. Results go to stdout and bench/results/<UTC time>-soak.txt.
#
#   bench/soak.sh                          # 10 minutes
#   SOAK_DURATION=2m bench/soak.sh         # a shorter look
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${SOAK_DURATION:-10m}
CONCURRENCY=${SOAK_CONCURRENCY:-32}
MAX_GROWTH=${SOAK_MAX_GROWTH_PCT:-5}
PORT=${BENCH_PORT:-3918}

. bench/setup.sh # wrk, the release build, ORT_DYLIB_PATH, BENCH_IMAGE
bin=target/release/celestial-server
seconds=$(python3 -c "
import re,sys
s=sys.argv[1]; m=re.fullmatch(r'(\d+)(s|m|h)?', s)
print(int(m[1]) * {None:1,'s':1,'m':60,'h':3600}[m[2]])" "$DURATION")
mkdir -p bench/results
out=bench/results/$(date -u +%Y%m%dT%H%M%SZ)-soak.txt
exec > >(tee "$out") 2>&1

# The Deployment's settings: its environment variables, as the pod gets them.
deploy_env=$(python3 - <<'EOF'
import re
text = open("kubernetes/deployment.yaml").read()
pairs = re.findall(r"- name: (CELESTIAL_\w+)\n\s+value: \"?([^\"\n]*)\"?", text)
print(" ".join(f"{k}={v}" for k, v in pairs if k not in ("CELESTIAL_HOST", "CELESTIAL_PORT")))
EOF
)

echo "# celestial-server soak $(date -u +%FT%TZ)"
echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet -- server bench || echo ' (+ local changes)')"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "duration: $DURATION, wrk c=$CONCURRENCY, deployment env: $deploy_env"

work=$(mktemp -d)
env $deploy_env "$bin" --host 127.0.0.1 --port "$PORT" --log-filter warn &
pid=$!
cleanup() { kill -TERM "$pid" 2>/dev/null || true; jobs -p | xargs -r kill 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.05; done
url=http://127.0.0.1:$PORT

# Hostile inputs, made once: a truncated JPEG, random bytes, a JPEG claiming 6000x6000.
head -c 700 "$BENCH_IMAGE" > "$work/truncated.jpg"
head -c 4096 /dev/urandom > "$work/random.bin"
python3 - "$work/huge-header.jpg" <<'EOF'
import struct, sys
# SOI, a baseline SOF0 that declares 6000x6000 RGB, then the end: a header with no image behind it
sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, 6000, 6000, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
open(sys.argv[1], "wb").write(b"\xff\xd8" + sof + b"\xff\xd9")
EOF

hostile() {
  while :; do
    curl -s -o /dev/null -H 'content-type: image/jpeg' --data-binary @"$work/truncated.jpg" "$url/predict" || true
    curl -s -o /dev/null -H 'content-type: image/jpeg' --data-binary @"$work/random.bin" "$url/predict" || true
    curl -s -o /dev/null -H 'content-type: image/jpeg' --data-binary @"$work/huge-header.jpg" "$url/predict" || true
    curl -s -o /dev/null -H 'content-type: ;;;=;' --data-binary @"$BENCH_IMAGE" "$url/predict" || true
    # an upload abandoned midway: headers promise 100 kB, 1 kB comes, then the client leaves
    python3 - "$PORT" <<'EOF' || true
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n" + b"\0" * 1024)
s.close()
EOF
    sleep 0.5
  done
}
hostile &

rss() { awk '/VmRSS/{print $2}' "/proc/$pid/status"; }
sampler() {
  local t=0
  while :; do
    echo "t=${t}s rss_kb=$(rss)"
    sleep 10; t=$((t + 10))
  done
}
sampler > "$work/rss.log" &
wrk -t 2 -c "$CONCURRENCY" -d "${seconds}s" --timeout 10s -s bench/multipart.lua "$url/predict" | grep -E '^BENCH|Non-2xx|Socket errors' || true
sleep 1
cat "$work/rss.log"
mapfile -t samples < <(awk -F'rss_kb=' '{print $2}' "$work/rss.log")
warm=${samples[6]:-${samples[0]}}   # after the first minute
last=${samples[-1]}
echo "server peak RSS: $(awk '/VmHWM/{print $2, $3}' "/proc/$pid/status")"
echo "rejections: $(curl -s "$url/metrics" | grep '^celestial_rejections_total' | tr '\n' ' ')"
growth=$(awk -v a="$warm" -v b="$last" 'BEGIN{printf "%.1f", 100 * (b - a) / a}')
echo "RSS after warm-up ${warm} kB, at the end ${last} kB: growth ${growth} % (limit ${MAX_GROWTH} %)"
kill -TERM "$pid"; wait "$pid" && echo "server exit after SIGTERM: 0"
awk -v g="$growth" -v m="$MAX_GROWTH" 'BEGIN{exit !(g <= m)}' && echo "soak: PASS" || { echo "soak: FAIL"; exit 1; }
echo "results: $out"

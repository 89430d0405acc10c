#!/usr/bin/env bash
# How cost grows: req/s and latency of POST /predict vs concurrency (1..256, the dataset image) and
# vs image size (64 px .. 2048 px = 4 Mpx, JPEG q90 and PNG, at c=8), one server (defaults, release
# build), then a plot (bench/results/<UTC time>-growth.png, copied to bench/growth.png for
# bench/README.md) and the table (…-growth.txt). Bounded: 5 s per point (BENCH_DURATION), ~2 min in all.
# Not part of scripts/test.
#
#   bench/growth.sh                 # this tree's server with its defaults
#   bench/growth.sh -- --workers 1  # arguments after -- go to the server
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${1:-}" = -- ] && shift
DURATION=${BENCH_DURATION:-5s}
PORT=${BENCH_PORT:-3919}
. bench/setup.sh # wrk, the release build, ORT_DYLIB_PATH, BENCH_IMAGE
model_dir=$PWD/model
# shellcheck source=../model/venv.sh
. model/venv.sh # Python with Pillow and matplotlib (model/requirements.txt)
base=$BENCH_IMAGE
stamp=$(date -u +%Y%m%dT%H%M%SZ)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"; kill "$pid" 2>/dev/null || true' EXIT
"$model_dir/.venv/bin/python" - "$base" "$tmp" <<'PY'
import sys
from PIL import Image
src, out = sys.argv[1], sys.argv[2]
im = Image.open(src).convert("RGB")
for px in (64, 256, 1024, 2048):
    big = im.resize((px, px), Image.Resampling.BICUBIC)
    big.save(f"{out}/{px}.jpg", quality=90)
    big.save(f"{out}/{px}.png")
PY
target/release/celestial-server --host 127.0.0.1 --port "$PORT" --log-filter warn "$@" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
point() { # kind value image concurrency
  local t=$(( $4 < 2 ? $4 : 2 ))
  BENCH_IMAGE=$3 wrk -t "$t" -c 8 -d 1s -s bench/multipart.lua "http://127.0.0.1:$PORT/predict" >/dev/null
  local line
  line=$(BENCH_IMAGE=$3 wrk -t "$t" -c "$4" -d "$DURATION" --timeout 20s -s bench/multipart.lua "http://127.0.0.1:$PORT/predict" | grep '^BENCH')
  echo "$1=$2 bytes=$(stat -c %s "$3") ${line#BENCH }"
}
out=bench/results/$stamp-growth.txt
{
  echo "# growth $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), server flags: ${*:-defaults}, $DURATION per point, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  for c in 1 2 4 8 16 32 64 128 256; do point c "$c" "$base" "$c"; done
  for fmt in jpg png; do for px in 64 256 1024 2048; do point "$fmt" "$px" "$tmp/$px.$fmt" 8; done; done
} | tee "$out"
"$model_dir/.venv/bin/python" bench/plot_growth.py "$out" "bench/results/$stamp-growth.png"
cp "bench/results/$stamp-growth.png" bench/growth.png
echo "plot: bench/growth.png" >&2

#!/usr/bin/env bash
# What the start-up self-check costs in readiness: time from process start to the first 200 of /readyz
# (bench/readyz_time.py, polled every ms) for the committed model, which carries its golden set
# (`celestial.golden`: the check runs), and for the same file without that one key (no check: the start as it
# was before the self-check), alternating the two start by start so that drifts of the shared machine hit both
# alike. Not part of scripts/test.
#
#   bench/readiness.sh                               # 10 rounds (20 starts), release build
#   BENCH_ROUNDS=20 bench/readiness.sh -- --workers 1   # arguments after -- go to the server
#
# Prints each start, then per variant the median, min and max, the median difference, and the check's own time
# as /model reports it; results also go to bench/results/<UTC time>-readiness.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${BENCH_ROUNDS:-10}
PORT=${BENCH_PORT:-3918}
extra=()
if [ "${1:-}" = -- ]; then shift; extra=("$@"); fi
scripts/build-deps
cargo build --release --locked -p celestial-server >&2
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/onnxruntime.sh)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A copy of the binary for the whole run: the build directory may be shared with other builds.
cp "${CARGO_TARGET_DIR:-target}/release/celestial-server" "$work/celestial-server"
bin=$work/celestial-server
# The same file without celestial.golden (everything else byte for byte: celestial/golden_set.py checks that).
"$(scripts/python-tools.sh)/bin/python" - model/celestial-bodies.onnx "$work/without.onnx" <<'PY'
import sys

import onnx

m = onnx.load(sys.argv[1])
keep = [(p.key, p.value) for p in m.metadata_props if p.key != "celestial.golden"]
assert len(keep) == len(m.metadata_props) - 1, "the committed model has no golden set"
del m.metadata_props[:]
for k, v in keep:
    m.metadata_props.add(key=k, value=v)
onnx.save(m, sys.argv[2])
PY
mkdir -p bench/results
exec > >(tee "bench/results/$(date -u +%Y%m%dT%H%M%SZ)-readiness.txt") 2>&1
echo "# readiness $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), $ROUNDS rounds, server flags: ${extra[*]:-none}"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
  for variant in with without; do
    model=model/celestial-bodies.onnx
    [ "$variant" = without ] && model=$work/without.onnx
    line=$(python3 bench/readyz_time.py "$bin" "$PORT" 1 -- --model "$model" "${extra[@]}" | grep '^READYZ')
    ms=${line#*median_ms=}
    echo "round=$round self_check=$variant readyz_ms=${ms%% *}"
  done
done | tee "$work/starts.txt"
"$bin" --host 127.0.0.1 --port "$PORT" --log-filter warn "${extra[@]}" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.05; done
echo "self_check of the committed model (/model): $(curl -s "http://127.0.0.1:$PORT/model" | python3 -c 'import json, sys; print(json.load(sys.stdin)["self_check"])')"
kill -TERM "$pid"
wait "$pid" || true
python3 - "$work/starts.txt" <<'PY'
import re
import statistics
import sys

runs = {"with": [], "without": []}
for line in open(sys.argv[1]):
    m = re.search(r"self_check=(\w+) readyz_ms=([\d.]+)", line)
    if m:
        runs[m.group(1)].append(float(m.group(2)))
for name, ms in runs.items():
    print(f"{name:>7} golden set: median {statistics.median(ms):.1f} ms, min {min(ms):.1f}, max {max(ms):.1f} ({len(ms)} starts)")
diffs = [a - b for a, b in zip(runs["with"], runs["without"])]
print(
    f"READINESS self-check cost: median of the medians {statistics.median(runs['with']) - statistics.median(runs['without']):+.1f} ms, "
    f"median of the per-round differences {statistics.median(diffs):+.1f} ms"
)
PY
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

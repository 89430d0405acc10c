#!/usr/bin/env bash
# A/B comparison of server settings under the same load, alternating the variants round by round so
# that drifts of the shared machine hit every variant alike. Not part of scripts/test.
#
#   bench/ab.sh "--http-threads 1" "--http-threads 2"          # 3 rounds, c=32, 8 s per run
#   BENCH_ROUNDS=5 BENCH_C=64 BENCH_DURATION=10s bench/ab.sh "--workers 2" "--workers 3"
#   bench/ab.sh "@/tmp/base/target/release/celestial-server" ""    # another build vs this tree's
#
# Each variant is a quoted list of server flags ("" = defaults), optionally led by @BINARY to run
# another build of the server (e.g. a release build of an older commit in a git worktree; it
# defaults to this tree's target/release/celestial-server). The server runs with --log-filter warn
# unless a variant sets its own, and its logs go to /dev/null. Results go to
# stdout and bench/results/<UTC time>-ab.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/ab.sh \"<flags A>\" \"<flags B>\" [...]" >&2; exit 2; }
ROUNDS=${BENCH_ROUNDS:-3}
C=${BENCH_C:-32}
DURATION=${BENCH_DURATION:-8s}
PORT=${BENCH_PORT:-3917}
THREADS=$(( C < 2 ? C : 2 )) # wrk needs at least one connection per thread
. bench/setup.sh # wrk, the release build, ORT_DYLIB_PATH, BENCH_IMAGE
mkdir -p bench/results
exec > >(tee "bench/results/$(date -u +%Y%m%dT%H%M%SZ)-ab.txt") 2>&1
echo "# A/B $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), c=$C, $DURATION per run, $ROUNDS rounds"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
  for variant in "$@"; do
    case " $variant " in *" --log-filter"*) quiet=() ;; *) quiet=(--log-filter warn) ;; esac
    bin=target/release/celestial-server flags=$variant
    case $variant in @*) bin=${variant%% *}; bin=${bin#@}; flags=${variant#"@$bin"} ;; esac
    # shellcheck disable=SC2086 # a variant is a list of flags
    "$bin" --host 127.0.0.1 --port "$PORT" "${quiet[@]}" $flags >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.05; done
    wrk -t 2 -c 8 -d 2s -s bench/multipart.lua "http://127.0.0.1:$PORT/predict" >/dev/null # warm-up
    line=$(wrk -t "$THREADS" -c "$C" -d "$DURATION" --timeout 10s -s bench/multipart.lua "http://127.0.0.1:$PORT/predict" | grep '^BENCH')
    echo "round=$round [${variant:-defaults}] ${line#BENCH }"
    kill -TERM "$pid"; wait "$pid" || true
  done
done

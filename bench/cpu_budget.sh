#!/usr/bin/env bash
# Where the CPU of one prediction goes, and what that allows on this machine: runs the release
# server under wrk (multipart JPEG, POST /predict) and measures, per round, the server's and wrk's
# CPU time per request from /proc (utime + stime over the measured window); profiles the server
# with `perf` in its last round (its last BENCH_PERF_ROUNDS) and splits its time into JPEG entropy
# decoding (libjpeg-turbo's Huffman decoder), ONNX Runtime, the kernel and the rest
# (bench/cpu_budget.py). The last lines give the highest request rate the machine's cores allow if
# the parts that no server code can avoid (entropy decoding, inference, socket I/O) and the load
# generator were all that is left.
# With several variants, the rounds alternate between them (as bench/ab.sh does), so that drifts of
# the shared machine hit every variant alike, and each variant gets its own split.
# Not part of scripts/test. Results go to stdout and bench/results/<UTC time>-cpu-budget.txt.
#
#   bench/cpu_budget.sh                                            # 3 rounds at c=32, 10 s each
#   BENCH_ROUNDS=5 BENCH_C=64 bench/cpu_budget.sh -- --workers 2   # args after -- go to the server
#   bench/cpu_budget.sh "@/tmp/base/target/release/celestial-server" ""   # another build vs this one
#   BENCH_ROUNDS=6 BENCH_PERF_ROUNDS=3 bench/cpu_budget.sh ...   # the split from the last 3 rounds
#
# A variant is a quoted list of server flags ("" = defaults), optionally led by @BINARY (another
# build of the server; default: this tree's target/release/celestial-server).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${BENCH_ROUNDS:-3}
C=${BENCH_C:-32}
DURATION=${BENCH_DURATION:-10}
# One profiled round's split moves by a few points from run to run; more rounds average it.
PERF_ROUNDS=${BENCH_PERF_ROUNDS:-1}
PORT=${BENCH_PORT:-3917}
variants=("")
if [ "${1:-}" = "--" ]; then shift; variants=("$*"); elif [ $# -gt 0 ]; then variants=("$@"); fi
. bench/setup.sh # wrk, the release build, ORT_DYLIB_PATH, BENCH_IMAGE
mkdir -p bench/results
exec > >(tee "bench/results/$(date -u +%Y%m%dT%H%M%SZ)-cpu-budget.txt") 2>&1
cores=$(nproc)
tick=$(getconf CLK_TCK)
echo "# CPU budget $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), $cores cores, c=$C, ${DURATION}s per round, $ROUNDS rounds, variants:$(printf ' [%s]' "${variants[@]}")"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for round in $(seq "$ROUNDS"); do
  for v in "${!variants[@]}"; do
    variant=${variants[$v]}
    bin=target/release/celestial-server flags=$variant
    case $variant in @*) bin=${variant%% *}; bin=${bin#@}; flags=${variant#"@$bin"} ;; esac
    # shellcheck disable=SC2086 # a variant is a list of flags
    "$bin" --host 127.0.0.1 --port "$PORT" --log-filter warn $flags >/dev/null 2>&1 &
    spid=$!
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.05; done
    wrk -t 2 -c 8 -d 2s -s bench/multipart.lua "http://127.0.0.1:$PORT/predict" >/dev/null # warm-up
    out=$(mktemp)
    # two seconds longer than the window, so that the window sees only steady load
    wrk -t 2 -c "$C" -d "$((DURATION + 2))s" --timeout 10s -s bench/multipart.lua \
      "http://127.0.0.1:$PORT/predict" >"$out" &
    wrk_job=$!
    sleep 1
    wpid=$(pgrep -n -x wrk)
    profiled=no
    s0=$(cpu_ticks "$spid"); w0=$(cpu_ticks "$wpid"); t0=$(date +%s.%N)
    if [ "$round" -gt "$((ROUNDS - PERF_ROUNDS))" ] && command -v perf >/dev/null; then
      perf record -q -F 999 -g -p "$spid" -o "$work/perf.$v.$round" -- sleep "$DURATION" >/dev/null 2>&1 || true
      profiled=yes
    else
      sleep "$DURATION"
    fi
    s1=$(cpu_ticks "$spid"); w1=$(cpu_ticks "$wpid"); t1=$(date +%s.%N)
    wait "$wrk_job"
    kill -TERM "$spid"; wait "$spid" || true
    line=$(grep '^BENCH' "$out"); rm -f "$out"
    rps=${line#*rps=}; rps=${rps%% *}
    p99=${line#*p99_ms=}; p99=${p99%% *}
    awk -v r="$round" -v variant="${variant:-defaults}" -v rps="$rps" -v p99="$p99" -v s="$((s1 - s0))" \
      -v w="$((w1 - w0))" -v t0="$t0" -v t1="$t1" -v tick="$tick" -v errors="${line#*errors_connect=}" \
      -v profiled="$profiled" 'BEGIN {
        dt = t1 - t0; sc = s / tick / dt; wc = w / tick / dt
        printf "round=%s [%s] rps=%.0f p99_ms=%s server_cores=%.2f wrk_cores=%.2f server_us_per_request=%.1f wrk_us_per_request=%.1f profiled=%s errors_connect=%s\n",
          r, variant, rps, p99, sc, wc, sc / rps * 1e6, wc / rps * 1e6, profiled, errors }' | tee -a "$work/rounds.$v"
  done
done
for v in "${!variants[@]}"; do
  [ "${#variants[@]}" -gt 1 ] && printf '\n# [%s]\n' "${variants[$v]:-defaults}"
  profiles=("$work"/perf."$v".*)
  if [ ! -s "${profiles[0]}" ]; then echo "(perf not installed: no split of the server's time)"; continue; fi
  # each round's report sums to 100 %; cpu_budget.py normalises, so the split is their mean
  for p in "${profiles[@]}"; do
    perf report -i "$p" --no-children --sort dso,symbol -g none --stdio 2>/dev/null
  done | python3 bench/cpu_budget.py "$work/rounds.$v" "$cores" "${#profiles[@]}"
done

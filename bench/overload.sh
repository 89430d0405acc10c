#!/usr/bin/env bash
# Throughput past saturation, measured open-loop. First the peak: goodput (2xx/s) of a closed-loop
# wrk at c = 16, 32, 64 (64 = the default --max-concurrency, so none of these is refused), the best
# of them, unless --peak gives it. Then the open-loop generator (bench/openloop.rs) offers 1x, 2x and
# 4x that rate on a fixed Poisson schedule, whatever the server answers: goodput as a % of the peak
# (goal >= 95 % at 2x and 4x), p99 of the served requests from their scheduled time, and the excess
# answered 429 + Retry-After (not slowed). A closed-loop client that retries 429s at once would
# measure itself instead: its offered rate falls with the server's answers.
# The load generators' CPU is reported beside the server's (as bench/cpu_budget.sh does for wrk):
# wrk's for the peak, the open-loop generator's for each rate; all of it runs on the same cores, so
# each rate's goodput is also given against what the cores the generator left allow at the server's
# CPU per request at the peak. The server's RSS (VmRSS after each run, VmHWM at the end) comes
# from /proc. Not part of scripts/test; ~2 min with the defaults.
# Results: bench/results/<UTC time>-overload.txt and the generator's JSON in …-overload.jsonl.
#
#   bench/overload.sh                                   # peak by wrk, then 1x 2x 4x for 15 s each
#   bench/overload.sh --peak 6000 -- --workers 2        # given peak; args after -- go to the server
#   BENCH_PEAK_SERVER_US=118 bench/overload.sh --peak 14650   # with the server's CPU per request there
#   BENCH_BIN=/tmp/old/celestial-server bench/overload.sh   # another build (default: this tree's release build)
#   BENCH_DURATION=3 BENCH_PEAK_DURATION=3s BENCH_MULTIPLIERS="1 4" bench/overload.sh   # a quick check
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${BENCH_DURATION:-15}
PEAK_DURATION=${BENCH_PEAK_DURATION:-8s}
MULTIPLIERS=${BENCH_MULTIPLIERS:-1 2 4}
PORT=${BENCH_PORT:-3917}
peak=
peak_us=${BENCH_PEAK_SERVER_US:-} # the server's CPU per request at the peak, with --peak
if [ "${1:-}" = --peak ]; then peak=$2; shift 2; fi
server_args=()
if [ "${1:-}" = "--" ]; then shift; server_args=("$@"); fi
. bench/setup.sh # wrk, the release build, ORT_DYLIB_PATH, BENCH_IMAGE
target=${CARGO_TARGET_DIR:-target}
bin=${BENCH_BIN:-$target/release/celestial-server}
generator=$(cargo bench --locked -p celestial-server --bench openloop --no-run --message-format=json 2>/dev/null |
  jq -r 'select(.executable != null and .target.name == "openloop") | .executable')
[ -x "$generator" ] || { echo "overload: no openloop executable" >&2; exit 1; }
mkdir -p bench/results
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=bench/results/$stamp-overload.txt
jsonl=bench/results/$stamp-overload.jsonl
exec > >(tee "$out") 2>&1
echo "# overload, open-loop $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD)$(git diff --quiet -- server bench || echo ' (+ local changes)'), ${DURATION}s per rate"
echo "machine: $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg); server: $bin ${server_args[*]:-(defaults)}"
top -bn1 | sed -n '7,12p'
"$bin" --host 127.0.0.1 --port "$PORT" --log-filter warn "${server_args[@]}" &
pid=$!
tmp=$(mktemp)
trap 'kill -TERM $pid 2>/dev/null || true; rm -f "$tmp"' EXIT
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.05; done
url=http://127.0.0.1:$PORT/predict
rss() { awk -v k="$1:" '$1 == k {printf "%.1f MiB", $2 / 1024}' "/proc/$pid/status"; }
wrk -t 2 -c 8 -d 3s -s bench/multipart.lua "$url" >/dev/null # warm-up
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tick=$(getconf CLK_TCK)
if [ -z "$peak" ]; then
  peak=0
  for c in 16 32 64; do
    # wrk's CPU (user + system, from bash's `time`) and the server's (/proc) over the run, per request
    s0=$(cpu_ticks "$pid")
    wrk_cpu=$( { TIMEFORMAT='%U %S'; time wrk -t 2 -c "$c" -d "$PEAK_DURATION" --timeout 10s -s bench/multipart.lua "$url" >"$tmp"; } 2>&1)
    s1=$(cpu_ticks "$pid")
    line=$(grep '^BENCH' "$tmp")
    read -r good costs < <(awk -v l="$line" -v w="$wrk_cpu" -v s="$((s1 - s0))" -v tick="$tick" 'BEGIN {
      n = split(l, f, " "); for (i = 1; i <= n; i++) { split(f[i], kv, "="); v[kv[1]] = kv[2] }
      split(w, wc, " "); d = v["duration_s"]; r = v["requests"]
      printf "%.0f wrk_cores=%.2f wrk_us_per_request=%.1f server_cores=%.2f server_us_per_request=%.1f\n",
        (r - v["non2xx"]) / d, (wc[1] + wc[2]) / d, (wc[1] + wc[2]) * 1e6 / r, s / tick / d, s / tick * 1e6 / r }')
    echo "closed-loop c=$c ${line#BENCH } goodput_rps=$good $costs"
    if [ "$good" -gt "$peak" ]; then
      peak=$good
      peak_us=$(sed 's/.*server_us_per_request=//' <<<"$costs")
    fi
  done
  echo "peak (closed-loop, best of c=16/32/64): $peak req/s; server VmHWM after c=64: $(rss VmHWM)"
else
  echo "peak (given): $peak req/s"
fi
declare -A goodput generator_cores
for m in $MULTIPLIERS; do
  rate=$((peak * m))
  echo "## ${m}x the peak: $rate req/s offered, open-loop (Poisson)"
  "$generator" --addr "127.0.0.1:$PORT" --image "$BENCH_IMAGE" --rate "$rate" \
    --duration "$DURATION" --server-pid "$pid" --json "$jsonl" >/dev/null
  goodput[$m]=$(tail -1 "$jsonl" | jq .goodput_rps)
  generator_cores[$m]=$(tail -1 "$jsonl" | jq .generator.cores)
  echo "server VmRSS after: $(rss VmRSS)"
  sleep 2 # the previous run's queue and connections gone before the next
done
echo "server peak RSS (VmHWM): $(rss VmHWM)"
echo "server rejections: $(curl -s "http://127.0.0.1:$PORT/metrics" | grep '^celestial_rejections_total' | tr '\n' ' ')"
kill -TERM $pid; wait $pid && echo "server exit after SIGTERM: 0"
trap - EXIT
rm -f "$tmp"
# Accounted as bench/cpu_budget.sh does: the cores the generator takes at a rate are not the server's,
# so beside the peak, the rate the server's CPU per request at the peak allows on the cores left.
for m in $MULTIPLIERS; do
  awk -v m="$m" -v g="${goodput[$m]}" -v p="$peak" -v us="$peak_us" -v gen="${generator_cores[$m]}" \
    -v cores="$(nproc)" 'BEGIN{r = 100 * g / p
    printf "goodput at %sx: %.0f req/s = %.1f %% of the peak%s", m, g, r, (m >= 2) ? ((r >= 95) ? " (goal >= 95 %: met)" : " (goal >= 95 %: NOT met)") : ""
    if (us > 0) { left = (cores - gen) * 1e6 / us
      printf "; %.1f %% of the %.0f req/s the %.2f cores the generator left allow at %.1f us per request", 100 * g / left, left, cores - gen, us }
    printf "\n"}'
done
echo "results: $out, $jsonl"

#!/usr/bin/env bash
# What traces cost at c=32: the real OpenTelemetry Collector (tests/env/build-addon.sh otelcol, the
# tests' own) receives OTLP/HTTP on loopback and writes every span to /dev/null, and bench/ab.sh
# alternates the server without the drift monitor (--no-drift), with the defaults (drift on, no
# traces), at 1 % trace sampling (OpenTelemetry's parentbased_traceidratio, 0.01) and at 100 %: the
# drift monitor's cost and the traces' in one run. The collector shares the two cores with the
# server and wrk: at 100 % its CPU is part of what the server's throughput loses. Not part of
# scripts/test.
#
#   bench/traces_ab.sh                     # 3 rounds of 8 s per variant
#   BENCH_ROUNDS=6 bench/traces_ab.sh      # more rounds for a steadier mean
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${BENCH_OTLP_PORT:-4318}
bin=$(tests/env/build-addon.sh otelcol)/otelcol
work=$(mktemp -d "${TMPDIR:-/tmp}/celestial-traces-ab.XXXXXX")
collector=
cleanup() {
  [ -z "$collector" ] || { kill "$collector" 2>/dev/null || true; wait "$collector" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT
cat > "$work/config.yaml" <<EOF
receivers: {otlp: {protocols: {http: {endpoint: "127.0.0.1:$PORT"}}}}
exporters: {jsonfile: {path: /dev/null}}
service: {pipelines: {traces: {receivers: [otlp], exporters: [jsonfile]}}}
EOF
"$bin" --config "file:$work/config.yaml" >"$work/otelcol.log" 2>&1 &
collector=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
curl -s -o /dev/null "http://127.0.0.1:$PORT/" || { cat "$work/otelcol.log" >&2; exit 1; }
endpoint="--otlp-endpoint http://127.0.0.1:$PORT"
bench/ab.sh "--no-drift" "" \
  "$endpoint --trace-sampler parentbased_traceidratio --trace-sampler-arg 0.01" \
  "$endpoint --trace-sampler parentbased_always_on"
# What the server said about its exports in the last run (the 100 % one): dropped spans mean the
# collector could not keep up, not that a request waited.
echo "collector log (last lines):"; tail -3 "$work/otelcol.log"

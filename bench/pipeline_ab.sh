#!/usr/bin/env bash
# In-process pipeline A/B of two models (decode -> preprocess -> inference per image, 1 thread, no
# HTTP), alternating round by round so that drifts of the shared machine hit both alike. Not part of
# scripts/test.
#
#   bench/pipeline_ab.sh model/testdata/v1-celestial-bodies.onnx ""      # v1 vs the embedded model
#   BENCH_ROUNDS=6 BENCH_SECONDS=5 bench/pipeline_ab.sh A.onnx B.onnx
#
# Each variant is a model path ("" = the embedded model). Results go to stdout and
# bench/results/<UTC time>-pipeline-ab.txt; each line is the pipeline bench's PIPELINE line.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: bench/pipeline_ab.sh MODEL_A MODEL_B [...]  (\"\" = embedded)" >&2; exit 2; }
ROUNDS=${BENCH_ROUNDS:-4}
SECONDS_PER_RUN=${BENCH_SECONDS:-5}
scripts/build-deps
cargo bench --locked -p celestial-server --bench pipeline --no-run >&2
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/onnxruntime.sh)}
dataset=${CELESTIAL_DATASET:-../shared/dataset}
image=${BENCH_IMAGE:-$dataset/raw/$(head -1 model/validation-split.txt)}
image=$(realpath "$image")
mkdir -p bench/results
exec > >(tee "bench/results/$(date -u +%Y%m%dT%H%M%SZ)-pipeline-ab.txt") 2>&1
echo "# pipeline A/B $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), image $image, $SECONDS_PER_RUN s per run, $ROUNDS rounds, 1 thread"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
  for model in "$@"; do
    # (cargo runs the bench in server/: an absolute path)
    if [ -n "$model" ]; then export CELESTIAL_MODEL=$(realpath "$model"); else unset CELESTIAL_MODEL; fi
    line=$(BENCH_THREADS=1 cargo bench --locked -q -p celestial-server --bench pipeline -- "$image" "$SECONDS_PER_RUN" 2>/dev/null | grep '^PIPELINE')
    echo "round=$round [${model:-embedded}] ${line#PIPELINE }"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

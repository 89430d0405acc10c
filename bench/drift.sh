#!/usr/bin/env bash
# The drift monitor's false alarms on clean streams and its detection delays on drifted ones, with the
# server's own classification and scoring code (bench/drift_sim.rs) over the picture sets of
# bench/drift_pictures.py: the 150 validation pictures the model's drift reference leaves out, and
# grayscale, dimmed (x0.5), single-body and unseen-body streams. Not part of scripts/test.
#
#   bench/drift.sh                          # 1,000,000 clean windows, 1,000 detection runs per stream
#   BENCH_WINDOWS=100000 BENCH_TRIALS=200 bench/drift.sh
#   CELESTIAL_DRIFT_WINDOW=200 bench/drift.sh   # other monitor flags, as the server reads them
#   BENCH_PROFILE=dev bench/drift.sh            # a debug build (no release build of the server needed)
#
# Needs Python with numpy and pillow (PYTHON, default the pinned tools of scripts/python-tools.sh) and
# the dataset (CELESTIAL_DATASET, default ../shared/dataset). Results go to stdout and
# bench/results/<UTC time>-drift.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
WINDOWS=${BENCH_WINDOWS:-1000000}
TRIALS=${BENCH_TRIALS:-1000}
PROFILE=${BENCH_PROFILE:-bench}
PYTHON=${PYTHON:-$(scripts/python-tools.sh)/bin/python}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/onnxruntime.sh)}
scripts/build-deps
cargo bench --locked --profile "$PROFILE" -p celestial-server --bench drift_sim --no-run >&2
pictures=$(mktemp -d)
trap 'rm -rf "$pictures"' EXIT
"$PYTHON" bench/drift_pictures.py "$pictures" >&2
mkdir -p bench/results
exec > >(tee "bench/results/$(date -u +%Y%m%dT%H%M%SZ)-drift.txt") 2>&1
echo "# drift $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), $WINDOWS clean windows, $TRIALS runs per stream, profile $PROFILE"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo bench --locked -q --profile "$PROFILE" -p celestial-server --bench drift_sim -- "$pictures" "$WINDOWS" "$TRIALS"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

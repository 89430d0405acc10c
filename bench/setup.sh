# shellcheck shell=bash
# Sourced by the wrk benchmarks (from the repository root): installs wrk (Debian) if missing,
# builds the release server, and exports ORT_DYLIB_PATH and BENCH_IMAGE (default: the first
# validation image; CELESTIAL_DATASET or BENCH_IMAGE to change it), refusing to go on without it.
command -v wrk >/dev/null || {
  echo "bench: installing wrk (Debian package)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >&2
}
scripts/build-deps
cargo build --release --locked -p celestial-server >&2
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(scripts/onnxruntime.sh)}
dataset=${CELESTIAL_DATASET:-../shared/dataset}
BENCH_IMAGE=${BENCH_IMAGE:-$dataset/raw/$(head -1 model/validation-split.txt)}
BENCH_IMAGE=$(realpath "$BENCH_IMAGE" 2>/dev/null || echo "$BENCH_IMAGE")
export BENCH_IMAGE
[ -f "$BENCH_IMAGE" ] || { echo "bench: image $BENCH_IMAGE not found (set CELESTIAL_DATASET or BENCH_IMAGE)" >&2; exit 1; }

#!/usr/bin/env bash
# Re-measure the ONNX Runtime latency of the committed models (batch 1, one thread) without retraining;
# updates metrics.json and the model card's results section. Creates model/.venv if needed.
#   model/bench.sh [--iterations N]
set -euo pipefail
model_dir=$(cd "$(dirname "$0")" && pwd)
. "$model_dir/venv.sh"
exec "$model_dir/.venv/bin/python" -m celestial.bench "$@"

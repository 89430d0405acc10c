#!/usr/bin/env bash
# Check the committed model artifacts against each other and the dataset, without training (seconds):
# ONNX loads with the contract's metadata and I/O, golden fixtures reproduce, the validation accuracy
# equals the metadata's, the guide-recipe fixture has no metadata. Creates model/.venv if needed.
#   model/verify.sh [--dataset DIR]
set -euo pipefail
model_dir=$(cd "$(dirname "$0")" && pwd)
. "$model_dir/venv.sh"
export TF_CPP_MIN_LOG_LEVEL=2
exec "$model_dir/.venv/bin/python" -m celestial.verify "$@"

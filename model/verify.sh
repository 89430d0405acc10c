#!/usr/bin/env bash
# Check the committed model artifacts against each other and the dataset, without training (seconds):
# ONNX loads with the contract's metadata and I/O, golden fixtures reproduce, the validation accuracy
# equals the metadata's, the guide-recipe fixture has no metadata. Creates model/.venv if needed.
#   model/verify.sh [--dataset DIR]
set -euo pipefail
cd "$(dirname "$0")"
. ./venv.sh
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m celestial.verify "$@"

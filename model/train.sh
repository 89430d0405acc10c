#!/usr/bin/env bash
# Retrain and re-export the celestial-bodies classifier from scratch (one command).
#
#   model/train.sh [--dataset DIR] [--out DIR] [--epochs N] [--seed N] [--split-seed N] [--arch c4e|...]
#                  [--min-accuracy F] [--latency-iterations N]      (details: model/README.md)
#
# Creates model/.venv with the pinned model/requirements.txt (Python 3.11; re-created when the
# requirements change), then runs the pipeline (python -m celestial.train): stratified split,
# guide-recipe baseline, served model, ONNX export with metadata, ONNX Runtime parity check (fails
# the run on mismatch), golden fixtures, plots, latency, metrics and the model card's results section;
# artifacts are staged and replace the previous ones only if parity holds and val top-1 >= --min-accuracy.
# Dataset: --dataset, else $CELESTIAL_DATASET, else ../shared/dataset next to the repository.
# Takes about 4-6 minutes on 2 CPU cores; not part of scripts/test.
set -euo pipefail
model_dir=$(cd "$(dirname "$0")" && pwd)
. "$model_dir/venv.sh"
export PYTHONHASHSEED=0 TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0
exec "$model_dir/.venv/bin/python" -m celestial.train "$@"

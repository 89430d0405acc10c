#!/usr/bin/env bash
# Retrain and re-export the celestial-bodies classifier from scratch (one command).
#
#   model/train.sh [--dataset DIR] [--out DIR] [--epochs N]
#
# Creates model/.venv with the pinned model/requirements.txt (Python 3.11; re-created when the
# requirements change), then runs the pipeline (python -m celestial.train): stratified split,
# guide-recipe baseline, served model, ONNX export with metadata, ONNX Runtime parity check (fails
# the run on mismatch), golden fixtures, plots, latency, metrics and the model card's results section.
# Dataset: --dataset, else $CELESTIAL_DATASET, else ../shared/dataset next to the repository.
# Takes about 4-6 minutes on 2 CPU cores; not part of scripts/test.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
python=${PYTHON:-python3}
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "train.sh: creating model/.venv from requirements.txt" >&2
  rm -rf .venv
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi
export PYTHONHASHSEED=0 TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0
exec .venv/bin/python -m celestial.train "$@"

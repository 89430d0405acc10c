#!/usr/bin/env bash
# Leave-one-class-out evaluation of the out-of-distribution scores: ten trainings of the served model's
# recipe, each on nine classes, measuring how well the tenth is flagged. Writes model/loco.json, which
# the model card quotes. About 36 minutes on 2 CPU cores with the v3 recipe (30 epochs, 20 variants). Creates model/.venv if needed.
#   model/loco.sh [--dataset DIR] [--only Class ...] [--out FILE] [--dump DIR]
#   model/loco.sh --rescore DIR   (no training: the colour check's measures again from a --dump run's logits)
set -euo pipefail
model_dir=$(cd "$(dirname "$0")" && pwd)
. "$model_dir/venv.sh"
export PYTHONHASHSEED=0 TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0
exec "$model_dir/.venv/bin/python" -m celestial.loco "$@"

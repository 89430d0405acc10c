#!/usr/bin/env bash
# What a colour-distance OOD score would cost the served model (false flags on recoloured photographs and
# the corruption suite); writes model/colour_ood.json. A measurement for the model card, not served. About a
# minute with model/.cache. Creates model/.venv if needed.
#   model/colour_ood.sh [--dataset DIR] [--out FILE]
set -euo pipefail
model_dir=$(cd "$(dirname "$0")" && pwd)
. "$model_dir/venv.sh"
export PYTHONHASHSEED=0 TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0
exec "$model_dir/.venv/bin/python" -m celestial.colour_ood "$@"

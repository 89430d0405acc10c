# Sourced by model/train.sh, verify.sh and bench.sh with $model_dir set: make sure $model_dir/.venv holds
# exactly requirements.txt (Python 3.11; re-created when requirements.txt changes).
python=${PYTHON:-python3}
venv=$model_dir/.venv
stamp=$venv/.requirements.sha256
want=$(sha256sum "$model_dir/requirements.txt" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "model: creating model/.venv from requirements.txt (about 1 minute, 1.8 GB)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$model_dir/requirements.txt"
  echo "$want" > "$stamp"
fi
export PYTHONPATH=$model_dir${PYTHONPATH:+:$PYTHONPATH}

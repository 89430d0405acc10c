# Sourced by model/train.sh and model/verify.sh: make sure model/.venv holds exactly requirements.txt
# (Python 3.11; re-created when requirements.txt changes). Expects the current directory to be model/.
python=${PYTHON:-python3}
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "model: creating model/.venv from requirements.txt (about 1 minute, 1.8 GB)" >&2
  rm -rf .venv
  "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi

#!/usr/bin/env bash
# Make (once) and print the path of the small pinned Python environment the test suite uses for
# its Python checks (scripts/python-tools.txt): a virtualenv cached by a hash of that file and the
# Python version under ${CELESTIAL_CACHE:-~/.cache/celestial}/python-tools/<key>. A warm run does
# nothing; a cold one is made beside its final place and renamed into it only when complete.
#
#   scripts/python-tools.sh [REQS]          make if needed; print the venv directory on stdout
#   scripts/python-tools.sh --key [REQS]    print the cache key only
#
# REQS is another pinned requirements file for an environment of its own (scripts/oip-clients.txt:
# the Open Inference Protocol's clients), cached the same way under the file's name.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
key_only=false
if [ "${1:-}" = --key ]; then key_only=true; shift; fi
REQS=${1:-scripts/python-tools.txt}
name=$(basename "$REQS" .txt)
CACHE_ROOT=${CELESTIAL_CACHE:-$HOME/.cache/celestial}/$name

key=$({ "$PYTHON" -c 'import sys; print(sys.version)'; cat "$REQS"; } | sha256sum | cut -c1-16)
if $key_only; then echo "$key"; exit 0; fi
dest=$CACHE_ROOT/$key
if [ -f "$dest/.complete" ]; then echo "$dest"; exit 0; fi

mkdir -p "$CACHE_ROOT"
start=$(date +%s)
echo "python-tools: creating $dest from $REQS" >&2
# A venv's scripts name their own path, so it is made in place; .complete marks it whole.
rm -rf "$dest"
"$PYTHON" -m venv "$dest"
"$dest/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$REQS" >&2
touch "$dest/.complete"
echo "python-tools: ready after $(( $(date +%s) - start ))s" >&2
echo "$dest"

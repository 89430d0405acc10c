#!/usr/bin/env bash
# Fetch the pinned, official ONNX Runtime shared library from the PyPI `onnxruntime`
# wheel, verify the wheel's SHA-256, and install the library into a version-keyed cache.
# Prints the absolute path of the library on stdout (everything else goes to stderr).
#
#   ORT_DYLIB_PATH=$(scripts/onnxruntime.sh)
#
# Cache: ${CELESTIAL_CACHE:-~/.cache/celestial}/onnxruntime/<version>/ (a warm call does nothing).
set -euo pipefail

ORT_VERSION=1.31.1
ORT_WHEEL=onnxruntime-${ORT_VERSION}-cp311-cp311-manylinux_2_28_x86_64.whl
ORT_WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
ORT_LIB=libonnxruntime.so.${ORT_VERSION}

case "${1:-}" in
  --version) echo "$ORT_VERSION"; exit 0 ;;
  --print-lib-name) echo "$ORT_LIB"; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--version|--print-lib-name]" >&2; exit 2 ;;
esac

if [ "$(uname -m)" != x86_64 ] || [ "$(uname -s)" != Linux ]; then
  echo "onnxruntime.sh: only linux x86_64 is pinned here (got $(uname -s) $(uname -m))" >&2
  exit 1
fi

cache=${CELESTIAL_CACHE:-$HOME/.cache/celestial}/onnxruntime/$ORT_VERSION
lib=$cache/$ORT_LIB
if [ -f "$lib" ]; then echo "$lib"; exit 0; fi

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "onnxruntime.sh: downloading $ORT_WHEEL" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.11 --platform manylinux_2_28_x86_64 \
  "onnxruntime==$ORT_VERSION" -d "$tmp" >&2
got=$(sha256sum "$tmp/$ORT_WHEEL" | cut -d' ' -f1)
if [ "$got" != "$ORT_WHEEL_SHA256" ]; then
  echo "onnxruntime.sh: checksum mismatch for $ORT_WHEEL: expected $ORT_WHEEL_SHA256, got $got" >&2
  exit 1
fi
python3 - "$tmp/$ORT_WHEEL" "$tmp/out" "$ORT_LIB" <<'PY'
import sys, zipfile
wheel, out, lib = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    z.extract(f"onnxruntime/capi/{lib}", out)
PY
mkdir -p "$cache"
install -m 0755 "$tmp/out/onnxruntime/capi/$ORT_LIB" "$lib.partial"
mv "$lib.partial" "$lib"
echo "$lib"

#!/usr/bin/env bash
# Fetch the pinned, official ONNX Runtime shared library from the PyPI `onnxruntime`
# wheel, verify the wheel's SHA-256, and install the library into a version- and
# architecture-keyed cache. Prints the absolute path of the library on stdout (everything
# else goes to stderr).
#
#   ORT_DYLIB_PATH=$(scripts/onnxruntime.sh)            # this machine's architecture
#   scripts/onnxruntime.sh aarch64                       # the arm64 library, for a cross-built image
#
# ARCH: x86_64 (alias amd64) or aarch64 (alias arm64); default this machine's.
# Cache: ${CELESTIAL_CACHE:-~/.cache/celestial}/onnxruntime/<version>/ for x86_64 (where the server
# looks for it by default) and .../onnxruntime/<version>/<arch>/ for the others (a warm call does nothing).
set -euo pipefail

ORT_VERSION=1.31.1
ORT_LIB=libonnxruntime.so.${ORT_VERSION}

arch=$(uname -m)
case "${1:-}" in
  --version) echo "$ORT_VERSION"; exit 0 ;;
  --print-lib-name) echo "$ORT_LIB"; exit 0 ;;
  x86_64|amd64) arch=x86_64 ;;
  aarch64|arm64) arch=aarch64 ;;
  "") ;;
  *) echo "usage: $0 [x86_64|amd64|aarch64|arm64|--version|--print-lib-name]" >&2; exit 2 ;;
esac

# The official wheels, one per architecture, and their SHA-256 (the same release, 1.31.1).
case "$arch" in
  x86_64)
    ORT_PLATFORM=manylinux_2_28_x86_64
    ORT_WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
    cache=${CELESTIAL_CACHE:-$HOME/.cache/celestial}/onnxruntime/$ORT_VERSION ;;
  aarch64)
    ORT_PLATFORM=manylinux_2_28_aarch64
    ORT_WHEEL_SHA256=da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3
    cache=${CELESTIAL_CACHE:-$HOME/.cache/celestial}/onnxruntime/$ORT_VERSION/aarch64 ;;
  *)
    echo "onnxruntime.sh: only linux x86_64 and aarch64 are pinned here (got $(uname -s) $arch)" >&2
    exit 1 ;;
esac
ORT_WHEEL=onnxruntime-${ORT_VERSION}-cp311-cp311-${ORT_PLATFORM}.whl
if [ "$(uname -s)" != Linux ]; then
  echo "onnxruntime.sh: only linux is pinned here (got $(uname -s))" >&2
  exit 1
fi

lib=$cache/$ORT_LIB
if [ -f "$lib" ]; then echo "$lib"; exit 0; fi

tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
echo "onnxruntime.sh: downloading $ORT_WHEEL" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --python-version 3.11 --platform "$ORT_PLATFORM" \
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

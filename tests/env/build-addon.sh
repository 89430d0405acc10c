#!/usr/bin/env bash
# Build one add-on of the test cluster from its pinned Go module in tests/env/tools/<name>/ and
# cache it: every `tool` line of that go.mod becomes a binary. An add-on has a cache entry of its
# own, so adding one (or changing its pin) never rebuilds the control plane of build-tools.sh.
# A `tool` line may name the module's own package: its .go files there are then the add-on's source
# (otelcol: a collector put together in main.go).
#
#   tests/env/build-addon.sh NAME          build if needed; prints the bin directory on stdout
#   tests/env/build-addon.sh NAME --key    print the cache key only
#
# The binaries land in ${CELESTIAL_CACHE:-~/.cache/celestial}/testenv/addons/<name>-<key>/bin, where
# <key> hashes the add-on's go.mod + go.sum (and its own .go files), this script and the Go version.
# Like build-tools.sh, a build goes to a temporary directory renamed into place only when complete.
#
# A go.mod may carry a line `// celestial-build-tags: TAG ...`: those Go build tags go to the build
# (Prometheus uses them to leave out the service-discovery plugins the test cluster has no use for).
# Without that line the build has no -tags at all.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
NAME=${1:-}
die() { echo "build-addon: $*" >&2; exit 1; }
[ -n "$NAME" ] && [ -f "$HERE/tools/$NAME/go.mod" ] ||
  die "usage: $0 NAME [--key], NAME one of: $(cd "$HERE/tools" && grep -l '^tool ' ./*/go.mod | cut -d/ -f2 | xargs)"
MOD=$HERE/tools/$NAME
CACHE_ROOT=${CELESTIAL_CACHE:-$HOME/.cache/celestial}/testenv/addons
command -v go >/dev/null || die "go (>= 1.26) is not on PATH; install the Go toolchain first"

SOURCES=()
while IFS= read -r -d '' f; do SOURCES+=("$f"); done < <(find "$MOD" -maxdepth 1 -name '*.go' -print0 | sort -z)
KEY=$( { echo "$NAME"; go env GOVERSION GOOS GOARCH; cat "$0" "$MOD/go.mod" "$MOD/go.sum" "${SOURCES[@]}"; } |
  sha256sum | cut -c1-16)
DEST=$CACHE_ROOT/$NAME-$KEY
if [ "${2:-}" = --key ]; then echo "$KEY"; exit 0; fi
if [ -f "$DEST/.complete" ]; then echo "$DEST/bin"; exit 0; fi

# `tool path` lines and `tool ( ... )` blocks (what `go get -tool` writes for a second tool)
mapfile -t TOOLS < <(awk '$1 == "tool" && $2 == "(" {block = 1; next}
  block && $1 == ")" {block = 0; next}
  block && $1 != "" && $1 !~ "^//" {print $1; next}
  $1 == "tool" {print $2}' "$MOD/go.mod")
TAGS=$(sed -n 's|^// celestial-build-tags:||p' "$MOD/go.mod" | xargs | tr ' ' ,)
TAG_ARGS=()
[ -z "$TAGS" ] || TAG_ARGS=(-tags "$TAGS")
[ ${#TOOLS[@]} -gt 0 ] || die "$MOD/go.mod names no tool"
mkdir -p "$CACHE_ROOT"
TMP=$(mktemp -d "$CACHE_ROOT/.build-$NAME-$KEY.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/bin"
# the same settings as build-tools.sh: static binaries, read-only module graph, low priority
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false -p=${TESTENV_GO_JOBS:-2}"
start=$(date +%s)
echo "build-addon: building $NAME (${TOOLS[*]}${TAGS:+, tags $TAGS}) into $DEST" >&2
(cd "$MOD" && go mod download &&
  nice -n 15 go build -trimpath "${TAG_ARGS[@]}" -ldflags "-s -w" -o "$TMP/bin/" "${TOOLS[@]}")
elapsed=$(( $(date +%s) - start ))
echo "$elapsed" > "$TMP/build-seconds"
touch "$TMP/.complete"
rm -rf "$DEST"; mv "$TMP" "$DEST"; trap - EXIT
# older builds of this add-on
find "$CACHE_ROOT" -mindepth 1 -maxdepth 1 -name "$NAME-*" ! -name "$NAME-$KEY" -exec rm -rf {} +
echo "build-addon: $NAME built in ${elapsed}s -> $DEST/bin" >&2
echo "$DEST/bin"

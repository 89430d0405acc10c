#!/usr/bin/env bash
# Build and cache the CI-configuration linters the test suite runs offline (tests/tests/ci_config.rs):
#   actionlint     from the pinned Go module in tests/env/tools/actionlint (go.mod + go.sum), like
#                  the other Go test tools (tests/env/build-tools.sh); lints .github/workflows/*.yml
#                  (and their `run:` scripts with shellcheck when it is installed)
#   check-jsonschema  pinned PyPI package in a virtualenv; `--builtin-schema vendor.gitlab-ci`
#                  validates .gitlab-ci.yml against the GitLab CI schema the package vendors (offline)
#
#   tests/env/ci-tools.sh          build if needed; prints the cache directory (bin/actionlint,
#                                  bin/check-jsonschema) on stdout
#   tests/env/ci-tools.sh --key    print the cache key only
#
# Its own cache key (not build-tools.sh's, whose change would rebuild Kubernetes): a hash of this
# script, the actionlint go.mod/go.sum and the Go and Python versions, under
# ${CELESTIAL_CACHE:-~/.cache/celestial}/ci-tools/<key>. A warm run builds nothing; a build goes to a
# temporary directory renamed into place when complete.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
MOD=$HERE/tools/actionlint
CACHE_ROOT=${CELESTIAL_CACHE:-$HOME/.cache/celestial}/ci-tools
ACTIONLINT_VERSION=v1.7.12
CHECK_JSONSCHEMA_VERSION=0.39.0
PYTHON=${PYTHON:-python3}

die() { echo "ci-tools: $*" >&2; exit 1; }
command -v go >/dev/null || die "go is not on PATH; install the Go toolchain first"
command -v "$PYTHON" >/dev/null || die "$PYTHON is not on PATH"

cache_key() {
  {
    echo "$ACTIONLINT_VERSION $CHECK_JSONSCHEMA_VERSION"
    go env GOVERSION GOOS GOARCH
    "$PYTHON" -c 'import sys; print(sys.version)'
    cat "$0" "$MOD/go.mod" "$MOD/go.sum"
  } | sha256sum | cut -c1-16
}

KEY=$(cache_key)
DEST=$CACHE_ROOT/$KEY
if [ "${1:-}" = --key ]; then echo "$KEY"; exit 0; fi
if [ -f "$DEST/.complete" ] && [ -x "$DEST/bin/actionlint" ] && [ -x "$DEST/bin/check-jsonschema" ]; then
  echo "$DEST"; exit 0
fi
grep -q "github.com/rhysd/actionlint $ACTIONLINT_VERSION" "$MOD/go.mod" || die "tools/actionlint/go.mod does not pin $ACTIONLINT_VERSION"

mkdir -p "$CACHE_ROOT"
TMP=$(mktemp -d "$CACHE_ROOT/.build-$KEY.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
start=$(date +%s)
echo "ci-tools: building into $DEST" >&2
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false -p=${TESTENV_GO_JOBS:-2}"
(cd "$MOD" && go mod download && nice -n 15 go build -trimpath -ldflags "-s -w" -o "$TMP/bin/actionlint" \
  github.com/rhysd/actionlint/cmd/actionlint)
echo "ci-tools: actionlint built after $(( $(date +%s) - start ))s" >&2
# The venv is made in its final place (a venv's scripts name their own path): TMP is only the marker.
rm -rf "$DEST"
mkdir -p "$DEST/bin"
mv "$TMP/bin/actionlint" "$DEST/bin/actionlint"
"$PYTHON" -m venv "$DEST/venv"
"$DEST/venv/bin/pip" install -q --disable-pip-version-check "check-jsonschema==$CHECK_JSONSCHEMA_VERSION" >&2
ln -s ../venv/bin/check-jsonschema "$DEST/bin/check-jsonschema"
elapsed=$(( $(date +%s) - start ))
echo "$elapsed" > "$DEST/build-seconds"
touch "$DEST/.complete"
echo "ci-tools: built in ${elapsed}s -> $DEST" >&2
echo "$DEST"

#!/usr/bin/env bash
# The CustomResourceDefinitions that kubernetes/monitoring/ is checked against
# (tests/tests/monitoring.rs): prometheus-operator's PrometheusRule and PodMonitor, as that project
# ships them in its Go module (example/prometheus-operator-crd/, Apache-2.0). Taken from the
# pinned module through the Go module cache, the way Kubernetes controllers' tests find the CRDs of
# their dependencies: no copy in this repository, and the go command checks the module against
# the checksum database; the h1 sum below pins the exact content as well.
#
#   tests/env/crds.sh    download if needed; prints the directory of the CRD YAML files on stdout
set -euo pipefail

MODULE=github.com/prometheus-operator/prometheus-operator
VERSION=v0.93.0
SUM=h1:AohlYJT+En8TmNpAcEUJ3GsaJTAqfEBwHmGTVpRm/Io=

die() { echo "crds: $*" >&2; exit 1; }
command -v go >/dev/null || die "go is not on PATH; install the Go toolchain first"
# Outside any module, so that no go.mod nearby changes what is resolved.
cd /
info=$(GOFLAGS='' go mod download -json "$MODULE@$VERSION") || die "go mod download $MODULE@$VERSION failed"
field() { sed -n "s|^\s*\"$1\": \"\(.*\)\",\?$|\1|p" <<<"$info"; }
[ "$(field Sum)" = "$SUM" ] || die "$MODULE@$VERSION has sum $(field Sum), expected $SUM"
dir=$(field Dir)/example/prometheus-operator-crd
for crd in prometheusrules podmonitors; do
  [ -f "$dir/monitoring.coreos.com_$crd.yaml" ] || die "no $crd CRD in $dir"
done
echo "$dir"

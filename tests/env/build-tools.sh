#!/usr/bin/env bash
# Build the test environment's Go tools from the pinned modules in tests/env/tools/ and cache them:
# the control plane (kube-apiserver, -controller-manager, -scheduler, kubectl), the real node's
# kubelet + kube-proxy, etcd, kwok, kubeconform.
#
#   tests/env/build-tools.sh          build if needed; prints the bin directory on stdout
#   tests/env/build-tools.sh --key    print the cache key only
#
# The binaries land in ${CELESTIAL_CACHE:-~/.cache/celestial}/testenv/<key>/bin, where <key> hashes
# every tools/*/go.mod + go.sum, this script and the Go version: a warm run finds them and builds
# nothing. A build goes to a temporary directory and is renamed into place only when complete, so an
# interrupted build never leaves a half-filled cache entry behind.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
TOOLS=$HERE/tools
CACHE_ROOT=${CELESTIAL_CACHE:-$HOME/.cache/celestial}/testenv

# Versions; each must equal the pin in the matching tools/<module>/go.mod (checked below).
K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
KUBECONFORM_VERSION=v0.7.0

die() { echo "build-tools: $*" >&2; exit 1; }
# Go is a prerequisite of the machine (like rustup): Debian's golang is too old for these modules.
command -v go >/dev/null || die "go (>= 1.26) is not on PATH; install the Go toolchain first"
case "$(go env GOVERSION)" in
  go1.2[6-9]*|go1.[3-9][0-9]*|go[2-9]*) ;;
  *) die "Go >= 1.26 is needed (kwok v0.8.0 requires it); found $(go env GOVERSION)" ;;
esac

cache_key() {
  {
    echo "$K8S_VERSION $ETCD_VERSION $KWOK_VERSION $KUBECONFORM_VERSION"
    go env GOVERSION GOOS GOARCH
    cat "$0"
    for m in k8s etcd kwok kubeconform; do cat "$TOOLS/$m/go.mod" "$TOOLS/$m/go.sum"; done
  } | sha256sum | cut -c1-16
}

KEY=$(cache_key)
DEST=$CACHE_ROOT/$KEY
if [ "${1:-}" = --key ]; then echo "$KEY"; exit 0; fi
if [ -x "$DEST/bin/kube-apiserver" ] && [ -x "$DEST/bin/kubelet" ] && [ -f "$DEST/.complete" ]; then
  echo "$DEST/bin"; exit 0
fi

grep -q "k8s.io/kubernetes $K8S_VERSION" "$TOOLS/k8s/go.mod" || die "tools/k8s/go.mod does not pin $K8S_VERSION"
grep -q "go.etcd.io/etcd/server/v3 $ETCD_VERSION" "$TOOLS/etcd/go.mod" || die "tools/etcd/go.mod does not pin $ETCD_VERSION"
grep -q "sigs.k8s.io/kwok $KWOK_VERSION" "$TOOLS/kwok/go.mod" || die "tools/kwok/go.mod does not pin $KWOK_VERSION"
grep -q "github.com/yannh/kubeconform $KUBECONFORM_VERSION" "$TOOLS/kubeconform/go.mod" || die "tools/kubeconform/go.mod does not pin $KUBECONFORM_VERSION"

mkdir -p "$CACHE_ROOT"
TMP=$(mktemp -d "$CACHE_ROOT/.build-$KEY.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/bin"

# Share the two cores with everyone else: low priority, at most two packages compiled at once.
export CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false -p=${TESTENV_GO_JOBS:-2}"
NICE=(nice -n 15)
start=$(date +%s)
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
ldf="-s -w"
kv="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z \
 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION \
 -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"

echo "build-tools: building into $DEST (cold build; 20-40 min on 2 cores)" >&2
for m in k8s etcd kwok kubeconform; do (cd "$TOOLS/$m" && go mod download); done
(cd "$TOOLS/k8s" && "${NICE[@]}" go build -trimpath -ldflags "$ldf $kv" -o "$TMP/bin/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
echo "build-tools: kubernetes control plane done after $(( $(date +%s) - start ))s" >&2
# the real node's kubelet + kube-proxy (tests/env/node.sh): same module, flags and build cache
t_node=$(date +%s)
(cd "$TOOLS/k8s" && "${NICE[@]}" go build -trimpath -ldflags "$ldf $kv" -o "$TMP/bin/" \
  k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
echo "build-tools: kubelet + kube-proxy done after $(( $(date +%s) - t_node ))s" >&2
(cd "$TOOLS/etcd" && "${NICE[@]}" go build -trimpath -ldflags "$ldf" -o "$TMP/bin/etcd" go.etcd.io/etcd/server/v3)
(cd "$TOOLS/kwok" && "${NICE[@]}" go build -trimpath -ldflags "$ldf" -o "$TMP/bin/kwok" sigs.k8s.io/kwok/cmd/kwok)
(cd "$TOOLS/kubeconform" && "${NICE[@]}" go build -trimpath -ldflags "$ldf" -o "$TMP/bin/kubeconform" \
  github.com/yannh/kubeconform/cmd/kubeconform)

# kwok >= v0.8 ships no built-in stages: take the "fast" set (node-initialize, heartbeat with lease,
# pod ready/complete/delete) plus the label-gated chaos stage from the pinned module's source.
stages=$(cd "$TOOLS/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage
for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
         pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml \
         pod/chaos/pod-container-running-failed.yaml; do
  echo "---"; cat "$stages/$f"
done > "$TMP/kwok-stages.yaml"

elapsed=$(( $(date +%s) - start ))
echo "$elapsed" > "$TMP/build-seconds"
touch "$TMP/.complete"
rm -rf "$DEST"; mv "$TMP" "$DEST"; trap - EXIT
echo "build-tools: built in ${elapsed}s -> $DEST/bin" >&2
echo "$DEST/bin"

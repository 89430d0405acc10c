# shellcheck shell=bash
# The test cluster's add-ons, sourced by tests/env/testenv (uses its STATE, HERE, BIN, API_PORT,
# start/wait_for/pid_alive/log/die, pki_cert, and node.sh's NET_HOST_IP).
#
# metrics-server (built from its pinned Go module by build-addon.sh) behind the apiserver's
# aggregation layer: the apiserver proxies /apis/metrics.k8s.io to it with its front-proxy client
# certificate, metrics-server checks that certificate against the requestheader CA it reads from
# kube-system/extension-apiserver-authentication, and scrapes every kubelet's /metrics/resource with
# a client certificate of its own (user system:metrics-server, RBAC in addons/metrics-server.yaml).
# It runs on the host on the nodes' network, so it starts after the real nodes (none: no add-on).

ADDON_COMPONENTS=(metrics-server)
METRICS_SERVER_PORT=4443

addons_wanted() { node_enabled; }
addon_bin() { "$HERE/build-addon.sh" "$1"; }

addon_pki() { # certificates of the add-ons, from the cluster CA
  local d=$STATE/pki
  pki_cert "$d/metrics-server" /CN=metrics-server serverAuth \
    "IP:$NET_HOST_IP,DNS:metrics-server.kube-system.svc,DNS:metrics-server.kube-system.svc.cluster.local"
  pki_cert "$d/metrics-server-client" /CN=system:metrics-server clientAuth
  client_kubeconfig "$STATE/metrics-server.kubeconfig" metrics-server "$d/metrics-server-client"
}

addon_launch() {
  case $1 in
    metrics-server)
      [ -f "$STATE/metrics-server.kubeconfig" ] || addon_pki
      local k=$STATE/metrics-server.kubeconfig
      start metrics-server "$(addon_bin metrics-server)/metrics-server" \
        --bind-address="$NET_HOST_IP" --secure-port=$METRICS_SERVER_PORT \
        --tls-cert-file="$STATE/pki/metrics-server.crt" --tls-private-key-file="$STATE/pki/metrics-server.key" \
        --kubeconfig="$k" --authentication-kubeconfig="$k" --authorization-kubeconfig="$k" \
        --kubelet-preferred-address-types=InternalIP --kubelet-use-node-status-port \
        --kubelet-certificate-authority="$STATE/pki/ca.crt" \
        --metric-resolution=15s --profiling=false ;;
    *) die "unknown add-on $1" ;;
  esac
}

addon_objects() { # the add-ons' API objects (RBAC, Service + Endpoints, APIService)
  sed -e "s|@HOST_IP@|$NET_HOST_IP|g" -e "s|@CA_BUNDLE@|$(base64 -w0 "$STATE/pki/ca.crt")|g" \
    "$HERE/addons/metrics-server.yaml" |
    "$BIN/kubectl" --kubeconfig="$STATE/kubeconfig" apply -f - 2>&1 >/dev/null |
    # the aggregation layer's resolver reads Endpoints, which the apiserver calls deprecated
    { grep -v 'v1 Endpoints is deprecated' >&2 || true; }
}

metrics_available() { # the APIService is Available and a node has a CPU figure
  local k=("$BIN/kubectl" --kubeconfig="$STATE/kubeconfig")
  [ "$("${k[@]}" get apiservice v1beta1.metrics.k8s.io \
    -o 'jsonpath={.status.conditions[?(@.type=="Available")].status}')" = True ] &&
    "${k[@]}" get --raw /apis/metrics.k8s.io/v1beta1/nodes | grep -q '"cpu"'
}

addon_ready() {
  case $1 in
    # the first figures need two kubelet scrapes (a rate): up to ~2 resolutions
    metrics-server) wait_for "metrics-server (APIService Available, node metrics)" 90 metrics_available ;;
  esac
}

addons_up() {
  local t c; t=$(now)
  addons_wanted || return 0
  addon_objects
  for c in "${ADDON_COMPONENTS[@]}"; do addon_launch "$c"; done
  for c in "${ADDON_COMPONENTS[@]}"; do addon_ready "$c" || die "$c did not come up (log: $STATE/$c.log)"; done
  log "add-ons ready ($(since "$t")s): ${ADDON_COMPONENTS[*]}"
}

addons_down() {
  local i
  for (( i=${#ADDON_COMPONENTS[@]}-1; i>=0; i-- )); do stop_component "${ADDON_COMPONENTS[$i]}"; done
}

# The test environment's real nodes, sourced by tests/env/testenv (uses its STATE, CACHE, HERE,
# REGISTRY*, API_PORT, BIN, start/stop_component/wait_for/pid_alive/log/die).
#
# $REAL_NODES nodes (default 2: real-node-0, real-node-1), each kubelet + containerd (+ runc, CNI
# bridge) + kube-proxy in a network namespace of its own (a bind mount at $NODE_DIR/netns, not
# /run/netns, so nothing of it is left in a host directory), with its own kubelet root, cgroup root
# (/sys/fs/cgroup/*/celestial-real-node-N), containerd root, state and socket, and pod CIDR
# 10.245.N.0/24.
#
# The network: a bridge on the host, celbr0 (10.250.0.254/24), with one veth per node (host end
# celnN on the bridge, node end eth0 = the node IP 10.250.0.N+1). Nodes talk to each other over the
# bridge (layer 2: the host's ip_forward stays off); each node routes the other nodes' pod CIDRs to
# their node IPs, and the host routes every pod CIDR to its node, so the API server on the host
# reaches kubelets (logs, exec, port-forward) and pods (the pod proxy), as in a real cluster. The
# nodes reach the host's loopback services (apiserver 127.0.0.1:6443, registries :5000/:5001)
# through `node-fwd-N` (testenv-netns-fwd: listens on the same addresses inside the namespace); the
# LB stand-in reaches node ports from a socket inside node 0's namespace. Nothing inside reaches any
# other address (no default route).
#
# The nodes carry no taint and the label celestial.dev/real-node=true: every pod runs on them unless
# it opts into the (tainted) kwok nodes.
#
# What kubelet and containerd change on the host, and `node_down` / `net_down` restore and check:
#   sysctls kernel.panic, kernel.panic_on_oops, vm.overcommit_memory (+ vm.panic_on_oom,
#   kernel.keys.root_max*): saved in $NODE_HOST before the first kubelet starts, written back when
#   the last node is down; /var/lib/kubelet/device-plugins (hard-coded in kubelet, shared by the
#   nodes), /var/log/containers symlinks, /run/containerd/s (shim sockets, hard-coded in containerd
#   1.6), /var/lib/cni (libcni's cache): removed when they did not exist before, else only our
#   entries; the nodes' cgroup roots in every hierarchy; mounts below $NODE_DIR (overlay rootfs, pod
#   volumes, sandbox shm, pod netns bind mounts, the node's netns); processes (pods, shims,
#   daemons); the bridge celbr0 (with it, the host's routes to the pod CIDRs).

REAL_NODES=${TESTENV_REAL_NODES:-2}
NODE_LABEL=celestial.dev/real-node
NET_BRIDGE=celbr0
NET_HOST_IP=10.250.0.254   # the host on the nodes' network (the bridge's address)
PODS_CIDR=10.245.0.0/16    # every real node's pod CIDR; not kwok's 10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16  # = the apiserver's --service-cluster-ip-range
# what the nodes changed on the host; outside STATE so it survives a lost state dir (next `up`/`down`
# still restores the host)
NODE_HOST=${STATE%/}.node-host
NODE_PARTS=(node-fwd containerd kubelet kube-proxy)
PAUSE_IMAGE=$REGISTRY/celestial-testenv/pause:3.10
KUBELET_SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
HOST_PATHS=(/var/lib/kubelet /var/log/containers /run/containerd /var/lib/cni)
FWD_BIN_NAME=testenv-netns-fwd

node_ids() { seq 0 $(( REAL_NODES - 1 )); }
node_vars() { # N: the per-node variables every node function uses
  NODE_ID=$1
  NODE_NAME=real-node-$1
  NODE_DIR=$STATE/node-$1
  NODE_NETNS=$NODE_DIR/netns
  NODE_IP=10.250.0.$(( $1 + 1 ))
  NODE_VETH=celn$1
  POD_CIDR=10.245.$1.0/24
  NODE_CGROUP=celestial-$NODE_NAME
}
node_components() { local p; for p in "${NODE_PARTS[@]}"; do echo "$p-$1"; done; }
NODE_COMPONENTS=()   # every node's parts, node 0 first
for _i in $(node_ids); do mapfile -t -O "${#NODE_COMPONENTS[@]}" NODE_COMPONENTS < <(node_components "$_i"); done
node_vars 0

in_node() { nsenter --net="$NODE_NETNS" "$@"; }
node_enabled() { compgen -G "$STATE/node-[0-9]*" >/dev/null; }   # any node is part of the environment
node_present() { [ -d "$NODE_DIR" ]; }                            # this node (node_vars) is
node_healthy() { # every node present and every part running
  local i c
  for i in $(node_ids); do
    [ -d "$STATE/node-$i" ] || return 1
    for c in $(node_components "$i"); do pid_alive "$c" || return 1; done
  done
}
# `up` starts the real nodes unless TESTENV_REAL_NODES=0 (control plane and kwok nodes only)
node_wanted() { [ "$REAL_NODES" -gt 0 ]; }

node_prereqs() {
  local c
  for c in containerd containerd-shim-runc-v2 runc nsenter unshare ip iptables gcc; do
    command -v "$c" >/dev/null || die "$c is not installed (scripts/setup installs it: scripts/apt-packages.txt)"
  done
  [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] ||
    die "the CNI plugins are not installed (containernetworking-plugins; scripts/setup installs them)"
  [ -f /usr/lib/x86_64-linux-gnu/libc.a ] || [ -n "$(gcc -print-file-name=libc.a | grep /)" ] ||
    die "libc6-dev is not installed (the pause binary is linked statically)"
}

node_host_record() { # once, before the first node: the host's values before kubelets change them
  [ -f "$NODE_HOST" ] && return 0
  local s p
  {
    for s in "${KUBELET_SYSCTLS[@]}"; do echo "sysctl $s $(sysctl -n "$s")"; done
    for p in "${HOST_PATHS[@]}"; do [ -e "$p" ] && echo "existed $p"; done
  } >"$NODE_HOST.tmp"
  mv "$NODE_HOST.tmp" "$NODE_HOST"
}

node_pause_image() { # static pause binary (cached by source hash) in a FROM-scratch image, pushed
  local key dir; key=$(sha256sum "$HERE/node/pause.c" | cut -c1-16); dir=$CACHE/node-pause/$key
  local repo=${PAUSE_IMAGE#*/}; local tag=${repo##*:}; repo=${repo%:*}
  if curl -fs -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
      "http://$REGISTRY/v2/$repo/manifests/$tag"; then return 0; fi
  if [ ! -x "$dir/pause" ]; then
    rm -rf "$dir.tmp"; mkdir -p "$dir.tmp"
    gcc -Os -static -Wall -o "$dir.tmp/pause" "$HERE/node/pause.c" && strip "$dir.tmp/pause" ||
      die "cannot build the pause binary (gcc, libc6-dev)"
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$dir.tmp/Containerfile"
    rm -rf "$dir"; mv "$dir.tmp" "$dir"
  fi
  local local_name=localhost/celestial-testenv/pause:$key
  podman image exists "$local_name" ||
    podman build -q --layers=false -t "$local_name" -f "$dir/Containerfile" "$dir" >/dev/null ||
    die "podman build of the pause image failed"
  podman push -q --tls-verify=false "$local_name" "docker://$PAUSE_IMAGE" >/dev/null ||
    die "podman push $PAUSE_IMAGE failed"
}

node_kubeconfig() { # name CN O -> $NODE_DIR/<name>.kubeconfig with a client certificate from the CA
  local name=$1 cn=$2 org=$3 d=$NODE_DIR/pki
  pki_cert "$d/$name" "/O=$org/CN=$cn" clientAuth
  # 127.0.0.1 inside the namespace is node-fwd, which forwards to the host's apiserver
  client_kubeconfig "$NODE_DIR/$name.kubeconfig" "$name" "$d/$name"
}

node_render() { # config templates from tests/env/node/ into $NODE_DIR
  local f
  mkdir -p "$NODE_DIR/cni/net.d" "$NODE_DIR/pod-logs" "$NODE_DIR/kubelet"
  for f in containerd.toml kubelet.yaml kube-proxy.yaml cni.conflist; do
    sed -e "s|@NODE@|$NODE_DIR|g" -e "s|@NODE_IP@|$NODE_IP|g" -e "s|@CA@|$STATE/pki/ca.crt|g" \
      -e "s|@POD_CIDR@|$POD_CIDR|g" -e "s|@PODS_CIDR@|$PODS_CIDR|g" -e "s|@NODE_NAME@|$NODE_NAME|g" \
      -e "s|@PAUSE_IMAGE@|$PAUSE_IMAGE|g" -e "s|@CGROUP_ROOT@|/$NODE_CGROUP|g" \
      "$HERE/node/$f" >"$NODE_DIR/$f"
  done
  mv "$NODE_DIR/cni.conflist" "$NODE_DIR/cni/net.d/10-celestial.conflist"
  local r
  for r in "$REGISTRY" "$REGISTRY_AUTH"; do # the registries are plain HTTP
    mkdir -p "$NODE_DIR/containerd/certs.d/$r"
    printf 'server = "http://%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$r" "$r" \
      >"$NODE_DIR/containerd/certs.d/$r/hosts.toml"
  done
}

net_up() { # the nodes' network on the host: the bridge (once, before the first node)
  ip link show "$NET_BRIDGE" >/dev/null 2>&1 && return 0
  echo "link $NET_BRIDGE" >>"$NODE_HOST"
  ip link add "$NET_BRIDGE" type bridge || die "cannot create the bridge $NET_BRIDGE"
  ip addr add "$NET_HOST_IP/24" dev "$NET_BRIDGE"
  ip link set "$NET_BRIDGE" up
}

net_down() { # after the last node: the bridge (and with it the host's routes to the pod CIDRs)
  ! ip link show "$NET_BRIDGE" >/dev/null 2>&1 || ip link del "$NET_BRIDGE"
}

node_netns_create() {
  touch "$NODE_NETNS"
  unshare --net="$NODE_NETNS" true || die "cannot create the network namespace of $NODE_NAME"
  stat -L -c %i "$NODE_NETNS" >"$NODE_DIR/netns.inode"
  echo "netns $(cat "$NODE_DIR/netns.inode") $NODE_ID" >>"$NODE_HOST"
  in_node ip link set lo up
  # a veth whose host end sits on the bridge: the node's address on the nodes' network
  ip link del "$NODE_VETH" 2>/dev/null || true
  ip link add "$NODE_VETH" type veth peer name eth0 netns "$NODE_NETNS"
  ip link set "$NODE_VETH" master "$NET_BRIDGE" up
  in_node ip addr add "$NODE_IP/24" dev eth0
  in_node ip link set eth0 up
  # a node routes its pods' traffic (pod bridge <-> node address); per namespace, not the host's
  in_node sysctl -qw net.ipv4.ip_forward=1
  # ClusterIPs: the node's own connections to Services need a route for kube-proxy's DNAT to see them
  in_node ip route add "$SERVICE_CIDR" via "$NET_HOST_IP"
  local j
  for j in $(node_ids); do # the other nodes' pods, through their node
    [ "$j" = "$NODE_ID" ] || in_node ip route add "10.245.$j.0/24" via "10.250.0.$(( j + 1 ))"
  done
  ip route replace "$POD_CIDR" via "$NODE_IP" dev "$NET_BRIDGE"   # the host (apiserver) -> pods
}

start_in_node() { # like start, inside the node's namespace (nsenter --net, not `ip netns exec`, which
  # remounts /sys and leaves runc with "no cgroup mount found in mountinfo")
  local name=$1 bin=$2; shift 2
  setsid nsenter --net="$NODE_NETNS" "$bin" "$@" 9>&- </dev/null >"$STATE/$name.log" 2>&1 &
  local pid=$!
  echo "$pid $(readlink -f "$bin")" >"$STATE/$name.pid"
}

node_cgroup_dirs() { # the node's cgroup root in every hierarchy (the symlinked ones are aliases)
  local h; for h in /sys/fs/cgroup/*; do [ -L "$h" ] || echo "$h/$NODE_CGROUP"; done
}

node_cgroup_create() { # kubelet refuses a cgroupRoot that does not exist
  local d
  for d in $(node_cgroup_dirs); do mkdir -p "$d"; done
  # a new cpuset cgroup starts without CPUs or memory nodes: inherit the root's
  d=/sys/fs/cgroup/cpuset
  if [ -f "$d/cpuset.cpus" ]; then
    cat "$d/cpuset.cpus" >"$d/$NODE_CGROUP/cpuset.cpus"; cat "$d/cpuset.mems" >"$d/$NODE_CGROUP/cpuset.mems"
  fi
}

node_ready_now() { # the kubelet started at $1 (epoch seconds) serves, renewed the node's lease, and the
  # node is Ready. (A Node left from before a restart stays Ready for the 40 s grace period without
  # any kubelet, and the kubelet rewrites the Node's status only on changes: the lease is the
  # kubelet's heartbeat.)
  local k=("$BIN/kubectl" --kubeconfig="$STATE/kubeconfig") renew
  in_node curl -fsS -o /dev/null http://127.0.0.1:10248/healthz || return 1
  renew=$("${k[@]}" -n kube-node-lease get lease "$NODE_NAME" -o 'jsonpath={.spec.renewTime}' 2>/dev/null) || return 1
  [ -n "$renew" ] && [ "$(date -d "$renew" +%s)" -ge "$1" ] || return 1
  node_schedulable
}

node_schedulable() { # the node is Ready and has no taint: the node lifecycle controller taints a node
  # that is not ready (yet) or under disk, memory or PID pressure, and the scheduler then places
  # nothing there (a cordon, `kubectl drain`, counts as a taint too)
  local k=("$BIN/kubectl" --kubeconfig="$STATE/kubeconfig")
  [ "$("${k[@]}" get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ] &&
    [ -z "$("${k[@]}" get node "$NODE_NAME" -o 'jsonpath={.spec.taints[*].key}')" ]
}

node_state() { # why the node may not be schedulable: its taints and its conditions
  "$BIN/kubectl" --kubeconfig="$STATE/kubeconfig" get node "$NODE_NAME" -o \
    'jsonpath=taints: {range .spec.taints[*]}{.key}={.value}:{.effect} {end}; conditions: {range .status.conditions[*]}{.type}={.status} ({.reason}) {end}' 2>&1
}

node_launch() { # component (PART-N)
  node_vars "${1##*-}"
  case ${1%-*} in
    node-fwd) start "$1" "$STATE/bin/$FWD_BIN_NAME" --netns "$NODE_NETNS" \
      --into "127.0.0.1:$API_PORT=127.0.0.1:$API_PORT" --into "$REGISTRY=$REGISTRY" \
      --into "$REGISTRY_AUTH=$REGISTRY_AUTH" ;;
    containerd) start_in_node "$1" "$(command -v containerd)" --config "$NODE_DIR/containerd.toml" ;;
    kubelet) start_in_node "$1" "$BIN/kubelet" --config="$NODE_DIR/kubelet.yaml" \
      --kubeconfig="$NODE_DIR/kubelet.kubeconfig" --root-dir="$NODE_DIR/kubelet" \
      --cert-dir="$NODE_DIR/kubelet/pki" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
      --node-labels="$NODE_LABEL=true" --v=1 ;;
    kube-proxy) start_in_node "$1" "$BIN/kube-proxy" --config="$NODE_DIR/kube-proxy.yaml" --v=1 ;;
  esac
}

node_wait() { # component (PART-N): until it serves
  node_vars "${1##*-}"
  case ${1%-*} in
    node-fwd) wait_for "$1" 30 grep -q 'testenv-netns-fwd: forwarding' "$STATE/$1.log" ;;
    containerd) wait_for "$1" 30 ctr -a "$NODE_DIR/containerd/containerd.sock" version ;;
    kubelet) wait_for "node $NODE_NAME Ready" 90 node_ready_now "$(( $(stat -c %Y "$STATE/$1.pid") - 1 ))" ;;
    kube-proxy) wait_for "$1" 60 in_node curl -fsS http://127.0.0.1:10256/healthz ;;
  esac
}

node_prepare() { # node N: everything before its processes start
  node_vars "$1"
  node_down_one "$1" || die "could not clean up the previous $NODE_NAME"
  mkdir -p "$NODE_DIR"
  node_kubeconfig kubelet "system:node:$NODE_NAME" system:nodes
  node_kubeconfig kube-proxy system:kube-proxy system:node-proxier
  # the kubelet's serving certificate from the cluster CA: the apiserver and metrics-server verify it
  pki_cert "$NODE_DIR/pki/kubelet-serving" "/O=system:nodes/CN=system:node:$NODE_NAME" serverAuth \
    "IP:$NODE_IP,DNS:$NODE_NAME"
  node_render
  node_cgroup_create
  node_netns_create
}

node_up() { # [N...] the nodes (default: all), into a running control plane + registries
  node_prereqs
  local t c i ids=("$@"); t=$(now)
  [ ${#ids[@]} -gt 0 ] || mapfile -t ids < <(node_ids)
  node_host_record
  net_up
  node_pause_image
  # the nodes start side by side: each part of every node, then the next part
  for i in "${ids[@]}"; do node_prepare "$i"; done
  for c in "${NODE_PARTS[@]}"; do
    local tc; tc=$(now)
    for i in "${ids[@]}"; do node_launch "$c-$i"; done
    for i in "${ids[@]}"; do node_wait "$c-$i" || die "$c-$i did not come up (log: $STATE/$c-$i.log)"; done
    log "nodes ${ids[*]}: $c ready ($(since "$tc")s)"
  done
  log "real nodes ${ids[*]} ready ($(since "$t")s): label $NODE_LABEL=true, no taint"
}

# ---------- teardown ----------
node_netns_inode() { # from the state dir, else from the host record (node_vars)
  if [ -f "$NODE_DIR/netns.inode" ]; then cat "$NODE_DIR/netns.inode"
  elif [ -f "$NODE_HOST" ]; then awk -v n="$NODE_ID" '$1=="netns" && $3==n {print $2}' "$NODE_HOST" | tail -1; fi
}

node_cgroups() { node_cgroup_dirs | while read -r d; do [ ! -d "$d" ] || echo "$d"; done; }
# kubepods at the top of a hierarchy: a kubelet without a cgroup root (an older environment)
stray_kubepods() { find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d -name kubepods 2>/dev/null || true; }
node_pods_pids() { # every process in the node's cgroups
  node_cgroups | xargs -r -I{} find {} -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u || true
}

node_processes() { # pid + command of everything of the node still running (must be none after down):
  # what runs in its cgroups, names its directory, or lives in its namespace. One grep and one find
  # over /proc (a loop over every process would fork twice per process); grep reads its pattern
  # from a file so that it does not match itself.
  local inode p cmd base_pids=" " c; inode=$(node_netns_inode)
  for c in "${BASE_COMPONENTS[@]}"; do
    if [ -f "$STATE/$c.pid" ]; then base_pids+="$(awk '{print $1}' "$STATE/$c.pid") "; fi
  done
  {
    node_pods_pids
    grep -l -a -s -F -f <(echo "$NODE_DIR/") /proc/[0-9]*/cmdline | cut -d/ -f3 || true
    [ -z "$inode" ] || find /proc/[0-9]*/ns/net -maxdepth 0 -lname "net:\[$inode\]" 2>/dev/null | cut -d/ -f3 || true
  } | sort -un | while read -r p; do
    # the environment's own processes that merely name the node (the LB stand-in's --node-netns)
    [[ " $base_pids " == *" $p "* ]] && continue
    cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline") || continue
    if [ -n "$cmd" ]; then echo "$p $cmd"; fi
  done
}

node_kill_all() { # [pods] -> SIGKILL what is left: the pods and their shims, or everything of the node
  local i pids
  for i in $(seq 20); do
    if [ "${1:-}" = pods ]; then
      pids=$( { node_pods_pids; node_processes | awk '$2 ~ /containerd-shim/ {print $1}'; } | sort -u)
    else
      pids=$(node_processes | awk '{print $1}')
    fi
    [ -n "$pids" ] || return 0
    kill -KILL $pids 2>/dev/null || true
    sleep 0.25
  done
}

node_unmount_all() { # deepest first; the namespace file is below $NODE_DIR too
  local i m mounts
  for i in $(seq 10); do
    mounts=$(awk -v d="$NODE_DIR/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | awk '{print length, $0}' |
      sort -rn | cut -d' ' -f2-)
    [ -n "$mounts" ] || return 0
    for m in $mounts; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  done
}

node_remove_cgroups() {
  local i d
  for i in $(seq 20); do
    d="$(node_cgroups) $(stray_kubepods)"
    [ -n "${d// /}" ] || return 0
    find $d -depth -type d -exec rmdir {} + 2>/dev/null || true
    [ -z "$(node_cgroups)$(stray_kubepods)" ] && return 0
    sleep 0.25
  done
}

host_restore() { # after the last node: what the kubelets and containerds changed on the host
  [ -f "$NODE_HOST" ] || return 0
  local kind a b
  while read -r kind a b; do
    if [ "$kind" = sysctl ]; then sysctl -qw "$a=$b" >/dev/null; fi
  done <"$NODE_HOST"
  existed() { grep -qx "existed $1" "$NODE_HOST"; }
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock
  existed /var/lib/kubelet || rm -rf /var/lib/kubelet
  if [ -d /var/log/containers ]; then
    find /var/log/containers -maxdepth 1 -lname "$STATE/node-*" -delete
    existed /var/log/containers || rmdir /var/log/containers 2>/dev/null || true
  fi
  if [ -d /run/containerd ]; then
    if existed /run/containerd; then find /run/containerd/s -newer "$NODE_HOST" -type s -delete 2>/dev/null || true
    else rm -rf /run/containerd; fi
  fi
  if [ -d /var/lib/cni ]; then
    if existed /var/lib/cni; then rm -rf /var/lib/cni/results/celestial-testenv-*
    else rm -rf /var/lib/cni; fi
  fi
  net_down
}

node_leftovers() { # what the node (node_vars) left on the host; empty when clean
  node_processes | sed 's/^/process: /'
  awk -v d="$NODE_DIR/" 'index($5, d) == 1 {print "mount: " $5}' /proc/self/mountinfo
  local inode; inode=$(node_netns_inode)
  if [ -n "$inode" ] && lsns -t net -n -o NS 2>/dev/null | grep -qx "$inode"; then echo "netns: net:[$inode] still has processes"; fi
  node_cgroups | sed 's/^/cgroup: /'
  ! ip link show "$NODE_VETH" >/dev/null 2>&1 || echo "link: $NODE_VETH"
}

host_leftovers() { # what the nodes left on the host once all are down; empty when clean
  local x
  stray_kubepods | sed 's/^/cgroup: /'
  ! ip link show "$NET_BRIDGE" >/dev/null 2>&1 || echo "link: $NET_BRIDGE"
  if [ -f "$NODE_HOST" ]; then
    local kind a b
    while read -r kind a b; do
      if [ "$kind" = sysctl ] && [ "$(sysctl -n "$a")" != "$b" ]; then echo "sysctl: $a = $(sysctl -n "$a") (was $b)"; fi
    done <"$NODE_HOST"
    for x in "${HOST_PATHS[@]}"; do
      grep -qx "existed $x" "$NODE_HOST" || [ ! -e "$x" ] || echo "host path: $x (did not exist before the nodes)"
    done
  fi
  [ ! -e /var/lib/kubelet/device-plugins/kubelet.sock ] || echo "host path: /var/lib/kubelet/device-plugins/kubelet.sock"
  [ ! -d /var/log/containers ] || find /var/log/containers -maxdepth 1 -lname "$STATE/node-*" | sed 's/^/host path: /'
}

node_down_one() { # N: stop the node, check it left nothing; safe to repeat and after a SIGKILL of all
  node_vars "$1"
  node_present || [ -n "$(node_netns_inode)" ] || return 0
  local t c; t=$(now)
  for c in kube-proxy kubelet; do stop_component "$c-$1"; done
  # pods first (every process of the node's cgroups), so containerd finds them gone; then the
  # shims (their command line names our containerd socket) and anything else in the namespace
  node_kill_all pods
  stop_component "containerd-$1"
  stop_component "node-fwd-$1"
  node_kill_all
  node_unmount_all
  node_remove_cgroups
  ip link del "$NODE_VETH" 2>/dev/null || true
  local left; left=$(node_leftovers)
  if [ -n "$left" ]; then
    log "$NODE_NAME left these behind:"; echo "$left" | sed 's/^/  /' >&2
    return 1
  fi
  rm -rf "$NODE_DIR"
  [ ! -f "$NODE_HOST" ] || sed -i "/^netns [0-9]* $1\$/d" "$NODE_HOST"
  log "$NODE_NAME: stopped and cleaned in $(since "$t")s (no process, mount, cgroup or link left)"
}

node_down() { # [N...] (default: every node there is); after the last one, restore the host and check
  local i ok=0 ids=("$@")
  [ ${#ids[@]} -gt 0 ] || mapfile -t ids < <( { node_ids; ls -d "$STATE"/node-[0-9]* 2>/dev/null | sed 's/.*-//'
    [ ! -f "$NODE_HOST" ] || awk '$1=="netns"{print $3}' "$NODE_HOST"; } | sort -un)
  for i in "${ids[@]}"; do node_down_one "$i" || ok=1; done
  node_vars 0
  [ $ok = 0 ] || return 1
  node_enabled && return 0   # other nodes still run: the host stays as they need it
  host_restore
  local left; left=$(host_leftovers)
  if [ -n "$left" ]; then
    log "the real nodes left these behind on the host:"; echo "$left" | sed 's/^/  /' >&2
    return 1
  fi
  rm -f "$NODE_HOST"
}

# The test environment's real node, sourced by tests/env/testenv (uses its STATE, CACHE, HERE,
# REGISTRY*, API_PORT, start/stop_component/wait_for/pid_alive/log/die).
#
# kubelet + containerd (+ runc, CNI bridge) + kube-proxy, in a network namespace of their own
# (a bind mount at $NODE_DIR/netns, not /run/netns, so nothing of it is left in a host directory).
# The namespace holds a veth pair with both ends inside (kn0 = the node IP $NODE_IP: kubelet wants a
# non-loopback node IP, and this kernel has no dummy interfaces), the pod bridge cbr0 with
# $POD_CIDR, and kube-proxy's iptables rules. The node reaches the host's loopback services
# (apiserver 127.0.0.1:6443, registries :5000/:5001) through `node-fwd` (testenv-netns-fwd: listens
# on the same addresses inside the namespace); the LB stand-in reaches node ports from a socket it
# creates inside the namespace. Nothing inside can reach any other address (no default route).
#
# The node is tainted celestial.dev/real-node=true:NoSchedule and labelled
# celestial.dev/real-node=true: only pods that tolerate the taint and select the label run there.
#
# What kubelet and containerd change on the host, and `node_down` restores and then checks:
#   sysctls kernel.panic, kernel.panic_on_oops, vm.overcommit_memory (+ vm.panic_on_oom,
#   kernel.keys.root_max*): saved in $NODE_HOST before kubelet starts, written back;
#   /var/lib/kubelet/device-plugins (hard-coded in kubelet), /var/log/containers symlinks,
#   /run/containerd/s (shim sockets, hard-coded in containerd 1.6), /var/lib/cni (libcni's cache):
#   removed when they did not exist before, else only our entries;
#   `kubepods` cgroups in every hierarchy; mounts below $NODE_DIR (overlay rootfs, pod volumes,
#   sandbox shm, pod netns bind mounts, the node's netns); processes (pods, shims, daemons).

NODE_NAME=real-node
NODE_LABEL=celestial.dev/real-node
NODE_DIR=$STATE/node
NODE_NETNS=$NODE_DIR/netns
NODE_IP=10.250.0.1
POD_CIDR=10.245.0.0/24     # not kwok's 10.244.0.0/16: real and fake pod IPs never collide
SERVICE_CIDR=10.96.0.0/16  # = the apiserver's --service-cluster-ip-range
# what the node changed on the host; outside STATE so it survives a lost state dir (next `up`/`down`
# still restores the host)
NODE_HOST=${STATE%/}.node-host
NODE_COMPONENTS=(node-fwd containerd kubelet kube-proxy)
PAUSE_IMAGE=$REGISTRY/celestial-testenv/pause:3.10
KUBELET_SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
HOST_PATHS=(/var/lib/kubelet /var/log/containers /run/containerd /var/lib/cni)
FWD_BIN_NAME=testenv-netns-fwd

in_node() { nsenter --net="$NODE_NETNS" "$@"; }
node_enabled() { [ -d "$NODE_DIR" ]; }
node_healthy() { # enabled and every part running
  node_enabled || return 1
  local c; for c in "${NODE_COMPONENTS[@]}"; do pid_alive "$c" || return 1; done
}
# `up` adds the node when TESTENV_REAL_NODE=1
node_wanted() { [ "${TESTENV_REAL_NODE:-0}" = 1 ]; }

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

node_host_record() { # once per node lifetime: the host's values before kubelet changes them
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
  mkdir -p "$d"
  openssl req -newkey rsa:2048 -nodes -subj "/O=$org/CN=$cn" -keyout "$d/$name.key" -out "$d/$name.csr" 2>/dev/null
  printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
    'extendedKeyUsage=clientAuth' >"$d/client.ext"
  openssl x509 -req -in "$d/$name.csr" -CA "$STATE/pki/ca.crt" -CAkey "$STATE/pki/ca.key" \
    -CAcreateserial -days 3650 -extfile "$d/client.ext" -out "$d/$name.crt" 2>/dev/null
  chmod 600 "$d/$name.key"
  # 127.0.0.1 inside the namespace is node-fwd, which forwards to the host's apiserver
  (umask 077; cat >"$NODE_DIR/$name.kubeconfig" <<EOK
apiVersion: v1
kind: Config
clusters:
- name: celestial-testenv
  cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: "$STATE/pki/ca.crt"}
users:
- name: $name
  user: {client-certificate: "$d/$name.crt", client-key: "$d/$name.key"}
contexts:
- name: $name
  context: {cluster: celestial-testenv, user: $name}
current-context: $name
EOK
  )
}

node_render() { # config templates from tests/env/node/ into $NODE_DIR
  local f
  mkdir -p "$NODE_DIR/cni/net.d" "$NODE_DIR/pod-logs" "$NODE_DIR/kubelet"
  for f in containerd.toml kubelet.yaml kube-proxy.yaml cni.conflist; do
    sed -e "s|@NODE@|$NODE_DIR|g" -e "s|@NODE_IP@|$NODE_IP|g" -e "s|@CA@|$STATE/pki/ca.crt|g" \
      -e "s|@POD_CIDR@|$POD_CIDR|g" -e "s|@NODE_NAME@|$NODE_NAME|g" -e "s|@PAUSE_IMAGE@|$PAUSE_IMAGE|g" \
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

node_netns_create() {
  touch "$NODE_NETNS"
  unshare --net="$NODE_NETNS" true || die "cannot create the node's network namespace"
  stat -L -c %i "$NODE_NETNS" >"$NODE_DIR/netns.inode"
  echo "netns $(cat "$NODE_DIR/netns.inode")" >>"$NODE_HOST"
  in_node ip link set lo up
  in_node ip link add kn0 type veth peer name kn1
  in_node ip addr add "$NODE_IP/24" dev kn0
  in_node ip link set kn1 up
  in_node ip link set kn0 up
  # a node routes its pods' traffic (pod bridge <-> node address); per namespace, not the host's
  in_node sysctl -qw net.ipv4.ip_forward=1
  # ClusterIPs: the node's own connections to Services need a route for kube-proxy's DNAT to see them
  in_node ip route add "$SERVICE_CIDR" dev kn0
}

start_in_node() { # like start, inside the node's namespace (nsenter --net, not `ip netns exec`, which
  # remounts /sys and leaves runc with "no cgroup mount found in mountinfo")
  local name=$1 bin=$2; shift 2
  setsid nsenter --net="$NODE_NETNS" "$bin" "$@" 9>&- </dev/null >"$STATE/$name.log" 2>&1 &
  local pid=$!
  echo "$pid $(readlink -f "$bin")" >"$STATE/$name.pid"
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

node_schedulable() { # the node is Ready and has no taint but its own: the node lifecycle controller
  # taints a node that is not ready (yet) or under disk, memory or PID pressure, and the scheduler
  # then places nothing there
  local k=("$BIN/kubectl" --kubeconfig="$STATE/kubeconfig")
  [ "$("${k[@]}" get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ] &&
    [ "$("${k[@]}" get node "$NODE_NAME" -o 'jsonpath={.spec.taints[*].key}')" = "$NODE_LABEL" ]
}

node_state() { # why the node may not be schedulable: its taints and its conditions
  "$BIN/kubectl" --kubeconfig="$STATE/kubeconfig" get node "$NODE_NAME" -o \
    'jsonpath=taints: {range .spec.taints[*]}{.key}={.value}:{.effect} {end}; conditions: {range .status.conditions[*]}{.type}={.status} ({.reason}) {end}' 2>&1
}

node_launch() { # component
  case $1 in
    node-fwd) start node-fwd "$STATE/bin/$FWD_BIN_NAME" --netns "$NODE_NETNS" \
      --into "127.0.0.1:$API_PORT=127.0.0.1:$API_PORT" --into "$REGISTRY=$REGISTRY" \
      --into "$REGISTRY_AUTH=$REGISTRY_AUTH" ;;
    containerd) start_in_node containerd "$(command -v containerd)" --config "$NODE_DIR/containerd.toml" ;;
    kubelet) start_in_node kubelet "$BIN/kubelet" --config="$NODE_DIR/kubelet.yaml" \
      --kubeconfig="$NODE_DIR/kubelet.kubeconfig" --root-dir="$NODE_DIR/kubelet" \
      --cert-dir="$NODE_DIR/kubelet/pki" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
      --node-labels="$NODE_LABEL=true" --v=1 ;;
    kube-proxy) start_in_node kube-proxy "$BIN/kube-proxy" --config="$NODE_DIR/kube-proxy.yaml" --v=1 ;;
  esac
}

node_wait() { # component: until it serves
  case $1 in
    node-fwd) wait_for node-fwd 30 grep -q 'testenv-netns-fwd: forwarding' "$STATE/node-fwd.log" ;;
    containerd) wait_for containerd 30 ctr -a "$NODE_DIR/containerd/containerd.sock" version ;;
    kubelet) wait_for "node $NODE_NAME Ready" 90 node_ready_now "$(( $(stat -c %Y "$STATE/kubelet.pid") - 1 ))" ;;
    kube-proxy) wait_for kube-proxy 60 in_node curl -fsS http://127.0.0.1:10256/healthz ;;
  esac
}

node_up() { # the whole node, into a running control plane + registries
  node_prereqs
  local t c; t=$(now)
  if node_enabled || [ -f "$NODE_HOST" ]; then node_down || die "could not clean up the previous node"; fi
  mkdir -p "$NODE_DIR"
  node_host_record
  node_pause_image
  node_kubeconfig kubelet "system:node:$NODE_NAME" system:nodes
  node_kubeconfig kube-proxy system:kube-proxy system:node-proxier
  node_render
  node_netns_create
  for c in "${NODE_COMPONENTS[@]}"; do
    local tc; tc=$(now)
    node_launch "$c"
    node_wait "$c" || die "$c did not come up (log: $STATE/$c.log)"
    log "node: $c ready ($(since "$tc")s)"
  done
  log "real node $NODE_NAME ready ($(since "$t")s): taint $NODE_LABEL=true:NoSchedule, label $NODE_LABEL=true"
}

# ---------- teardown ----------
node_netns_inode() { # from the state dir, else from the host record
  if [ -f "$NODE_DIR/netns.inode" ]; then cat "$NODE_DIR/netns.inode"
  elif [ -f "$NODE_HOST" ]; then awk '$1=="netns"{print $2}' "$NODE_HOST" | tail -1; fi
}

kubepods_cgroups() { find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d -name kubepods 2>/dev/null || true; }
kubepods_pids() { # every process in the kubepods cgroups (this machine runs no other kubelet)
  kubepods_cgroups | xargs -r -I{} find {} -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u || true
}

node_processes() { # pid + command of everything of the node still running (must be none after down):
  # what runs in a kubepods cgroup, names the node's directory, or lives in its namespace. One grep
  # and one find over /proc (a loop over every process would fork twice per process); grep reads its
  # pattern from a file so that it does not match itself.
  local inode p cmd base_pids=" " c; inode=$(node_netns_inode)
  for c in "${BASE_COMPONENTS[@]}"; do
    if [ -f "$STATE/$c.pid" ]; then base_pids+="$(awk '{print $1}' "$STATE/$c.pid") "; fi
  done
  {
    kubepods_pids
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
      pids=$( { kubepods_pids; node_processes | awk '$2 ~ /containerd-shim/ {print $1}'; } | sort -u)
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
    d=$(kubepods_cgroups)
    [ -n "$d" ] || return 0
    find $d -depth -type d -exec rmdir {} + 2>/dev/null || true
    [ -z "$(kubepods_cgroups)" ] && return 0
    sleep 0.25
  done
}

node_restore_host() {
  [ -f "$NODE_HOST" ] || return 0
  local kind a b
  while read -r kind a b; do
    if [ "$kind" = sysctl ]; then sysctl -qw "$a=$b" >/dev/null; fi
  done <"$NODE_HOST"
  existed() { grep -qx "existed $1" "$NODE_HOST"; }
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock
  existed /var/lib/kubelet || rm -rf /var/lib/kubelet
  if [ -d /var/log/containers ]; then
    find /var/log/containers -maxdepth 1 -lname "$NODE_DIR/*" -delete
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
}

node_leftovers() { # what the node left on the host; empty when clean
  local x
  node_processes | sed 's/^/process: /'
  awk -v d="$NODE_DIR/" 'index($5, d) == 1 {print "mount: " $5}' /proc/self/mountinfo
  local inode; inode=$(node_netns_inode)
  if [ -n "$inode" ] && lsns -t net -n -o NS 2>/dev/null | grep -qx "$inode"; then echo "netns: net:[$inode] still has processes"; fi
  kubepods_cgroups | sed 's/^/cgroup: /'
  if [ -f "$NODE_HOST" ]; then
    local kind a b
    while read -r kind a b; do
      if [ "$kind" = sysctl ] && [ "$(sysctl -n "$a")" != "$b" ]; then echo "sysctl: $a = $(sysctl -n "$a") (was $b)"; fi
    done <"$NODE_HOST"
    for x in "${HOST_PATHS[@]}"; do
      grep -qx "existed $x" "$NODE_HOST" || [ ! -e "$x" ] || echo "host path: $x (did not exist before the node)"
    done
  fi
  [ ! -e /var/lib/kubelet/device-plugins/kubelet.sock ] || echo "host path: /var/lib/kubelet/device-plugins/kubelet.sock"
  [ ! -d /var/log/containers ] || find /var/log/containers -maxdepth 1 -lname "$NODE_DIR/*" | sed 's/^/host path: /'
}

node_down() { # stop the node, restore the host, check; safe to repeat and after a SIGKILL of all
  [ -d "$NODE_DIR" ] || [ -f "$NODE_HOST" ] || return 0
  local t c; t=$(now)
  for c in kube-proxy kubelet; do stop_component "$c"; done
  # pods first (every process of the kubepods cgroups), so containerd finds them gone; then the
  # shims (their command line names our containerd socket) and anything else in the namespace
  node_kill_all pods
  stop_component containerd
  stop_component node-fwd
  node_kill_all
  node_unmount_all
  node_remove_cgroups
  node_restore_host
  local left; left=$(node_leftovers)
  if [ -n "$left" ]; then
    log "the real node left these behind:"; echo "$left" | sed 's/^/  /' >&2
    return 1
  fi
  rm -rf "$NODE_DIR"; rm -f "$NODE_HOST" "$STATE"/{node-fwd,containerd,kubelet,kube-proxy}.pid
  log "node: stopped and cleaned in $(since "$t")s (no process, mount, cgroup, sysctl or host path left)"
}

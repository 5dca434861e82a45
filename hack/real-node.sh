#!/usr/bin/env bash
# Adds one real node (kubelet + containerd + runc, real containers) to a running local cluster,
# beside kwok's fake nodes, and removes it again without a trace.
#
#   hack/real-node.sh [--name NAME] up|down|status|env
#
#   up      build what is missing (kubelet, containerd, CNI plugins, the project's images; cached,
#           with progress), set up the host (a bridge, hosts entry), start containerd, import the
#           images, start the kubelet, wait until the Node is Ready and print how to use it
#   down    delete the node's pods (gracefully) and the Node object, stop every process `up`
#           started (by recorded pid), remove leftover shims, mounts, cgroups, links, restore
#           the host's sysctls and /etc/hosts, remove the state
#   status  each process (pid alive), the Node's readiness, its pods and images
#   env     `export` lines: DATAJOB_REAL_NODE, DATAJOB_CTR, DATAJOB_OPERATOR_IMAGE, ...
#
# NAME (default dev, or $DATAJOB_CLUSTER) is the cluster (hack/cluster.sh --name NAME up first).
# The node is called real-NAME, labelled datajob.dev/node-kind=real and tainted
# datajob.dev/node-kind=real:NoSchedule, so only pods that tolerate it land there. Needs root,
# and runc from Debian (apt-get install runc). One real node per machine. See docs/real-node.md.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/hack/lib/common.sh"
source "$ROOT/hack/lib/versions.sh"
source "$ROOT/hack/lib/build.sh"
source "$ROOT/hack/lib/node-build.sh"
source "$ROOT/hack/lib/pki.sh"

NAME=${DATAJOB_CLUSTER:-dev}
CMD=""
real_node_option() {
  OPTION_ARGS=1
  case $1 in
    -h | --help) bad_usage 19 ;;
    up | down | status | env)
      [[ -z $CMD ]] || bad_usage 19
      CMD=$1 ;;
    *) log "unknown argument: $1"; bad_usage 19 ;;
  esac
}
# --port-base is accepted like every hack/ script's, and unused: the node takes the ports the
# cluster NAME was started with.
parse_options real_node_option "$@"
[[ -n $CMD ]] || bad_usage 19
check_name

CLUSTER_STATE=$(state_dir "$NAME")
# Beside the clusters' folders: .../datajob-operator/real-nodes/NAME.
REAL_NODES=$(dirname "$(dirname "$CLUSTER_STATE")")/real-nodes
STATE="$REAL_NODES/$NAME"
RUN="/run/datajob-real-$NAME"
LOGS="$STATE/logs"
PIDS="$STATE/pids"
NODE_NAME="real-$NAME"
# Interface names have at most 15 characters. The node link holds the node IP and the service IP;
# the pods' bridge is the CNI bridge plugin's (it refuses a bridge with other addresses).
LINK_ID=$(printf '%s' "$NAME" | cksum | cut -d' ' -f1)
NODE_LINK="djn-${LINK_ID:0:11}"
BRIDGE="djr-${LINK_ID:0:11}"
NODE_IP=10.89.0.1
POD_CIDR=10.88.0.0/16
POD_GATEWAY=10.88.0.1
# The cluster's service range and the `kubernetes` Service's IP (hack/cluster.sh); pods reach the
# API server there, through apiserver-forward.
SERVICE_CIDR=10.0.0.0/24
SERVICE_IP=10.0.0.1
HOSTS_MARK="# datajob-operator real node $NAME"
# Host settings the kubelet and the bridge plugin change; `up` records them, `down` restores.
SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
  net.ipv6.conf.all.forwarding net.ipv4.conf.all.forwarding)
# Host folders a kubelet or containerd may create outside the ones we point them at; `down`
# removes those that did not exist before `up`.
HOST_DIRS=(/run/containerd /var/log/containers /var/log/pods /var/lib/kubelet /var/lib/containerd
  /opt/containerd /var/lib/cni /run/netns /var/run/nri /etc/cni /opt/cni /run/mount)
PROCESSES=(containerd apiserver-forward kubelet)

# --- processes (recorded by pid, hack/lib/common.sh) ---------------------------------------

live_pid() { recorded_pid "$PIDS/$1"; }

# start NAME BINARY ARGS...: starts a process of the node unless it runs already.
start() {
  local c=$1; shift
  if live_pid "$c" >/dev/null; then
    log "$c already running (pid $(live_pid "$c"))"
    return 0
  fi
  log "starting $c"
  spawn_recorded "$PIDS/$c" "$LOGS/$c.log" "$@"
}

stop() { stop_recorded "$PIDS/$1" 20; }

wait_until() { # wait_until DESCRIPTION TIMEOUT PROCESS COMMAND...
  local what=$1 timeout=$2 c=$3; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [[ -n $c ]] && ! live_pid "$c" >/dev/null; then
      tail -n 30 "$LOGS/$c.log" >&2 || true
      die "$what: $c is not running (log: $LOGS/$c.log)"
    fi
    if ((SECONDS >= deadline)); then
      [[ -n $c ]] && { tail -n 30 "$LOGS/$c.log" >&2 || true; }
      die "timed out after ${timeout}s waiting for $what"
    fi
    sleep 0.2
  done
}

# --- the cluster ----------------------------------------------------------------------------

load_cluster() {
  [[ -f $CLUSTER_STATE/cluster.env ]] || die "cluster '$NAME' is not up; run: hack/cluster.sh --name $NAME up"
  local line
  while IFS= read -r line; do
    case $line in
      PORT_BASE=* | SERVER=* | BIN_*=*) printf -v "${line%%=*}" '%s' "${line#*=}" ;;
    esac
  done <"$CLUSTER_STATE/cluster.env"
  APISERVER_PORT=$PORT_BASE
  HEALTHZ_PORT=$((PORT_BASE + 10))
}

kubectl_admin() { "$BIN_KUBECTL" --kubeconfig "$CLUSTER_STATE/kubeconfig" --request-timeout=15s "$@"; }
cluster_reachable() { [[ -f $CLUSTER_STATE/kubeconfig ]] && kubectl_admin get --raw /readyz >/dev/null 2>&1; }
node_ready() {
  [[ $(kubectl_admin get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}
ctr_() { "$(containerd_bin_dir)/ctr" --address "$RUN/containerd.sock" --namespace k8s.io "$@"; }

# --- the host -------------------------------------------------------------------------------

record_host() {
  [[ -f $STATE/host/sysctls ]] && return 0 # recorded by an earlier, interrupted `up`
  mkdir -p "$STATE/host"
  local key value dir
  for key in "${SYSCTLS[@]}"; do
    value=$(sysctl -n "$key" 2>/dev/null) || continue
    printf '%s=%s\n' "$key" "$value" >>"$STATE/host/sysctls.tmp"
  done
  for dir in "${HOST_DIRS[@]}"; do
    [[ -e $dir ]] || echo "$dir" >>"$STATE/host/created-dirs.tmp"
  done
  touch "$STATE/host/created-dirs.tmp"
  mv "$STATE/host/created-dirs.tmp" "$STATE/host/created-dirs"
  mv "$STATE/host/sysctls.tmp" "$STATE/host/sysctls"
}

restore_sysctls() {
  [[ -f $STATE/host/sysctls ]] || return 0
  local line key value now
  while IFS= read -r line; do
    key=${line%%=*} value=${line#*=}
    now=$(sysctl -n "$key" 2>/dev/null) || continue
    if [[ $now != "$value" ]]; then
      log "restoring sysctl $key=$value (was $now)"
      sysctl -qw "$key=$value" || log "warning: could not restore $key"
    fi
  done <"$STATE/host/sysctls"
}

# The kubelet refuses a loopback node IP and this kernel lacks the dummy link type: an empty
# bridge with /32 addresses is the node's address (and the service IP's), reachable only locally.
setup_network() {
  if ! ip link show "$NODE_LINK" >/dev/null 2>&1; then
    log "creating link $NODE_LINK (node IP $NODE_IP/32, service IP $SERVICE_IP/32); pods: $BRIDGE, $POD_CIDR"
    ip link add "$NODE_LINK" type bridge
  fi
  ip addr show dev "$NODE_LINK" | grep -q " $NODE_IP/32 " || ip addr add "$NODE_IP/32" dev "$NODE_LINK"
  ip addr show dev "$NODE_LINK" | grep -q " $SERVICE_IP/32 " || ip addr add "$SERVICE_IP/32" dev "$NODE_LINK"
  ip link set "$NODE_LINK" up
}

# The API server dials the node by its host name (logs, exec): a hosts entry names the node IP.
add_hosts_entry() {
  grep -qF "$HOSTS_MARK" /etc/hosts && return 0
  log "adding '$NODE_IP $NODE_NAME' to /etc/hosts"
  # Written in place: /etc/hosts may be a bind mount that cannot be replaced.
  printf '%s %s %s\n' "$NODE_IP" "$NODE_NAME" "$HOSTS_MARK" >>/etc/hosts
}

remove_hosts_entry() {
  grep -qF "$HOSTS_MARK" /etc/hosts || return 0
  log "removing the hosts entry of $NODE_NAME"
  local kept; kept=$(grep -vF "$HOSTS_MARK" /etc/hosts)
  printf '%s\n' "$kept" >/etc/hosts
}

# --- up -------------------------------------------------------------------------------------

fill() { # fill TEMPLATE OUT: replaces the @NAME@ placeholders
  sed -e "s|@STATE@|$STATE|g" -e "s|@RUN@|$RUN|g" -e "s|@PAUSE_IMAGE@|$PAUSE_IMAGE|g" \
    -e "s|@RUNC@|$RUNC|g" -e "s|@CNI_BIN@|$(cni_bin_dir)|g" -e "s|@NODE_IP@|$NODE_IP|g" \
    -e "s|@HEALTHZ_PORT@|$HEALTHZ_PORT|g" -e "s|@BRIDGE@|$BRIDGE|g" -e "s|@POD_CIDR@|$POD_CIDR|g" \
    -e "s|@POD_GATEWAY@|$POD_GATEWAY|g" -e "s|@SERVICE_CIDR@|$SERVICE_CIDR|g" \
    "$ROOT/hack/real-node/$1" >"$2"
}

other_real_node() {
  local dir
  for dir in "$REAL_NODES"/*/; do
    [[ -d $dir && ${dir%/} != "$STATE" ]] && { basename "$dir"; return 0; }
  done
  return 1
}

cmd_up() {
  local t0=$SECONDS other
  trap '(($? == 0)) || log "up failed; logs are in $LOGS; clean up with: hack/real-node.sh --name $NAME down"' EXIT
  (($(id -u) == 0)) || die "a real node needs root (network links, mounts, cgroups)"
  RUNC=$(command -v runc || true)
  [[ -x $RUNC ]] || die "runc is missing: apt-get install runc"
  other=$(other_real_node) && die "the real node of cluster '$other' is up; one per machine (hack/real-node.sh --name $other down)"
  load_cluster
  cluster_reachable || die "the API server of cluster '$NAME' does not answer; run: hack/cluster.sh --name $NAME up"

  build_node || die "could not build the real node's binaries"
  resolve_binaries || die "could not build the cluster's binaries"
  log "building the images (hack/image.sh)"
  "$ROOT/hack/image.sh" --out "$ROOT/target/images" >&2 || die "hack/image.sh failed"
  local images_env="$ROOT/target/images/images.env"
  log "binaries and images ready after $((SECONDS - t0))s"

  mkdir -p "$STATE" "$LOGS" "$PIDS" "$STATE/cni/net.d" "$STATE/kubelet" "$STATE/pod-logs" "$RUN"
  chmod 700 "$STATE"
  record_host

  # The sandbox image: the pause program, built like the project's images.
  local tools; tools=$(node_tools_dir)
  PAUSE_IMAGE="localhost/datajob-pause:${tools##*node-tools-}"
  "$tools/image-builder" --name "$PAUSE_IMAGE" --out "$STATE/pause.oci.tar" --epoch 0 \
    --file "$tools/pause=/pause" --entrypoint /pause >/dev/null

  setup_network
  add_hosts_entry

  # Node identity: a client certificate the Node authorizer accepts.
  local pki="$CLUSTER_STATE/pki"
  pki_cert "$pki" "node-$NODE_NAME" "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
  pki_kubeconfig "$STATE/kubelet.kubeconfig" "$SERVER" "$pki/ca.crt" "$pki/node-$NODE_NAME.crt" \
    "$pki/node-$NODE_NAME.key" "system:node:$NODE_NAME" "datajob-$NAME"

  fill containerd.toml "$STATE/containerd.toml"
  fill kubelet.yaml "$STATE/kubelet.yaml"
  fill cni.conflist "$STATE/cni/net.d/10-datajob.conflist"

  start containerd "$(containerd_bin_dir)/containerd" --config "$STATE/containerd.toml"
  wait_until "containerd to serve" 60 containerd ctr_ version
  local archive
  for archive in "$STATE/pause.oci.tar" $(sed -n 's/^[A-Z_]*_ARCHIVE=//p' "$images_env"); do
    log "importing $(basename "$archive")"
    ctr_ images import --no-unpack=false "$archive" >/dev/null 2>"$LOGS/import.err" ||
      { cat "$LOGS/import.err" >&2; die "importing $archive failed"; }
  done

  start apiserver-forward "$tools/apiserver-forward" --listen "$SERVICE_IP:443" --to "127.0.0.1:$APISERVER_PORT"

  start kubelet "$(k8s_bin_dir)/kubelet" \
    --config="$STATE/kubelet.yaml" \
    --kubeconfig="$STATE/kubelet.kubeconfig" \
    --root-dir="$STATE/kubelet" \
    --cert-dir="$STATE/kubelet/pki" \
    --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP" \
    --node-labels="datajob.dev/node-kind=real" \
    --v=1
  wait_until "node $NODE_NAME to be Ready" 120 kubelet node_ready

  {
    echo "DATAJOB_REAL_NODE=$NODE_NAME"
    echo "DATAJOB_CONTAINERD_ADDRESS=$RUN/containerd.sock"
    echo "DATAJOB_CTR=$(containerd_bin_dir)/ctr"
    echo "DATAJOB_PAUSE_IMAGE=$PAUSE_IMAGE"
    cat "$images_env"
  } >"$STATE/real-node.env"
  log "real node $NODE_NAME is Ready after $((SECONDS - t0))s"
  cat >&2 <<EOF

Use it with:
  eval "\$(hack/cluster.sh --name $NAME env)" && eval "\$(hack/real-node.sh --name $NAME env)"
  kubectl get node $NODE_NAME --show-labels
Pods land there with the node selector datajob.dev/node-kind=real and the toleration
datajob.dev/node-kind=real:NoSchedule (a ComputePool's nodeSelector and tolerations do it for
executor pods); images: imagePullPolicy Never or IfNotPresent.
Logs:          $LOGS/
Stop it with:  hack/real-node.sh --name $NAME down
EOF
}

# --- env, status ----------------------------------------------------------------------------

cmd_env() {
  [[ -f $STATE/real-node.env ]] || die "no real node for cluster '$NAME'; run: hack/real-node.sh --name $NAME up"
  local line
  while IFS= read -r line; do
    printf 'export %s=%q\n' "${line%%=*}" "${line#*=}"
  done <"$STATE/real-node.env"
}

cmd_status() {
  [[ -d $STATE ]] || { echo "real node of cluster $NAME: not up"; return 1; }
  load_cluster
  local c pid rc=0
  echo "real node $NODE_NAME of cluster $NAME (state $STATE)"
  for c in "${PROCESSES[@]}"; do
    if pid=$(live_pid "$c"); then
      printf '  %-20s pid %s\n' "$c" "$pid"
    else
      printf '  %-20s NOT RUNNING\n' "$c"; rc=1
    fi
  done
  if cluster_reachable; then
    kubectl_admin get node "$NODE_NAME" -L datajob.dev/node-kind 2>&1 | sed 's/^/  /'
    node_ready || rc=1
    kubectl_admin get pods -A --field-selector "spec.nodeName=$NODE_NAME" -o wide 2>&1 | sed 's/^/  /'
  else
    echo "  the API server does not answer"; rc=1
  fi
  if live_pid containerd >/dev/null; then
    ctr_ images ls -q 2>&1 | grep -v '^sha256:' | sed 's/^/  image /'
  fi
  return $rc
}

# --- down -----------------------------------------------------------------------------------

# Pids of this node's containerd shims (their command line names our containerd socket), and of
# the containers' processes below them.
shim_pids() {
  local pid
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$(containerd_bin_dir)/containerd-shim-runc-v2" ]] || continue
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$RUN/containerd.sock" && echo "$pid"
  done
}

descendants() {
  local pid=$1 child
  for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
    echo "$child"
    descendants "$child"
  done
}

# Mount points at or below the given folders, deepest first.
mounts_below() {
  local dir
  for dir in "$@"; do
    awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo
  done | sort -u | awk '{print length, $0}' | sort -rn | cut -d' ' -f2-
}

remove_cgroups() {
  local dir
  for dir in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d $dir ]] || continue
    find "$dir" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ -d $dir ]] && log "warning: $dir is still there (a process left in it?)"
  done
  return 0
}

cmd_down() {
  if [[ ! -d $STATE && ! -d $RUN ]]; then
    log "no real node for cluster '$NAME'"
    return 0
  fi
  local apiserver=0
  if [[ -f $CLUSTER_STATE/cluster.env ]]; then
    load_cluster
    cluster_reachable && apiserver=1
  fi
  # With the kubelet and the API server up, pods go the normal way: graceful deletion, the
  # kubelet stops the containers and tears down their network, then the Node object goes.
  if ((apiserver)); then
    if kubectl_admin get node "$NODE_NAME" >/dev/null 2>&1; then
      kubectl_admin cordon "$NODE_NAME" >/dev/null 2>&1 || true
      if live_pid kubelet >/dev/null && [[ -n $(kubectl_admin get pods -A --field-selector "spec.nodeName=$NODE_NAME" -o name 2>/dev/null) ]]; then
        log "deleting the pods on $NODE_NAME"
        kubectl_admin delete pods -A --field-selector "spec.nodeName=$NODE_NAME" --wait=true --timeout=90s >/dev/null 2>&1 ||
          log "warning: some pods did not go within 90s; forcing"
      fi
      kubectl_admin delete pods -A --field-selector "spec.nodeName=$NODE_NAME" --grace-period=0 --force >/dev/null 2>&1 || true
      log "deleting node $NODE_NAME"
      kubectl_admin delete node "$NODE_NAME" --wait=true >/dev/null 2>&1 || log "warning: could not delete node $NODE_NAME"
    fi
  else
    log "the API server of cluster '$NAME' does not answer: pods and the Node object stay with it"
  fi
  stop kubelet
  # Containers the kubelet did not stop: kill their tasks through containerd.
  if live_pid containerd >/dev/null; then
    local task
    for task in $(ctr_ tasks ls -q 2>/dev/null); do
      ctr_ tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true
    done
    sleep 0.5
    for task in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$task" >/dev/null 2>&1 || true; done
  fi
  stop apiserver-forward
  stop containerd
  # Shims outlive containerd by design; they and their containers are ours by socket path.
  local pid pids=()
  for pid in $(shim_pids); do pids+=("$pid" $(descendants "$pid")); done
  if ((${#pids[@]})); then
    log "stopping leftover shims and containers: ${pids[*]}"
    kill -KILL "${pids[@]}" 2>/dev/null || true
    sleep 0.5
  fi
  local m
  while read -r m; do
    [[ -n $m ]] || continue
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: cannot unmount $m"
  done < <(mounts_below "$STATE" "$RUN" /run/containerd)
  remove_cgroups
  local link
  # Host ends of pod veths whose pods were not torn down by the kubelet.
  for link in $(ip -o link show type veth 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    [[ $(cat "/sys/class/net/$link/master/uevent" 2>/dev/null) == *"INTERFACE=$BRIDGE"* ]] && ip link delete "$link"
  done
  for link in "$BRIDGE" "$NODE_LINK"; do
    if ip link show "$link" >/dev/null 2>&1; then
      log "deleting link $link"
      ip link delete "$link"
    fi
  done
  restore_sysctls
  remove_hosts_entry
  if [[ -f $STATE/host/created-dirs ]]; then
    local dir
    while read -r dir; do
      [[ -n $dir && -e $dir ]] || continue
      [[ -z $(mounts_below "$dir") ]] || { log "warning: $dir still has mounts; kept"; continue; }
      log "removing $dir (created by the real node)"
      rm -rf "$dir"
    done <"$STATE/host/created-dirs"
  fi
  rm -rf "$RUN" "$STATE"
  log "real node $NODE_NAME is down; the host is restored"
}

case $CMD in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
esac

#!/usr/bin/env bash
# A real, local Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver (RBAC on),
# kube-controller-manager, kube-scheduler and kwok (fake nodes and the kubelet's pod lifecycle).
# Binaries are built from their Go modules into a cache folder on first use.
#
#   hack/cluster.sh [--name NAME] [--port-base PORT] [--nodes N] [--audit] [--real-node]
#                   up|down|env|status
#
#   --real-node  with up: also add the real node (hack/real-node.sh up); down always removes it
#
#   up      build what is missing, start the cluster (a running one is left as it is), wait
#           until it is ready and print how to use it
#   env     print `export KUBECONFIG=... PATH=...` lines: eval "$(hack/cluster.sh env)"
#   status  report each component (pid alive, health) and the nodes
#   down    stop exactly the processes `up` started (recorded pids) and remove the state folder
#
# NAME (default dev, or $DATAJOB_CLUSTER) picks the state folder
# ${XDG_STATE_HOME:-~/.local/state}/datajob-operator/clusters/NAME and, unless --port-base or
# $DATAJOB_PORT_BASE is given, the ports: dev 16400, ci 16500, any other name 17000 + 10 * (cksum
# of the name mod 300). Ports: base+0 kube-apiserver, +1 etcd client, +2 etcd peer,
# +3 kube-controller-manager, +4 kube-scheduler, +5 kwok. See docs/control-plane.md.
# --audit: the API server writes an audit log (STATE/audit.log: every write at Metadata level,
# Lease writes with their response; hack/chaos.sh reads it); a cluster started with it keeps it
# when `up` restarts a stopped API server.
# DATAJOB_APISERVER_PROFILING=true serves the API server's /debug/pprof (for finding where its
# CPU goes under a benchmark: kubectl get --raw '/debug/pprof/profile?seconds=20').
# DATAJOB_KCM_QPS and DATAJOB_KCM_BURST set kube-controller-manager's client rate limit
# (default 200 requests a second, burst 400; each controller has its own), for benchmarks.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/hack/lib/common.sh"
source "$ROOT/hack/lib/versions.sh"
source "$ROOT/hack/lib/build.sh"
source "$ROOT/hack/lib/pki.sh"

COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

# --- arguments ----------------------------------------------------------------------------

NAME=${DATAJOB_CLUSTER:-dev}
NODES=${DATAJOB_NODES:-6}
REAL_NODE=0
AUDIT=${DATAJOB_AUDIT:-0}
CMD=""
cluster_sh_option() {
  OPTION_ARGS=1
  case $1 in
    --nodes) NODES=${2:?--nodes needs a value}; OPTION_ARGS=2 ;;
    --nodes=*) NODES=${1#*=} ;;
    --real-node) REAL_NODE=1 ;;
    --audit) AUDIT=1 ;;
    -h | --help) bad_usage 28 ;;
    up | down | env | status)
      [[ -z $CMD ]] || bad_usage 28
      CMD=$1 ;;
    *) log "unknown argument: $1"; bad_usage 28 ;;
  esac
}
parse_options cluster_sh_option "$@"
[[ -n $CMD ]] || bad_usage 28
check_name
[[ $NODES =~ ^[0-9]+$ ]] || die "--nodes must be a number"

STATE=$(state_dir "$NAME")
PKI="$STATE/pki"
LOGS="$STATE/logs"
PIDS="$STATE/pids"

default_port_base() {
  case $1 in
    dev) echo 16400 ;;
    ci) echo 16500 ;;
    *) echo $((17000 + 10 * ($(printf '%s' "$1" | cksum | cut -d' ' -f1) % 300))) ;;
  esac
}

# A running cluster keeps the ports it was started with.
if [[ -f $STATE/cluster.env ]]; then
  recorded=$(sed -n 's/^PORT_BASE=//p' "$STATE/cluster.env")
  if [[ -n $PORT_BASE && $PORT_BASE != "$recorded" && $CMD == up ]]; then
    die "cluster '$NAME' was started with port base $recorded; run 'hack/cluster.sh --name $NAME down' first to change it"
  fi
  PORT_BASE=$recorded
fi
PORT_BASE=${PORT_BASE:-$(default_port_base "$NAME")}
if ! [[ $PORT_BASE =~ ^[0-9]+$ ]] || ((PORT_BASE < 1024 || PORT_BASE > 65525)); then
  die "bad port base '$PORT_BASE'"
fi

APISERVER_PORT=$PORT_BASE
ETCD_PORT=$((PORT_BASE + 1))
ETCD_PEER_PORT=$((PORT_BASE + 2))
KCM_PORT=$((PORT_BASE + 3))
SCHEDULER_PORT=$((PORT_BASE + 4))
KWOK_PORT=$((PORT_BASE + 5))
SERVER="https://127.0.0.1:$APISERVER_PORT"

# --- processes ----------------------------------------------------------------------------

# Prints the recorded pid of component $1 if that process is alive and still runs the binary
# recorded with it (so a reused pid is never mistaken for ours); fails otherwise.
live_pid() { recorded_pid "$PIDS/$1"; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start COMPONENT BINARY ARGS...: starts it (unless it runs), logging to logs/COMPONENT.log,
# recorded as pids/COMPONENT.pid and pids/COMPONENT.exe.
start() {
  local c=$1 bin=$2; shift 2
  if live_pid "$c" >/dev/null; then
    log "$c already running (pid $(live_pid "$c"))"
    return 0
  fi
  log "starting $c"
  spawn_recorded "$PIDS/$c" "$LOGS/$c.log" "$bin" "$@"
}

# wait_until DESCRIPTION TIMEOUT_SECONDS COMPONENT COMMAND...: polls COMMAND every 0.2 s until it
# succeeds; fails with the component's log tail if the process died or time ran out.
wait_until() {
  local what=$1 timeout=$2 c=$3; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [[ -n $c ]] && ! live_pid "$c" >/dev/null; then
      log "$c exited; last lines of $LOGS/$c.log:"
      tail -n 30 "$LOGS/$c.log" >&2 || true
      die "$what: $c is not running"
    fi
    if ((SECONDS >= deadline)); then
      [[ -n $c ]] && { log "last lines of $LOGS/$c.log:"; tail -n 30 "$LOGS/$c.log" >&2 || true; }
      die "timed out after ${timeout}s waiting for $what"
    fi
    sleep 0.2
  done
}

kubectl_admin() { "$BIN_KUBECTL" --kubeconfig "$STATE/kubeconfig" --request-timeout=10s "$@"; }

# HTTPS health endpoint of a component, anonymous (the components allow /healthz, /readyz).
healthy() {
  local url=$1
  if command -v curl >/dev/null; then
    [[ $(curl -ksS --max-time 3 "$url" 2>/dev/null) == ok ]]
  else
    # No curl: an open port is the best we can tell.
    local port=${url##*:}; port=${port%%/*}
    port_in_use "$port"
  fi
}

# --- up -----------------------------------------------------------------------------------

write_pki() {
  mkdir -p "$PKI"
  pki_ca "$PKI"
  pki_cert "$PKI" apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  pki_cert "$PKI" admin "/O=system:masters/CN=admin" clientAuth
  pki_cert "$PKI" kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
  pki_cert "$PKI" kube-scheduler "/CN=system:kube-scheduler" clientAuth
  # kwok plays every node's kubelet (status of nodes and pods, leases, deletes): admin rights.
  pki_cert "$PKI" kwok "/O=system:masters/CN=kwok" clientAuth
  pki_cert "$PKI" alice "/CN=alice" clientAuth
  pki_cert "$PKI" bob "/CN=bob" clientAuth
  pki_service_account "$PKI"
  local who file
  for who in admin kube-controller-manager kube-scheduler kwok alice bob; do
    case $who in
      admin) file="$STATE/kubeconfig" ;;
      alice | bob) file="$STATE/kubeconfig-$who" ;;
      *) file="$STATE/$who.kubeconfig" ;;
    esac
    pki_kubeconfig "$file" "$SERVER" "$PKI/ca.crt" "$PKI/$who.crt" "$PKI/$who.key" "$who" "datajob-$NAME"
  done
}

write_kwok_config() {
  # The stages are copied in, so a running cluster does not depend on the work tree.
  local f first=1
  : >"$STATE/kwok-stages.yaml"
  for f in node-initialize node-heartbeat-with-lease pod-ready pod-exit pod-terminate pod-delete; do
    ((first)) || echo "---" >>"$STATE/kwok-stages.yaml"
    first=0
    cat "$ROOT/hack/kwok/$f.yaml" >>"$STATE/kwok-stages.yaml"
  done
}

# The audit policy: every write, except those of kwok, the scheduler, the API server and nodes,
# at Metadata level (the controller-manager's stay: hack/bench.sh compares its Job controller) (who, which user agent, what, when, the answer); writes of Leases with their response
# (the holder). Reads are not logged.
write_audit_policy() {
  cat >"$STATE/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    users: ["kwok", "system:kube-scheduler", "system:apiserver"]
  - level: None
    userGroups: ["system:nodes"]
  - level: RequestResponse
    verbs: ["create", "update", "patch", "delete"]
    resources: [{ group: "coordination.k8s.io", resources: ["leases"] }]
  - level: Metadata
    verbs: ["create", "update", "patch", "delete", "deletecollection"]
  - level: None
EOF
}

write_cluster_env() {
  cat >"$STATE/cluster.env" <<EOF
NAME=$NAME
PORT_BASE=$PORT_BASE
SERVER=$SERVER
BIN_ETCD=$BIN_ETCD
BIN_KUBE_APISERVER=$BIN_KUBE_APISERVER
BIN_KUBE_CONTROLLER_MANAGER=$BIN_KUBE_CONTROLLER_MANAGER
BIN_KUBE_SCHEDULER=$BIN_KUBE_SCHEDULER
BIN_KUBECTL=$BIN_KUBECTL
BIN_KWOK=$BIN_KWOK
BIN_HELM=$BIN_HELM
EOF
}

load_cluster_env() {
  [[ -f $STATE/cluster.env ]] || die "cluster '$NAME' is not up (no $STATE); run: hack/cluster.sh --name $NAME up"
  local line
  while IFS= read -r line; do
    [[ $line == BIN_*=* ]] && printf -v "${line%%=*}" '%s' "${line#*=}"
  done <"$STATE/cluster.env"
}

node_manifest() {
  local i=$1 group=a
  ((i >= (NODES + 1) / 2)) && group=b
  cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    datajob.dev/node-group: $group
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
status:
  allocatable:
    cpu: "16"
    memory: 64Gi
    pods: "110"
  capacity:
    cpu: "16"
    memory: 64Gi
    pods: "110"
EOF
}

cmd_up() {
  local t0=$SECONDS c
  trap '(($? == 0)) || log "up failed; logs are in $LOGS; clean up with: hack/cluster.sh --name $NAME down"' EXIT
  command -v openssl >/dev/null || die "openssl is required"
  resolve_binaries || die "could not build or find the control plane's binaries"
  log "binaries ready after $((SECONDS - t0))s"

  mkdir -p "$STATE" "$LOGS" "$PIDS" "$STATE/etcd" "$STATE/certs"
  chmod 700 "$STATE"
  write_pki
  # A running component keeps its configuration: `up` on a running cluster changes nothing.
  live_pid kwok >/dev/null || write_kwok_config
  local any_live=0
  for c in "${COMPONENTS[@]}"; do live_pid "$c" >/dev/null && any_live=1; done
  ((any_live)) || write_cluster_env

  for c in "${COMPONENTS[@]}"; do
    if ! live_pid "$c" >/dev/null; then
      local port
      case $c in
        etcd) port=$ETCD_PORT ;; kube-apiserver) port=$APISERVER_PORT ;;
        kube-controller-manager) port=$KCM_PORT ;; kube-scheduler) port=$SCHEDULER_PORT ;;
        kwok) port=$KWOK_PORT ;;
      esac
      port_in_use "$port" && die "port $port for $c is already in use (another cluster or program?); choose --port-base"
      [[ $c != etcd ]] || ! port_in_use "$ETCD_PEER_PORT" || die "port $ETCD_PEER_PORT for etcd peers is already in use; choose --port-base"
    fi
  done

  start etcd "$BIN_ETCD" \
    --name="datajob-$NAME" \
    --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="datajob-$NAME=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync \
    --quota-backend-bytes=4294967296 \
    --log-level=warn
  wait_until "etcd to accept connections" 30 etcd port_in_use "$ETCD_PORT"

  local audit_args=()
  if ((AUDIT)) || [[ -f $STATE/audit-policy.yaml ]]; then
    write_audit_policy
    audit_args=(--audit-policy-file="$STATE/audit-policy.yaml" --audit-log-path="$STATE/audit.log"
      --audit-log-maxsize=4096 --audit-log-mode=blocking)
  fi
  start kube-apiserver "$BIN_KUBE_APISERVER" \
    "${audit_args[@]}" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --endpoint-reconciler-type=none \
    --secure-port="$APISERVER_PORT" \
    --tls-cert-file="$PKI/apiserver.crt" \
    --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --authorization-mode=Node,RBAC \
    --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --allow-privileged=true \
    --profiling="${DATAJOB_APISERVER_PROFILING:-false}" \
    --cert-dir="$STATE/certs/kube-apiserver"
  wait_until "kube-apiserver /readyz" 120 kube-apiserver kubectl_admin get --raw /readyz

  start kube-controller-manager "$BIN_KUBE_CONTROLLER_MANAGER" \
    --kubeconfig="$STATE/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$KCM_PORT" \
    --cert-dir="$STATE/certs/kube-controller-manager" \
    --leader-elect=false \
    --root-ca-file="$PKI/ca.crt" \
    --service-account-private-key-file="$PKI/sa.key" \
    --use-service-account-credentials=true \
    --cluster-signing-cert-file="$PKI/ca.crt" \
    --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --kube-api-qps="${DATAJOB_KCM_QPS:-200}" \
    --kube-api-burst="${DATAJOB_KCM_BURST:-400}" \
    --profiling=false
  start kube-scheduler "$BIN_KUBE_SCHEDULER" \
    --kubeconfig="$STATE/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$SCHEDULER_PORT" \
    --cert-dir="$STATE/certs/kube-scheduler" \
    --leader-elect=false \
    --profiling=false
  start kwok "$BIN_KWOK" \
    --kubeconfig="$STATE/kwok.kubeconfig" \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --config="$STATE/kwok-stages.yaml" \
    --node-lease-duration-seconds=40 \
    --cidr=10.244.0.0/16 \
    --server-address="127.0.0.1:$KWOK_PORT"
  wait_until "kube-controller-manager /healthz" 60 kube-controller-manager healthy "https://127.0.0.1:$KCM_PORT/healthz"
  wait_until "kube-scheduler /healthz" 60 kube-scheduler healthy "https://127.0.0.1:$SCHEDULER_PORT/healthz"
  wait_until "kwok to listen" 60 kwok port_in_use "$KWOK_PORT"

  # Fake nodes: only the missing ones are created, so `up` on a running cluster changes nothing.
  local i existing manifest=""
  existing=$(kubectl_admin get nodes -o name)
  for ((i = 0; i < NODES; i++)); do
    grep -qx "node/kwok-node-$i" <<<"$existing" || manifest+=$(node_manifest "$i")$'\n---\n'
  done
  if [[ -n $manifest ]]; then
    log "creating fake nodes"
    kubectl_admin create -f - <<<"$manifest" >/dev/null
  fi
  wait_until "$NODES fake nodes to be Ready" 60 kwok nodes_ready
  # The controller manager works once it has made the default namespace's service account.
  wait_until "the default service account (kube-controller-manager)" 60 kube-controller-manager \
    kubectl_admin get serviceaccount default -n default

  log "cluster '$NAME' is up after $((SECONDS - t0))s: $SERVER, state in $STATE"
  if ((REAL_NODE)); then
    "$ROOT/hack/real-node.sh" --name "$NAME" up
  fi
  cat >&2 <<EOF

Use it with:
  eval "\$(hack/cluster.sh --name $NAME env)"
  kubectl get nodes

Admin kubeconfig:  $STATE/kubeconfig
alice / bob:       $STATE/kubeconfig-alice, $STATE/kubeconfig-bob (bound to no role)
Logs:              $LOGS/
Stop it with:      hack/cluster.sh --name $NAME down
EOF
}

# Ready and untainted (the node lifecycle controller removes its not-ready taint shortly after).
nodes_ready() {
  local ready
  ready=$(kubectl_admin get nodes -l type=kwok \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}/{.spec.taints}{"\n"}{end}' | grep -cx 'True/')
  ((ready >= NODES))
}

# --- env, status, down --------------------------------------------------------------------

cmd_env() {
  load_cluster_env
  local dirs="" b d
  for b in "$BIN_KUBECTL" "$BIN_HELM" "$BIN_KWOK" "$BIN_ETCD"; do
    d=$(dirname "$b")
    [[ ":$dirs:" == *":$d:"* ]] || dirs+="${dirs:+:}$d"
  done
  printf 'export KUBECONFIG=%q\n' "$STATE/kubeconfig"
  printf 'export DATAJOB_KUBECONFIG_ALICE=%q\n' "$STATE/kubeconfig-alice"
  printf 'export DATAJOB_KUBECONFIG_BOB=%q\n' "$STATE/kubeconfig-bob"
  printf 'export DATAJOB_KUBECTL=%q\n' "$BIN_KUBECTL"
  printf 'export DATAJOB_CLUSTER=%q\n' "$NAME"
  [[ ! -f $STATE/audit-policy.yaml ]] || printf 'export DATAJOB_AUDIT_LOG=%q\n' "$STATE/audit.log"
  # shellcheck disable=SC2016 # $PATH is expanded by the shell that evaluates this line
  printf 'export PATH=%q:"$PATH"\n' "$dirs"
}

cmd_status() {
  load_cluster_env
  echo "cluster $NAME: $SERVER (state $STATE)"
  local c pid health url rc=0
  for c in "${COMPONENTS[@]}"; do
    case $c in
      etcd) url="" ;;
      kube-apiserver) url="https://127.0.0.1:$APISERVER_PORT/readyz" ;;
      kube-controller-manager) url="https://127.0.0.1:$KCM_PORT/healthz" ;;
      kube-scheduler) url="https://127.0.0.1:$SCHEDULER_PORT/healthz" ;;
      kwok) url="http://127.0.0.1:$KWOK_PORT/healthz" ;;
    esac
    if pid=$(live_pid "$c"); then
      health="-"
      if [[ $c == etcd ]]; then
        if port_in_use "$ETCD_PORT"; then health="listening on $ETCD_PORT"; else health="not listening"; rc=1; fi
      elif [[ $c == kube-apiserver ]]; then
        if kubectl_admin get --raw /readyz >/dev/null 2>&1; then health="readyz ok"; else health="readyz failing"; rc=1; fi
      elif healthy "$url"; then
        health="${url##*/} ok"
      else
        health="${url##*/} failing"; rc=1
      fi
      printf '  %-24s pid %-8s %s\n' "$c" "$pid" "$health"
    else
      printf '  %-24s %s\n' "$c" "NOT RUNNING"
      rc=1
    fi
  done
  if live_pid kube-apiserver >/dev/null; then
    kubectl_admin get nodes -L datajob.dev/node-group 2>&1 | sed 's/^/  /'
  fi
  return $rc
}

cmd_down() {
  # The real node first, while the API server can still delete its pods and Node object.
  "$ROOT/hack/real-node.sh" --name "$NAME" down
  if [[ ! -d $STATE ]]; then
    log "cluster '$NAME' is not up (no $STATE)"
    return 0
  fi
  local i
  # Reverse start order: kwok and the controllers first, etcd last. A component that survives
  # SIGKILL stops the script here, so the state folder is kept.
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    stop_recorded "$PIDS/${COMPONENTS[i]}" 15
  done
  rm -rf "$STATE"
  log "cluster '$NAME' is down; removed $STATE"
}

case $CMD in
  up) cmd_up ;;
  env) cmd_env ;;
  status) cmd_status ;;
  down) cmd_down ;;
esac

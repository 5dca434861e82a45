#!/usr/bin/env bash
# The product, end to end, on this machine: a local control plane (built on first use), the
# CRDs, the operator, the sample jobs from examples/, a completion and a cancellation you can
# watch. The cluster and the operator keep running afterwards so you can try things.
#
#   hack/demo.sh [--name NAME] [--port-base PORT]          run the demo (cluster `dev`; after
#                                                          `hack/real-node.sh up`, a real
#                                                          executor container is also run
#                                                          and cancelled)
#   hack/demo.sh [--name NAME] [--port-base PORT] down     stop the operator (by its recorded
#                                                          pid) and the cluster
#
# Environment: DATAJOB_DEMO_CLUSTER (default dev), DATAJOB_DEMO_NAMESPACE (default demo),
# DATAJOB_PORT_BASE (see hack/cluster.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source-path=SCRIPTDIR
source "$ROOT/hack/lib/common.sh"

NAME=${DATAJOB_DEMO_CLUSTER:-dev}
CMD=demo
demo_option() {
  case $1 in
    down) CMD=down; OPTION_ARGS=1 ;;
    -h | --help) usage 15; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
}
parse_options demo_option "$@"
NS=${DATAJOB_DEMO_NAMESPACE:-demo}
cluster_command
STATE=$(state_dir "$NAME")
OPERATOR_RECORD="$STATE/operator"
LOG="$STATE/logs/operator.log"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [[ $CMD == down ]]; then
  stop_recorded "$OPERATOR_RECORD" 5
  "${CLUSTER[@]}" down
  exit 0
fi

say "building the operator"
cargo build --release --bin datajob-operator
OPERATOR="$ROOT/target/release/datajob-operator"

say "starting the local control plane '$NAME' (the first run builds Kubernetes from source)"
"${CLUSTER[@]}" up
eval "$("${CLUSTER[@]}" env)"
kubectl get nodes -L datajob.dev/node-group

say "installing the CRDs (server-side apply of crds/, the output of 'datajob-operator crd')"
kubectl apply --server-side --field-manager=datajob-demo -f crds/datajob-operator.yaml
kubectl wait --for=condition=Established crd/datajobs.datajob.dev crd/computepools.datajob.dev --timeout=60s

say "starting the operator (log: $LOG)"
stop_recorded "$OPERATOR_RECORD" 5
mkdir -p "$(dirname "$LOG")"
spawn_recorded "$OPERATOR_RECORD" "$LOG" "$OPERATOR" \
  --executor-image registry.example/datajob-executor:demo --http-addr 127.0.0.1:0
echo "operator pid $(recorded_pid "$OPERATOR_RECORD")"

say "applying examples/ into namespace $NS"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f examples/computepool-shared.yaml -f examples/computepool-dedicated.yaml
kubectl apply -n "$NS" -f examples/datajob-shared.yaml -f examples/datajob-dedicated.yaml
SHARED=materialize-continuous-presence
DEDICATED=forecast-daily-visits

# Watch the jobs change state while the rest of the demo runs.
kubectl get dj -n "$NS" -w --output-watch-events &
WATCH=$!
trap 'kill $WATCH 2>/dev/null || true' EXIT

kubectl wait -n "$NS" --for=jsonpath='{.status.state}'=running "dj/$SHARED" "dj/$DEDICATED" --timeout=120s
say "executor pods (the dedicated job has a driver and two workers on node group b)"
kubectl get pods -n "$NS" -o wide -L datajob.dev/role,datajob.dev/cluster-type

say "the shared job's driver finishes and writes its result (kwok's annotation-driven exit)"
DRIVER=$(kubectl get pods -n "$NS" -l "datajob.dev/job-name=$SHARED,datajob.dev/role=driver" -o jsonpath='{.items[0].metadata.name}')
# The same result the tests use (tests/support/materialize-result.json).
kubectl annotate pod -n "$NS" "$DRIVER" sim.datajob.dev/exit-code=0 \
  "sim.datajob.dev/message=$(<tests/support/materialize-result.json)"
kubectl wait -n "$NS" --for=jsonpath='{.status.state}'=completed "dj/$SHARED" --timeout=60s
kubectl get dj -n "$NS" "$SHARED" -o jsonpath='{"result: "}{.status.result}{"\n"}'

say "cancelling the dedicated job: pending_cancellation, graceful teardown (5 s), then cancelled"
kubectl patch dj -n "$NS" "$DEDICATED" --type merge -p '{"spec":{"cancel":true,"cancelReason":"demo"}}'
kubectl wait -n "$NS" --for=jsonpath='{.status.state}'=cancelled "dj/$DEDICATED" --timeout=120s
kill $WATCH 2>/dev/null || true

say "events of the cancelled job"
kubectl get events -n "$NS" --field-selector "involvedObject.name=$DEDICATED" \
  --sort-by=.metadata.creationTimestamp -o custom-columns=TIME:.metadata.creationTimestamp,REASON:.reason,MESSAGE:.message
say "executor pods left of the cancelled job: $(kubectl get pods -n "$NS" -l "datajob.dev/job-name=$DEDICATED" --no-headers 2>/dev/null | wc -l)"

# With a real node (hack/real-node.sh --name NAME up), a job runs the reference executor in a
# real container: its log shows the work, then SIGTERM arriving on cancellation.
if "$ROOT/hack/real-node.sh" --name "$NAME" status >/dev/null 2>&1; then
  eval "$("$ROOT/hack/real-node.sh" --name "$NAME" env)"
  say "the real node $DATAJOB_REAL_NODE: the reference executor in a real container"
  kubectl apply -f - <<EOF
apiVersion: datajob.dev/v1alpha1
kind: ComputePool
metadata: { name: real-node }
spec:
  clusterType: shared
  nodeSelector: { datajob.dev/node-kind: real }
  tolerations: [{ key: datajob.dev/node-kind, operator: Equal, value: real, effect: NoSchedule }]
EOF
  kubectl apply -n "$NS" -f - <<EOF
apiVersion: datajob.dev/v1alpha1
kind: DataJob
metadata: { name: real-executor }
spec:
  type: materialize-view
  dataPlane: demo
  computePool: real-node
  input: { nql: "SELECT visits FROM presence", datasetId: 6404 }
  executor:
    image: $DATAJOB_EXECUTOR_IMAGE
    terminationGracePeriodSeconds: 30
    env:
      - { name: EXECUTOR_WORK_SECONDS, value: "600" }
      - { name: EXECUTOR_SHUTDOWN_SECONDS, value: "2" }
EOF
  kubectl wait -n "$NS" --for=jsonpath='{.status.state}'=running dj/real-executor --timeout=120s
  REAL_DRIVER=$(kubectl get dj -n "$NS" real-executor -o jsonpath='{.status.executor}')-driver
  kubectl get pod -n "$NS" "$REAL_DRIVER" -o wide
  kubectl logs -n "$NS" -f "$REAL_DRIVER" &
  LOGS=$!
  sleep 4
  say "cancelling it: the process gets SIGTERM, stops in 2 s, the job is cancelled once the pod is gone"
  started=$SECONDS
  kubectl patch dj -n "$NS" real-executor --type merge -p '{"spec":{"cancel":true,"cancelReason":"demo"}}'
  kubectl wait -n "$NS" --for=jsonpath='{.status.state}'=cancelled dj/real-executor --timeout=120s
  wait "$LOGS" 2>/dev/null || true
  echo "cancel -> cancelled in $((SECONDS - started)) s (grace period 30 s)"
fi

cat <<EOF

The cluster and the operator are still running. Try:
  eval "\$(hack/cluster.sh --name $NAME env)"
  kubectl get dj -n $NS
  kubectl explain datajob.spec
Stop everything with: hack/demo.sh --name $NAME down
EOF

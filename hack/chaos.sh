#!/usr/bin/env bash
# The chaos run: on a fresh local cluster (audit log on), N DataJobs of both cluster types with
# random cancels and random driver exits, while the operator is SIGKILLed and restarted K times,
# the API server is restarted once, etcd is paused once, and for a while two replicas run with
# the leader frozen (SIGSTOP) past its lease, then resumed. A recorder watches every DataJob and
# pod and prints ONE line (tests/chaos/main.rs; docs/chaos.md):
#
#   chaos: jobs=N kills=K leaked_pods=0 stuck_jobs=0 illegal_transitions=0 two_executors=0 cancelled_with_pods=0 stale_leader_writes=0
#
# Exits non-zero unless every number after kills= is 0. The cluster is always brought down; on
# failure its logs and the operators' logs are kept under target/.
#
#   hack/chaos.sh [--jobs N] [--kills K] [--seed S] [--name NAME] [--port-base PORT] [--nodes N]
#
# Defaults: 40 jobs, 3 kills, seed 1, cluster `chaos` with 20 fake nodes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

JOBS=40
KILLS=3
SEED=1
NAME=${DATAJOB_CHAOS_CLUSTER:-chaos}
NODES=20
CLUSTER_ARGS=()
while (($#)); do
  case $1 in
    --jobs) JOBS=${2:?--jobs needs a value}; shift 2 ;;
    --kills) KILLS=${2:?--kills needs a value}; shift 2 ;;
    --seed) SEED=${2:?--seed needs a value}; shift 2 ;;
    --name) NAME=${2:?--name needs a value}; shift 2 ;;
    --port-base) CLUSTER_ARGS+=(--port-base "${2:?--port-base needs a value}"); shift 2 ;;
    --nodes) NODES=${2:?--nodes needs a value}; shift 2 ;;
    -h | --help) sed -n '2,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
for n in "$JOBS" "$KILLS" "$SEED" "$NODES"; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "--jobs, --kills, --seed and --nodes take numbers" >&2; exit 2; }
done
CLUSTER=("$ROOT/hack/cluster.sh" --name "$NAME" "${CLUSTER_ARGS[@]}" --nodes "$NODES")
STATE="${XDG_STATE_HOME:-$HOME/.local/state}/datajob-operator/clusters/$NAME"

stamp() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

finish() {
  local rc=$?
  trap - EXIT INT TERM
  if ((rc != 0)) && [[ -d $STATE/logs ]]; then
    local keep="$ROOT/target/cluster-logs/$NAME"
    { rm -rf "$keep" && mkdir -p "$keep" && cp -r "$STATE/logs/." "$keep/" && cp "$STATE/audit.log" "$keep/" 2>/dev/null; } || true
    stamp "chaos run failed (exit $rc); cluster logs and audit log kept in $keep, operator logs in target/tmp/chaos-logs/seed-$SEED"
  fi
  "${CLUSTER[@]}" down >/dev/null || true
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -d $STATE ]]; then
  stamp "cluster '$NAME' exists from an earlier run; recreating it"
  "${CLUSTER[@]}" down >/dev/null
fi
stamp "building the operator and the chaos run"
cargo test --no-run --test chaos
stamp "starting cluster '$NAME' ($NODES fake nodes, audit log on)"
"${CLUSTER[@]}" --audit up
eval "$("${CLUSTER[@]}" env)"
# How the run restarts the API server after stopping it: `up` starts what is not running.
UP=$(printf '%q ' "${CLUSTER[@]}")up
stamp "chaos: $JOBS jobs, $KILLS kills, seed $SEED"
cargo test --test chaos -- --jobs "$JOBS" --kills "$KILLS" --seed "$SEED" --state "$STATE" --up "$UP"

#!/usr/bin/env bash
# The chaos run: on a fresh local cluster (audit log on), N DataJobs of both cluster types with
# random cancels and random driver exits, while the operator is SIGKILLed and restarted K times,
# the API server is restarted once, etcd is paused once, and for a while two replicas run with
# the leader frozen (SIGSTOP) past its lease, then resumed. A recorder watches every DataJob and
# pod and prints ONE line (tests/chaos/main.rs; docs/chaos.md):
#
#   chaos: jobs=N kills=K leaked_pods=0 stuck_jobs=0 illegal_transitions=0 two_executors=0 cancelled_with_pods=0 stale_leader_writes=0
#
# Exits non-zero unless every number after kills= is 0 and no result was lost (a driver pod
# deleted after it reported; docs/chaos.md). The cluster is always brought down; on
# failure its logs and the operators' logs are kept under target/.
#
#   hack/chaos.sh [--jobs N] [--kills K] [--seed S] [--name NAME] [--port-base PORT] [--nodes N]
#
# Defaults: 40 jobs, 3 kills, seed 1, cluster `chaos` with 20 fake nodes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source-path=SCRIPTDIR
source "$ROOT/hack/lib/common.sh"

JOBS=40
KILLS=3
SEED=1
NAME=${DATAJOB_CHAOS_CLUSTER:-chaos}
NODES=20
chaos_option() {
  OPTION_ARGS=2
  case $1 in
    --jobs) JOBS=${2:?--jobs needs a value} ;;
    --kills) KILLS=${2:?--kills needs a value} ;;
    --seed) SEED=${2:?--seed needs a value} ;;
    --nodes) NODES=${2:?--nodes needs a value} ;;
    -h | --help) usage 16; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
}
parse_options chaos_option "$@"
for n in "$JOBS" "$KILLS" "$SEED" "$NODES"; do
  [[ $n =~ ^[0-9]+$ ]] || { echo "--jobs, --kills, --seed and --nodes take numbers" >&2; exit 2; }
done
cluster_command --nodes "$NODES"
STATE=$(state_dir "$NAME")

finish() {
  local rc=$?
  trap - EXIT INT TERM
  if ((rc != 0)) && [[ -d $STATE/logs ]]; then
    local keep="$ROOT/target/cluster-logs/$NAME"
    { rm -rf "$keep" && mkdir -p "$keep" && cp -r "$STATE/logs/." "$keep/" && cp "$STATE/audit.log" "$keep/" 2>/dev/null; } || true
    log "chaos run failed (exit $rc); cluster logs and audit log kept in $keep, operator logs in target/tmp/chaos-logs/seed-$SEED"
  fi
  "${CLUSTER[@]}" down >/dev/null || true
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -d $STATE ]]; then
  log "cluster '$NAME' exists from an earlier run; recreating it"
  "${CLUSTER[@]}" down >/dev/null
fi
log "building the operator and the chaos run"
cargo test --no-run --test chaos
log "starting cluster '$NAME' ($NODES fake nodes, audit log on)"
"${CLUSTER[@]}" --audit up
eval "$("${CLUSTER[@]}" env)"
# How the run restarts the API server after stopping it: `up` starts what is not running.
UP=$(printf '%q ' "${CLUSTER[@]}")up
log "chaos: $JOBS jobs, $KILLS kills, seed $SEED"
cargo test --test chaos -- --jobs "$JOBS" --kills "$KILLS" --seed "$SEED" --state "$STATE" --up "$UP"

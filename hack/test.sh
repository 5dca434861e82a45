#!/usr/bin/env bash
# The project's test command: brings up a local control plane (cluster `ci` unless --name or
# $DATAJOB_TEST_CLUSTER says otherwise; built first when needed), runs
# `cargo test --lib --bins --tests` (unit tests and the tests against the cluster; the benchmark
# is hack/bench.sh's) with KUBECONFIG and the alice/bob kubeconfigs exported, and always brings
# the cluster down again. Exits non-zero on any failure. It also adds the real node
# (hack/real-node.sh: kubelet, containerd, the project's images; needs root) for
# tests/real_node (when they run: all tests, or arguments naming real_node), and takes it down
# again; --no-real-node leaves it out.
# Arguments after -- replace `--lib --bins --tests`.
#
#   hack/test.sh [--name NAME] [--port-base PORT] [--no-real-node] [-- CARGO_TEST_ARGS...]
#
# Examples: hack/test.sh
#           hack/test.sh -- --test smoke          (only tests/smoke.rs)
#           hack/test.sh -- --test smoke -- --nocapture
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

NAME=${DATAJOB_TEST_CLUSTER:-ci}
CLUSTER_ARGS=()
CARGO_ARGS=()
REAL_NODE=1
while (($#)); do
  case $1 in
    --name) NAME=${2:?--name needs a value}; shift 2 ;;
    --name=*) NAME=${1#*=}; shift ;;
    --port-base) CLUSTER_ARGS+=(--port-base "${2:?--port-base needs a value}"); shift 2 ;;
    --port-base=*) CLUSTER_ARGS+=(--port-base "${1#*=}"); shift ;;
    --) shift; CARGO_ARGS=("$@"); break ;;
    --no-real-node) REAL_NODE=0; shift ;;
    -h | --help) sed -n '2,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown argument: $1 (cargo test arguments go after --)" >&2; exit 2 ;;
  esac
done
CLUSTER=("$ROOT/hack/cluster.sh" --name "$NAME" "${CLUSTER_ARGS[@]}")

stamp() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
TIMINGS=()
phase_start=$SECONDS
phase() { # phase NAME: closes the previous phase's timing
  TIMINGS+=("$(printf '%-28s %5ss' "$1" $((SECONDS - phase_start)))")
  phase_start=$SECONDS
}

STATE="${XDG_STATE_HOME:-$HOME/.local/state}/datajob-operator/clusters/$NAME"
finish() {
  local rc=$?
  trap - EXIT INT TERM
  phase_start=$SECONDS
  if ((rc != 0)) && [[ -d $STATE/logs ]]; then
    # The state folder goes with the cluster: keep its logs for a post-mortem.
    local keep="$ROOT/target/cluster-logs/$NAME"
    { rm -rf "$keep" && mkdir -p "$keep" && cp -r "$STATE/logs/." "$keep/"; } || true
    stamp "tests failed (exit $rc); the cluster's logs are kept in $keep"
    local f
    for f in "$keep"/*.log; do
      [[ -f $f ]] || continue
      echo "----- last lines of $(basename "$f")" >&2
      tail -n 15 "$f" >&2 || true
    done
  fi
  if ((REAL_NODE)); then
    stamp "taking the real node of '$NAME' down"
    "$ROOT/hack/real-node.sh" --name "$NAME" down || { ((rc != 0)) || rc=1; }
  fi
  stamp "bringing cluster '$NAME' down"
  if ! "${CLUSTER[@]}" down; then
    ((rc != 0)) || rc=1
  fi
  phase "cluster down"
  echo >&2
  echo "timings:" >&2
  printf '  %s\n' "${TIMINGS[@]}" >&2
  printf '  %-28s %5ss\n' "total" "$SECONDS" >&2
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A leftover cluster of the same name (an interrupted run) is replaced by a fresh one.
if [[ -d $STATE ]]; then
  stamp "cluster '$NAME' exists from an earlier run; recreating it"
  "${CLUSTER[@]}" down
fi

# The real node is needed by tests/real_node only: a narrower run (`-- --test e2e`) goes without.
if ((${#CARGO_ARGS[@]})) && [[ " ${CARGO_ARGS[*]} " != *real_node* ]]; then
  REAL_NODE=0
fi

# Cargo's own arguments (before a second --) also apply to the build.
BUILD_ARGS=()
for a in "${CARGO_ARGS[@]}"; do
  [[ $a == -- ]] && break
  BUILD_ARGS+=("$a")
done
((${#CARGO_ARGS[@]})) || CARGO_ARGS=(--lib --bins --tests)
((${#BUILD_ARGS[@]})) || BUILD_ARGS=(--lib --bins --tests)
stamp "building the tests"
cargo test --no-run "${BUILD_ARGS[@]}"
phase "cargo build (tests)"

stamp "building (as needed) and starting cluster '$NAME'"
"${CLUSTER[@]}" up
eval "$("${CLUSTER[@]}" env)"
phase "build + cluster up"

if ((REAL_NODE)); then
  stamp "adding the real node (hack/real-node.sh; builds kubelet, containerd and the images if needed)"
  "$ROOT/hack/real-node.sh" --name "$NAME" up
  eval "$("$ROOT/hack/real-node.sh" --name "$NAME" env)"
  phase "real node up (+ builds)"
fi

stamp "running cargo test ${CARGO_ARGS[*]}"
cargo test "${CARGO_ARGS[@]}"
phase "cargo test"

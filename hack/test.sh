#!/usr/bin/env bash
# The project's test command. First the pure tests, which need no cluster (unit tests of the
# library and binaries, and the tests/ files listed in PURE_TESTS below: the state machine and
# its property tests, CRD drift, HTTP endpoints), so a logic error fails in seconds. Then it
# brings up a local control plane (cluster `ci` unless --name or $DATAJOB_TEST_CLUSTER says
# otherwise; built first when needed), runs every other tests/ target with KUBECONFIG and the
# alice/bob kubeconfigs exported, and always brings the cluster down again. Last, a small chaos
# run (hack/chaos.sh, CHAOS_ARGS below) on a fresh cluster. Exits non-zero on any failure; on
# failure the cluster's logs are kept in target/cluster-logs/NAME.
# tests/real_node also needs the real node (hack/real-node.sh: kubelet, containerd, the
# project's images; needs root): it is added after the cluster and taken down with it.
# --no-real-node leaves the node and tests/real_node out.
#
#   hack/test.sh [--name NAME] [--port-base PORT] [--no-real-node] [-- CARGO_TEST_ARGS...]
#
# CARGO_TEST_ARGS replace both phases: they run once, without a cluster when they name only
# pure targets (--lib, --bins, --test of a pure file), else on a fresh cluster (with the real
# node when they may run tests/real_node: `--test real_node`, `--tests`, or no target named).
# Examples: hack/test.sh
#           hack/test.sh -- --test smoke          (only tests/smoke.rs)
#           hack/test.sh -- --test e2e -- --nocapture
#           hack/test.sh -- --test state_machine  (no cluster)
#           hack/test.sh -- --test real_node a_job_on_the_real_node   (cluster + real node)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source-path=SCRIPTDIR
source "$ROOT/hack/lib/common.sh"

# tests/ targets that need no cluster; every other one runs against the cluster, except the
# chaos run (tests/chaos, a tool started by hack/chaos.sh), which runs last in its small
# configuration CHAOS_ARGS on a fresh cluster of the same name and ports.
PURE_TESTS=(state_machine crd_drift http_endpoints tenant_input api_reference operator_binary
  jobs_api_openapi chaos_checks)
CHAOS_ARGS=(--jobs 20 --kills 2 --seed 5)

NAME=${DATAJOB_TEST_CLUSTER:-ci}
CARGO_ARGS=()
REAL_NODE=1
test_option() {
  case $1 in
    --) CARGO_ARGS=("${@:2}"); OPTION_ARGS=$# ;;
    --no-real-node) REAL_NODE=0; OPTION_ARGS=1 ;;
    -h | --help) usage 23; exit 0 ;;
    *) echo "unknown argument: $1 (cargo test arguments go after --)" >&2; exit 2 ;;
  esac
}
parse_options test_option "$@"
cluster_command
STATE=$(state_dir "$NAME")

is_pure() { # is_pure TARGET: a tests/ target in PURE_TESTS
  local t
  for t in "${PURE_TESTS[@]}"; do [[ $1 == "$t" ]] && return 0; done
  return 1
}

# Every tests/ target cargo builds (tests/NAME.rs, tests/NAME/main.rs) that is not pure; the
# real node's tests only with the real node.
CLUSTER_TESTS=()
for f in tests/*.rs tests/*/main.rs; do
  [[ -f $f ]] || continue
  t=${f#tests/}; t=${t%.rs}; t=${t%/main}
  [[ $t == chaos ]] && continue
  is_pure "$t" && continue
  [[ $t == real_node ]] && ((!REAL_NODE)) && continue
  CLUSTER_TESTS+=("$t")
done

# with_flag FLAG ITEMS...: prints "FLAG ITEM" for each item, one word a line.
with_flag() {
  local flag=$1; shift
  local item
  for item in "$@"; do printf '%s\n%s\n' "$flag" "$item"; done
}

TIMINGS=()
phase_start=$SECONDS
phase() { # phase NAME: closes the previous phase's timing
  TIMINGS+=("$(printf '%-28s %5ss' "$1" $((SECONDS - phase_start)))")
  phase_start=$SECONDS
}

CLUSTER_STARTED=0
REAL_NODE_STARTED=0
finish() {
  local rc=$?
  trap - EXIT INT TERM
  phase_start=$SECONDS
  if ((rc != 0)) && [[ -d $STATE/logs ]]; then
    # The state folder goes with the cluster: keep its logs for a post-mortem.
    local keep="$ROOT/target/cluster-logs/$NAME"
    { rm -rf "$keep" && mkdir -p "$keep" && cp -r "$STATE/logs/." "$keep/"; } || true
    log "tests failed (exit $rc); the cluster's logs are kept in $keep"
    local f
    for f in "$keep"/*.log; do
      [[ -f $f ]] || continue
      echo "----- last lines of $(basename "$f")" >&2
      tail -n 15 "$f" >&2 || true
    done
  fi
  if ((REAL_NODE_STARTED)); then
    log "taking the real node of '$NAME' down"
    "$ROOT/hack/real-node.sh" --name "$NAME" down || { ((rc != 0)) || rc=1; }
  fi
  if ((CLUSTER_STARTED)) || [[ -d $STATE ]]; then
    log "bringing cluster '$NAME' down"
    if ! "${CLUSTER[@]}" down; then
      ((rc != 0)) || rc=1
    fi
    phase "cluster down"
  fi
  echo >&2
  echo "timings:" >&2
  printf '  %s\n' "${TIMINGS[@]}" >&2
  printf '  %-28s %5ss\n' "total" "$SECONDS" >&2
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run_cargo_tests PHASE ARGS...: builds, then runs `cargo test ARGS...`, timing both. Cargo's
# own arguments (before a second --) also apply to the build.
run_cargo_tests() {
  local name=$1; shift
  local build=() a
  for a in "$@"; do
    [[ $a == -- ]] && break
    build+=("$a")
  done
  log "building $name: cargo test --no-run ${build[*]}"
  cargo test --no-run "${build[@]}"
  phase "cargo build ($name)"
  log "running $name: cargo test $*"
  cargo test "$@"
  phase "$name"
}

# cluster_up: a fresh cluster (a leftover of the same name, from an interrupted run, is
# replaced), with its environment exported.
cluster_up() {
  if [[ -d $STATE ]]; then
    log "cluster '$NAME' exists from an earlier run; recreating it"
    "${CLUSTER[@]}" down
  fi
  log "building (as needed) and starting cluster '$NAME'"
  CLUSTER_STARTED=1
  "${CLUSTER[@]}" up
  eval "$("${CLUSTER[@]}" env)"
  phase "build + cluster up"
}

# real_node_up: the real node on the cluster (builds kubelet, containerd and the images when
# needed), with its environment exported.
real_node_up() {
  log "adding the real node (hack/real-node.sh; builds kubelet, containerd and the images if needed)"
  REAL_NODE_STARTED=1
  "$ROOT/hack/real-node.sh" --name "$NAME" up
  eval "$("$ROOT/hack/real-node.sh" --name "$NAME" env)"
  phase "real node up (+ builds)"
}

# may_run_real_node ARGS...: the cargo arguments (before a second --) may select tests/real_node.
may_run_real_node() {
  local a expect_test=0 any=0
  for a in "$@"; do
    [[ $a == -- ]] && break
    if ((expect_test)); then
      [[ $a == real_node ]] && return 0
      expect_test=0
      continue
    fi
    case $a in
      --test) expect_test=1; any=1 ;;
      --test=real_node | --tests | --all-targets) return 0 ;;
      --test=* | --lib | --bins | --bin | --bin=* | --doc | --bench* | --example*) any=1 ;;
      *) ;;
    esac
  done
  ((!any)) # no target named: cargo runs them all
}

# only_pure ARGS...: the cargo arguments (before a second --) select only pure targets.
only_pure() {
  local a expect_test=0 any=0
  for a in "$@"; do
    [[ $a == -- ]] && break
    if ((expect_test)); then
      is_pure "$a" || return 1
      expect_test=0
      continue
    fi
    case $a in
      --lib | --bins | --bin | --bin=* | --doc) any=1 ;;
      --test) expect_test=1; any=1 ;;
      --test=*) is_pure "${a#*=}" || return 1; any=1 ;;
      --tests | --all-targets | --benches | --bench | --bench=* | --examples | --example*) return 1 ;;
      *) ;; # other options, their values, test-name filters
    esac
  done
  ((any)) # no target named: cargo runs them all
}

if ((${#CARGO_ARGS[@]})); then
  if only_pure "${CARGO_ARGS[@]}"; then
    run_cargo_tests "pure tests" "${CARGO_ARGS[@]}"
  else
    cluster_up
    if ((REAL_NODE)) && may_run_real_node "${CARGO_ARGS[@]}"; then
      real_node_up
    fi
    run_cargo_tests "tests" "${CARGO_ARGS[@]}"
  fi
  exit 0
fi

mapfile -t pure_args < <(with_flag --test "${PURE_TESTS[@]}")
run_cargo_tests "pure tests" --lib --bins "${pure_args[@]}"
mapfile -t cluster_args < <(with_flag --test "${CLUSTER_TESTS[@]}")
# Built before the cluster starts, so the cluster does not idle through the build.
log "building the cluster tests"
cargo test --no-run "${cluster_args[@]}"
phase "cargo build (cluster tests)"
cluster_up
((!REAL_NODE)) || real_node_up
# --no-fail-fast: one run reports every failing target, not only the first.
log "running the cluster tests: cargo test --no-fail-fast ${cluster_args[*]}"
cargo test --no-fail-fast "${cluster_args[@]}"
phase "cluster tests"
# The cluster tests' cluster goes first (its real node with it: `cluster.sh down` takes it down
# before the API server): the chaos run wants a fresh one with an audit log.
"${CLUSTER[@]}" down
CLUSTER_STARTED=0
REAL_NODE_STARTED=0
phase "cluster down"
log "chaos run: hack/chaos.sh ${CHAOS_ARGS[*]}"
chaos=("$ROOT/hack/chaos.sh" --name "$NAME" "${CHAOS_ARGS[@]}")
[[ -z ${PORT_BASE:-} ]] || chaos+=(--port-base "$PORT_BASE")
"${chaos[@]}"
phase "chaos run (small)"

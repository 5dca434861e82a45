#!/usr/bin/env bash
# Scale benchmark: brings up a local control plane (cluster `bench`), builds the operator in
# release mode, runs benches/scale.rs (N DataJobs created, run and cancelled at once; a table of
# medians, p95, throughput, peak memory and ratios against the first size), and always brings the
# cluster down.
#
#   hack/bench.sh [--name NAME] [--port-base PORT] [--sizes 100,1000]
#
# DATAJOB_BENCH_CLUSTER names the cluster too; DATAJOB_BENCH_NODES fake nodes (default 30).
# Other arguments go to benches/scale.rs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source-path=SCRIPTDIR
source "$ROOT/hack/lib/common.sh"

NAME=${DATAJOB_BENCH_CLUSTER:-bench}
BENCH_ARGS=()
bench_option() {
  case $1 in
    -h | --help) usage 10; exit 0 ;;
    *) BENCH_ARGS+=("$1"); OPTION_ARGS=1 ;;
  esac
}
parse_options bench_option "$@"
# Each fake node takes 110 pods: enough nodes for the largest size's executor pods.
cluster_command --nodes "${DATAJOB_BENCH_NODES:-30}"
trap '"${CLUSTER[@]}" down >/dev/null' EXIT
log "building the operator (release) and the benchmark"
cargo build --release --bin datajob-operator
cargo bench --no-run --bench scale
log "starting cluster '$NAME'"
"${CLUSTER[@]}" up >/dev/null
eval "$("${CLUSTER[@]}" env)"
cargo bench --bench scale -- --operator "$ROOT/target/release/datajob-operator" "${BENCH_ARGS[@]}"

#!/usr/bin/env bash
# Scale benchmark: brings up a local control plane (cluster `bench`), builds the operator in
# release mode, runs benches/scale.rs (N DataJobs created, run and cancelled at once; a table of
# medians, p95, throughput, peak memory and ratios against the first size), and always brings the
# cluster down.
#
#   hack/bench.sh [--name NAME] [--port-base PORT] [--sizes 100,1000]
#   hack/bench.sh [--name NAME] [--port-base PORT] --side-by-side [--sizes 300,1000] [--runs 3] [--dedicated 20x32] [--request-cost 10]
#
# --side-by-side runs benches/versus.rs instead: batch/v1 Jobs against DataJobs on the same
# cluster (stream, cancel storm, backlog; dedicated start and stop; with --request-cost, what
# one write of each costs the API server), with ratios. The API server keeps an audit log of
# writes (hack/cluster.sh --audit), from which both benchmarks count writes per job. It also
# writes the medians to target/bench/versus.csv (or --csv FILE) and draws them beside it
# (target/bench/versus.png).
# DATAJOB_BENCH_CLUSTER names the cluster too; DATAJOB_BENCH_NODES fake nodes (default 30).
# Other arguments go to the benchmark.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source-path=SCRIPTDIR
source "$ROOT/hack/lib/common.sh"

NAME=${DATAJOB_BENCH_CLUSTER:-bench}
BENCH=scale
BENCH_ARGS=()
bench_option() {
  case $1 in
    -h | --help) usage 17; exit 0 ;;
    --side-by-side) BENCH=versus; OPTION_ARGS=1 ;;
    *) BENCH_ARGS+=("$1"); OPTION_ARGS=1 ;;
  esac
}
parse_options bench_option "$@"
# Each fake node takes 110 pods: enough nodes for the largest size's executor pods.
cluster_command --nodes "${DATAJOB_BENCH_NODES:-30}" --audit
trap '"${CLUSTER[@]}" down >/dev/null' EXIT
log "building the operator (release) and the benchmark"
cargo build --release --bin datajob-operator
cargo bench --no-run --bench "$BENCH"
log "starting cluster '$NAME'"
"${CLUSTER[@]}" up >/dev/null
eval "$("${CLUSTER[@]}" env)"
# The side-by-side medians' CSV (--csv, else target/bench/versus.csv), written anew by this run
# unless it runs no scenario with N objects (only --request-cost).
csv=target/bench/versus.csv
for ((i = 0; i + 1 < ${#BENCH_ARGS[@]}; i++)); do
  [[ ${BENCH_ARGS[i]} == --csv ]] && csv=${BENCH_ARGS[i + 1]}
done
[[ $BENCH == versus ]] && rm -f "$csv"
cargo bench --bench "$BENCH" -- --operator "$ROOT/target/release/datajob-operator" "${BENCH_ARGS[@]}"
if [[ $BENCH == versus && -f $csv ]]; then
  # The medians as a PNG beside the CSV (matplotlib from a venv: hack/plot-bench.sh).
  png=${csv%.csv}.png
  if hack/plot-bench.sh "$csv" "$png" "Jobs and DataJobs side by side ($(date -u +%F), $(git rev-parse --short HEAD))"; then
    log "plot: $png (medians: $csv)"
  else
    log "no plot (hack/plot-bench.sh failed); the medians are in $csv"
  fi
fi

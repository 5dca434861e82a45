#!/usr/bin/env bash
# Scale benchmark: brings up a local control plane (cluster `bench`), builds the operator in
# release mode, runs benches/scale.rs (N DataJobs created, run and cancelled at once; a table of
# medians, p95, throughput, peak memory and ratios against the first size), and always brings the
# cluster down.
#
#   hack/bench.sh [--sizes 100,1000]      (DATAJOB_BENCH_NODES fake nodes, default 30)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
NAME=${DATAJOB_BENCH_CLUSTER:-bench}
# Each fake node takes 110 pods: enough nodes for the largest size's executor pods.
NODES=${DATAJOB_BENCH_NODES:-30}
CLUSTER=("$ROOT/hack/cluster.sh" --name "$NAME" --nodes "$NODES")
trap '"${CLUSTER[@]}" down >/dev/null' EXIT
cargo build --release --bin datajob-operator
cargo bench --no-run --bench scale
"${CLUSTER[@]}" up >/dev/null
eval "$("${CLUSTER[@]}" env)"
cargo bench --bench scale -- --operator "$ROOT/target/release/datajob-operator" "$@"

#!/usr/bin/env bash
# Draws the side-by-side benchmark's CSV (hack/bench.sh --side-by-side writes it) as a PNG,
# with matplotlib from a virtualenv made on first use under ~/.cache/datajob-operator (needs
# python3 with venv, and PyPI reachable the first time).
#
#   hack/plot-bench.sh target/bench/versus.csv docs/benchmarks.png ["title"]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR
source "$ROOT/hack/lib/common.sh"
VERSION=3.9.2
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/datajob-operator/plot-matplotlib-$VERSION"
python_venv "$VENV" "matplotlib==$VERSION"
exec "$VENV/bin/python" "$ROOT/hack/plot-bench.py" "$@"

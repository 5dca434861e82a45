#!/usr/bin/env bash
# Draws the side-by-side benchmark's CSV (hack/bench.sh --side-by-side writes it) as a PNG,
# with matplotlib from a virtualenv made on first use under ~/.cache/datajob-operator (needs
# python3 with venv, and PyPI reachable the first time).
#
#   hack/plot-bench.sh target/bench/versus.csv docs/benchmarks.png ["title"]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=3.9.2
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/datajob-operator/plot-matplotlib-$VERSION"

# A venv counts once the install finished (the stamp); an interrupted one is made again.
if [[ ! -f $VENV/.installed ]]; then
  command -v python3 >/dev/null || { echo "plotting needs python3 (with the venv module)" >&2; exit 1; }
  echo "installing matplotlib $VERSION into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "matplotlib==$VERSION"
  touch "$VENV/.installed"
fi
exec "$VENV/bin/python" "$ROOT/hack/plot-bench.py" "$@"

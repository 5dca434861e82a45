#!/usr/bin/env bash
# Runs schemathesis (https://schemathesis.readthedocs.io), pinned, from a virtualenv it creates
# on first use under ~/.cache/datajob-operator (needs python3 with venv, and PyPI reachable the
# first time). Arguments go to `st`; the checks' settings for the Jobs API are in
# hack/schemathesis.toml.
#
#   hack/schemathesis.sh run http://127.0.0.1:8088/v1/openapi.json -H "Authorization: Bearer $TOKEN"
#   hack/schemathesis.sh --install-only
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR
source "$ROOT/hack/lib/common.sh"
VERSION=4.32.5
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/datajob-operator/schemathesis-$VERSION"
python_venv "$VENV" "schemathesis==$VERSION"
[[ ${1:-} == --install-only ]] && exit 0
exec "$VENV/bin/st" --config-file "$ROOT/hack/schemathesis.toml" "$@"

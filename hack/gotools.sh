#!/usr/bin/env bash
# Prints the path of a Go test helper from hack/gotools/ (kstatus, luahealth), building all of
# them first when the cache has no build of the current sources. Builds are cached in
# $DATAJOB_CACHE/bin/gotools-<hash of hack/gotools>, like the control plane's binaries, so
# only the first call after a change compiles (about a minute on a cold Go cache).
#
#   hack/gotools.sh kstatus      # -> ~/.cache/datajob-operator/bin/gotools-1a2b3c4d5e6f/kstatus
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/common.sh
source "$ROOT/hack/lib/common.sh"
# shellcheck source=lib/versions.sh
source "$ROOT/hack/lib/versions.sh"
# shellcheck source=lib/build.sh
source "$ROOT/hack/lib/build.sh"

name=${1:?usage: hack/gotools.sh kstatus|luahealth}
src="$ROOT/hack/gotools"
[[ -d $src/$name ]] || { log "no Go helper $name in $src"; exit 2; }
hash=$(cd "$src" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 |
  sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
out="$DATAJOB_CACHE/bin/gotools-$hash"
if [[ ! -x $out/$name ]]; then
  require_go
  started=$SECONDS
  log "building the Go test helpers (hack/gotools) into $out"
  tmp="$out.tmp.$$"
  rm -rf "$tmp" && mkdir -p "$tmp"
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$tmp/" ./...)
  # Another caller may have finished first: keep whichever build landed.
  mv -T "$tmp" "$out" 2>/dev/null || rm -rf "$tmp"
  log "built the Go test helpers in $((SECONDS - started))s"
fi
echo "$out/$name"

# Builds what a real node needs, from Go modules, into versioned folders of the same cache as the
# control plane's binaries: kubelet (the cluster's Kubernetes release), containerd + ctr +
# containerd-shim-runc-v2, the CNI plugins (bridge, host-local, loopback), and this repository's
# own Go tools (hack/image-builder: the OCI image writer, the pause program, the API forwarder).
# runc comes from Debian (`apt-get install runc`). Sourced after hack/lib/versions.sh and
# hack/lib/build.sh; every function skips what is already built and prints progress.
# shellcheck shell=bash

CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.4.2}"
CNI_PLUGINS_VERSION="${CNI_PLUGINS_VERSION:-v1.10.0}"

containerd_bin_dir() { echo "$DATAJOB_CACHE/bin/containerd-$CONTAINERD_VERSION"; }
cni_bin_dir() { echo "$DATAJOB_CACHE/bin/cni-plugins-$CNI_PLUGINS_VERSION"; }

# go_build_wrapped NAME MODULE VERSION OUT TAGS LDFLAGS PACKAGE...: one `go build` of PACKAGEs of
# MODULE@VERSION from a wrapper module (so the module's own go.mod, not ours, picks the
# dependencies), into OUT (replaced only when the build succeeded).
go_build_wrapped() {
  local name=$1 module=$2 version=$3 out=$4 tags=$5 ldflags=$6
  shift 6
  require_go || return 1
  local started=$SECONDS src="$DATAJOB_CACHE/src/$name-$version" gomod go_line
  log "building $name $version ($*)"
  gomod=$(GOFLAGS=-mod=mod go mod download -json "$module@$version" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  [[ -f $gomod ]] || { log "cannot download $module@$version"; return 1; }
  go_line=$(grep -m1 '^go ' "$gomod")
  write_wrapper_module "$src" "$module" "$version" "" "$go_line"
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  ticker_start "$name $version"
  local rc=0
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -tags "$tags" \
    -ldflags "-s -w $ldflags" -o "$out.tmp/" "$@") || rc=$?
  ticker_stop
  ((rc == 0)) || { log "building $name $version failed (exit $rc)"; return "$rc"; }
  rm -rf "$out" && mv "$out.tmp" "$out"
  log "built $name $version in $((SECONDS - started))s"
}

build_containerd() {
  local out; out=$(containerd_bin_dir)
  [[ -x $out/containerd && -x $out/ctr && -x $out/containerd-shim-runc-v2 ]] && return 0
  local m=github.com/containerd/containerd/v2
  # Storage drivers that need cgo or kernel features the node does not use are left out.
  go_build_wrapped containerd "$m" "$CONTAINERD_VERSION" "$out" "no_btrfs no_devmapper no_zfs" \
    "-X $m/version.Version=${CONTAINERD_VERSION#v} -X $m/version.Package=$m" \
    "$m/cmd/containerd" "$m/cmd/ctr" "$m/cmd/containerd-shim-runc-v2"
}

build_cni_plugins() {
  local out; out=$(cni_bin_dir)
  [[ -x $out/bridge && -x $out/host-local && -x $out/loopback ]] && return 0
  local m=github.com/containernetworking/plugins
  go_build_wrapped cni-plugins "$m" "$CNI_PLUGINS_VERSION" "$out" "" \
    "-X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
    "$m/plugins/main/bridge" "$m/plugins/ipam/host-local" "$m/plugins/main/loopback"
}

build_kubelet() { build_kubernetes kubelet; }

# The folder of this tree's Go tools, keyed by a hash of their sources (a change rebuilds them).
node_tools_dir() {
  local hash
  hash=$(cd "$ROOT/hack/image-builder" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 |
    LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
  echo "$DATAJOB_CACHE/bin/node-tools-$hash"
}

# image-builder (OCI archives), pause (the sandbox program) and apiserver-forward (the API
# server at the service IP for pods), from hack/image-builder (standard library only).
build_node_tools() {
  local out; out=$(node_tools_dir)
  [[ -x $out/image-builder && -x $out/pause && -x $out/apiserver-forward ]] && return 0
  require_go || return 1
  local started=$SECONDS
  log "building hack/image-builder (image-builder, pause, apiserver-forward)"
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  local rc=0
  (cd "$ROOT/hack/image-builder" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out.tmp/" \
    . ./cmd/pause ./cmd/apiserver-forward) || rc=$?
  ((rc == 0)) || { log "building hack/image-builder failed (exit $rc)"; return "$rc"; }
  rm -rf "$out" && mv "$out.tmp" "$out"
  log "built hack/image-builder in $((SECONDS - started))s"
}

# Builds everything the real node needs (not runc: apt-get install runc).
build_node() {
  build_node_tools && build_cni_plugins && build_containerd && build_kubelet
}

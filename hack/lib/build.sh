# Builds the control plane's binaries from their Go modules into a versioned cache folder, or
# takes them from envtest-style overrides. Sourced by hack/cluster.sh; every function is
# idempotent and skips what is already built.
# shellcheck shell=bash

# Logs with log() of hack/lib/common.sh, which the caller sources first.

# Directory holding kube-apiserver, kube-controller-manager, kube-scheduler and kubectl.
k8s_bin_dir() { echo "$DATAJOB_CACHE/bin/kubernetes-$K8S_VERSION"; }
etcd_bin_dir() { echo "$DATAJOB_CACHE/bin/etcd-$ETCD_VERSION"; }
kwok_bin_dir() { echo "$DATAJOB_CACHE/bin/kwok-$KWOK_VERSION"; }
helm_bin_dir() { echo "$DATAJOB_CACHE/bin/helm-$HELM_VERSION"; }

# Prints "still building NAME (Ns)" every minute while a long build runs, so a CI log does not
# look hung. Usage: ticker_start NAME; ...; ticker_stop.
_TICKER_PID=""
ticker_start() {
  local name=$1 started=$SECONDS
  ( while sleep 60; do log "still building $name ($((SECONDS - started))s elapsed)"; done ) &
  _TICKER_PID=$!
}
ticker_stop() {
  if [[ -n $_TICKER_PID ]]; then
    kill "$_TICKER_PID" 2>/dev/null || true
    wait "$_TICKER_PID" 2>/dev/null || true
    _TICKER_PID=""
  fi
}

# Building needs Go (1.26 or newer for kwok v0.8.0 and Kubernetes 1.37); prebuilt binaries do not.
require_go() {
  if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then
    PATH="$PATH:/usr/local/go/bin"
  fi
  command -v go >/dev/null && return 0
  log "go is required to build the control plane's binaries (or point KUBEBUILDER_ASSETS / TEST_ASSET_* at prebuilt ones)"
  return 1
}

# Writes a wrapper module into $1 that requires $2@$3 plus the given extra go.mod lines.
write_wrapper_module() {
  local dir=$1 module=$2 version=$3 extra=$4 go_line=$5
  mkdir -p "$dir"
  {
    echo "module datajob.dev/hack/build-$(basename "$dir")"
    echo
    echo "$go_line"
    echo
    echo "require $module $version"
    echo
    printf '%s\n' "$extra"
  } >"$dir/go.mod"
}

# build_kubernetes [COMMAND...]: builds the given commands of k8s.io/kubernetes (default: all four
# the cluster uses) that are not in the cache yet, in one `go build`.
build_kubernetes() {
  local out; out=$(k8s_bin_dir)
  local wanted=("$@") missing=() c
  ((${#wanted[@]})) || wanted=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  for c in "${wanted[@]}"; do [[ -x $out/$c ]] || missing+=("$c"); done
  ((${#missing[@]})) || return 0
  require_go || return 1
  local started=$SECONDS src="$DATAJOB_CACHE/src/kubernetes-$K8S_VERSION"
  log "building kubernetes $K8S_VERSION (${missing[*]}) (cold: about 5 minutes on 2 cores; warm Go cache: under a minute)"
  local gomod
  gomod=$(go list -m -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  [[ -f $gomod ]] || { log "cannot find go.mod of k8s.io/kubernetes@$K8S_VERSION"; return 1; }
  # The release requires every staging module at v0.0.0 and replaces it with a local path;
  # Go ignores a dependency's replaces, so the wrapper points each at its published tag.
  local staging_version="v0.${K8S_VERSION#v1.}"
  local replaces go_line godebug
  replaces=$(awk '/^\t(k8s\.io|sigs\.k8s\.io)\/[^ ]+ v0\.0\.0$/ {print $1}' "$gomod" | sort -u |
    while read -r m; do echo "replace $m => $m $staging_version"; done)
  go_line=$(grep -m1 '^go ' "$gomod")
  godebug=$(grep '^godebug ' "$gomod" | sort -u)
  write_wrapper_module "$src" k8s.io/kubernetes "$K8S_VERSION" "$godebug
$replaces" "$go_line"
  local ldflags="" pkg
  local major=1 minor; minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  local pkgs=()
  for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  rm -rf "$out.tmp" && mkdir -p "$out.tmp" "$out"
  ticker_start "kubernetes $K8S_VERSION"
  local rc=0
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w $ldflags" -o "$out.tmp/" "${pkgs[@]}") || rc=$?
  ticker_stop
  ((rc == 0)) || { log "building kubernetes $K8S_VERSION failed (exit $rc)"; return "$rc"; }
  for c in "${missing[@]}"; do mv "$out.tmp/$c" "$out/$c"; done
  rm -rf "$out.tmp"
  log "built kubernetes $K8S_VERSION (${missing[*]}) in $((SECONDS - started))s"
}

build_etcd() {
  local out; out=$(etcd_bin_dir)
  [[ -x $out/etcd ]] && return 0
  require_go || return 1
  local started=$SECONDS src="$DATAJOB_CACHE/src/etcd-$ETCD_VERSION"
  log "building etcd $ETCD_VERSION"
  # etcd's server module has replace directives, so `go install` refuses it; a wrapper builds it.
  write_wrapper_module "$src" go.etcd.io/etcd/server/v3 "$ETCD_VERSION" "" "go 1.26"
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  ticker_start "etcd $ETCD_VERSION"
  local rc=0
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3) || rc=$?
  ticker_stop
  ((rc == 0)) || { log "building etcd $ETCD_VERSION failed (exit $rc)"; return "$rc"; }
  rm -rf "$out" && mv "$out.tmp" "$out"
  log "built etcd $ETCD_VERSION in $((SECONDS - started))s"
}

# go install into a versioned folder; $1 name, $2 package@version, $3 output dir.
go_install_into() {
  local name=$1 pkg=$2 out=$3
  [[ -x $out/$name ]] && return 0
  require_go || return 1
  local started=$SECONDS
  log "building $name ($pkg)"
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  ticker_start "$name"
  local rc=0
  CGO_ENABLED=0 GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w" "$pkg" || rc=$?
  ticker_stop
  ((rc == 0)) || { log "building $name failed (exit $rc)"; return "$rc"; }
  rm -rf "$out" && mv "$out.tmp" "$out"
  log "built $name in $((SECONDS - started))s"
}

build_kwok() { go_install_into kwok "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "$(kwok_bin_dir)"; }
build_helm() { go_install_into helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" "$(helm_bin_dir)"; }

build_all() {
  build_etcd && build_kwok && build_helm && build_kubernetes
}

# --- envtest-style overrides --------------------------------------------------------------
#
# A binary is taken, in this order, from:
#   1. TEST_ASSET_<NAME> (full path), e.g. TEST_ASSET_KUBE_APISERVER=/opt/k8s/kube-apiserver;
#   2. $KUBEBUILDER_ASSETS/<name> when KUBEBUILDER_ASSETS is set and holds that file;
#   3. the versioned cache folder, built there first when missing.
# NAME is the binary's name upper-cased with '-' as '_': ETCD, KUBE_APISERVER,
# KUBE_CONTROLLER_MANAGER, KUBE_SCHEDULER, KUBECTL, KWOK, HELM.

# Prints the override path for binary $1, or nothing. Fails when an override is set but unusable.
binary_override() {
  local name=$1 var
  var="TEST_ASSET_$(echo "$name" | tr 'a-z-' 'A-Z_')"
  if [[ -n ${!var:-} ]]; then
    [[ -x ${!var} ]] || { log "$var=${!var} is not an executable file"; return 1; }
    echo "${!var}"
    return 0
  fi
  if [[ -n ${KUBEBUILDER_ASSETS:-} && -x $KUBEBUILDER_ASSETS/$name ]]; then
    echo "$KUBEBUILDER_ASSETS/$name"
  fi
}

# resolve_binaries: builds what is missing and sets BIN_ETCD, BIN_KUBE_APISERVER,
# BIN_KUBE_CONTROLLER_MANAGER, BIN_KUBE_SCHEDULER, BIN_KUBECTL, BIN_KWOK, BIN_HELM.
resolve_binaries() {
  local name var path k8s_missing=()
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok helm; do
    var="BIN_$(echo "$name" | tr 'a-z-' 'A-Z_')"
    path=$(binary_override "$name") || return 1
    if [[ -n $path ]]; then
      printf -v "$var" '%s' "$path"
      continue
    fi
    case $name in
      etcd) build_etcd || return 1; path="$(etcd_bin_dir)/etcd" ;;
      kwok) build_kwok || return 1; path="$(kwok_bin_dir)/kwok" ;;
      helm) build_helm || return 1; path="$(helm_bin_dir)/helm" ;;
      *) k8s_missing+=("$name"); path="$(k8s_bin_dir)/$name" ;;
    esac
    printf -v "$var" '%s' "$path"
  done
  if ((${#k8s_missing[@]})); then
    build_kubernetes "${k8s_missing[@]}" || return 1
  fi
}

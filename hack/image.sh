#!/usr/bin/env bash
# Builds the project's container images without a container daemon, as OCI image-layout
# archives: datajob-operator (the operator) and datajob-executor (the reference executor).
#
#   hack/image.sh [--out DIR] [--tag TAG] [--registry PREFIX]
#
#   --out DIR          where the archives go (default target/images)
#   --tag TAG          image tag (default: the crate version from Cargo.toml; never "latest")
#   --registry PREFIX  repository prefix (default ghcr.io/datajob-dev, what the chart names)
#
# Each image holds one static binary (Rust's gnu target linked with +crt-static, so no shared
# library is needed), /etc/passwd and /etc/group naming the non-root user 65532, and /tmp:
# no shell, no package manager. It runs as 65532:65532 and carries the OCI labels
# org.opencontainers.image.{source,revision,version,created,title,description,licenses}.
# Reproducible: the timestamps are the commit's time, entries are sorted, paths are remapped
# out of the binaries, so the same commit gives the same digests (docs/images.md).
#
# Output: DIR/<image>-<tag>.oci.tar and DIR/images.env (names and digests, for scripts); the
# digests are printed. Load into containerd with `ctr -n k8s.io images import FILE`
# (hack/real-node.sh does).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
source "$ROOT/hack/lib/common.sh"
source "$ROOT/hack/lib/versions.sh"
source "$ROOT/hack/lib/build.sh"
source "$ROOT/hack/lib/node-build.sh"

OUT="$ROOT/target/images"
TAG=""
REGISTRY="${DATAJOB_IMAGE_REGISTRY:-ghcr.io/datajob-dev}"
image_option() {
  OPTION_ARGS=2
  case $1 in
    --out) OUT=${2:?--out needs a value} ;;
    --tag) TAG=${2:?--tag needs a value} ;;
    --registry) REGISTRY=${2:?--registry needs a value} ;;
    --out=*) OUT=${1#*=}; OPTION_ARGS=1 ;;
    --tag=*) TAG=${1#*=}; OPTION_ARGS=1 ;;
    --registry=*) REGISTRY=${1#*=}; OPTION_ARGS=1 ;;
    -h | --help) usage 20; exit 0 ;;
    *) log "unknown argument: $1"; exit 2 ;;
  esac
}
# (--name and --port-base, which every hack/ script takes, do not matter here.)
parse_options image_option "$@"

VERSION=$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
[[ -n $VERSION ]] || die "cannot read the crate version from Cargo.toml"
TAG=${TAG:-$VERSION}
[[ $TAG != latest ]] || { log "refusing the tag 'latest' (it makes kubelets pull)"; exit 2; }
[[ $TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || { log "bad tag '$TAG'"; exit 2; }

REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [[ $REVISION != unknown && -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
  REVISION="$REVISION-dirty"
fi
EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
SOURCE=${DATAJOB_IMAGE_SOURCE:-$(git remote get-url origin 2>/dev/null || echo https://github.com/datajob-dev/datajob-operator)}
CREATED=$(date -u -d "@$EPOCH" +%FT%TZ)
TARGET=x86_64-unknown-linux-gnu
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
CARGO_HOME_DIR=${CARGO_HOME:-$HOME/.cargo}

started=$SECONDS
build_node_tools
IMAGE_BUILDER="$(node_tools_dir)/image-builder"

# Static glibc binaries: rustup has no musl target here, and the gnu target with +crt-static
# links libc, libm, libpthread and libgcc_s statically (libc6-dev ships the .a files), so the
# image needs no /lib at all. --target keeps build scripts and proc macros dynamic.
# --remap-path-prefix keeps the checkout's and cargo's paths out of panic messages, so
# clones in different folders build the same bytes.
log "building datajob-operator and datajob-executor (profile image, $TARGET, static)"
cargo_started=$SECONDS
RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$ROOT=/build --remap-path-prefix=$CARGO_HOME_DIR=/cargo" \
  cargo build --locked --profile image --target "$TARGET" --bin datajob-operator --bin datajob-executor
log "cargo build took $((SECONDS - cargo_started))s"
BIN_DIR="$TARGET_DIR/$TARGET/image"
for bin in datajob-operator datajob-executor; do
  # A static(-pie) binary names no shared library ("statically linked" / "not a dynamic executable").
  if ldd "$BIN_DIR/$bin" 2>&1 | grep -q '=>'; then
    die "$BIN_DIR/$bin is dynamically linked; expected a static binary"
  fi
done

mkdir -p "$OUT"
: >"$OUT/images.env.tmp"
build_image() { # build_image NAME DESCRIPTION
  local name=$1 description=$2 ref="$REGISTRY/$1:$TAG" archive="$OUT/$1-$TAG.oci.tar" digest var
  digest=$("$IMAGE_BUILDER" --name "$ref" --out "$archive" --epoch "$EPOCH" --user 65532:65532 \
    --file "$BIN_DIR/$name=/usr/local/bin/$name" --entrypoint "/usr/local/bin/$name" \
    --env PATH=/usr/local/bin \
    --label "org.opencontainers.image.title=$name" \
    --label "org.opencontainers.image.description=$description" \
    --label "org.opencontainers.image.source=$SOURCE" \
    --label "org.opencontainers.image.revision=$REVISION" \
    --label "org.opencontainers.image.version=$TAG" \
    --label "org.opencontainers.image.created=$CREATED" \
    --label "org.opencontainers.image.licenses=Apache-2.0")
  var=$(echo "$name" | tr 'a-z-' 'A-Z_')
  {
    echo "${var}_IMAGE=$ref"
    echo "${var}_ARCHIVE=$archive"
    echo "${var}_DIGEST=$digest"
  } >>"$OUT/images.env.tmp"
  printf '%-56s %s  %s (%s)\n' "$ref" "$digest" "$archive" "$(du -h "$archive" | cut -f1)"
}
build_image datajob-operator "Kubernetes operator that runs and cancels DataJobs"
build_image datajob-executor "Reference executor of datajob-operator (docs/executor.md)"
mv "$OUT/images.env.tmp" "$OUT/images.env"
log "images built in $((SECONDS - started))s (revision $REVISION, created $CREATED)"

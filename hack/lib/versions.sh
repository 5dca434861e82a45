# Versions of the local control plane's components (sourced by hack/ scripts).
# shellcheck shell=bash
# Kubernetes 1.37 pins the etcd 3.7 client, so etcd comes from the 3.7 line.
K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.3}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
DATAJOB_CACHE="${DATAJOB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/datajob-operator}"

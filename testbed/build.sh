#!/usr/bin/env bash
# Builds the test bed's control-plane binaries (etcd, kube-apiserver,
# kube-controller-manager, kwok) from the Go module proxy at pinned versions.
#
# Outputs go to $KUBE_FAILOVER_TESTBED_BIN (default: a folder per version set under
# ${XDG_CACHE_HOME:-$HOME/.cache}/kube-failover/testbed). A folder that already holds
# every binary is reused as is, so a warm run costs nothing.
#
# Prints the binary folder on its last line of standard output; progress goes to stderr.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/kube-failover/testbed"
bin="${KUBE_FAILOVER_TESTBED_BIN:-$cache_root/bin-k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION}"
binaries=(etcd kube-apiserver kube-controller-manager kwok)

say() { printf '[testbed] %s\n' "$*" >&2; }

have_all() {
  local b
  for b in "${binaries[@]}"; do [ -x "$bin/$b" ] || return 1; done
}

if have_all; then
  say "reusing binaries in $bin"
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { say "go is not on PATH: install Go 1.25 or newer"; exit 1; }
mkdir -p "$bin" "$cache_root/src"
export CGO_ENABLED=0 GOFLAGS=-mod=mod
start=$(date +%s)

# --- kube-apiserver and kube-controller-manager --------------------------------------
if [ ! -x "$bin/kube-apiserver" ] || [ ! -x "$bin/kube-controller-manager" ]; then
  say "building kube-apiserver and kube-controller-manager $K8S_VERSION (cold Go caches: about 5 min on 2 cores)"
  mod="$cache_root/src/k8s-$K8S_VERSION"
  rm -rf "$mod" && mkdir -p "$mod"
  k8s_gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [ -f "$k8s_gomod" ] || { say "could not download k8s.io/kubernetes@$K8S_VERSION"; exit 1; }
  staging="v0.${K8S_VERSION#v1.}"
  {
    echo "module kube-failover.local/testbed/k8s"
    echo
    echo "go $(sed -n 's/^go \(.*\)/\1/p' "$k8s_gomod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    # Every staging module that k8s.io/kubernetes replaces with a local path is taken
    # from the proxy at the matching v0.X.Y instead.
    sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 '"$staging"'#p' "$k8s_gomod"
    echo ")"
  } >"$mod/go.mod"
  cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
GO
  (cd "$mod" && go mod tidy >&2)
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
  (cd "$mod" && go build -trimpath -ldflags "$ldflags" -o "$bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager >&2)
  say "kubernetes built after $(( $(date +%s) - start ))s"
fi

# --- etcd (own module, so its version selection does not move Kubernetes' deps) -------
if [ ! -x "$bin/etcd" ]; then
  say "building etcd $ETCD_VERSION"
  mod="$cache_root/src/etcd-$ETCD_VERSION"
  rm -rf "$mod" && mkdir -p "$mod"
  cat >"$mod/go.mod" <<GOMOD
module kube-failover.local/testbed/etcd

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  (cd "$mod" && go mod tidy >&2 && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3 >&2)
  say "etcd built after $(( $(date +%s) - start ))s"
fi

# --- kwok ---------------------------------------------------------------------------
if [ ! -x "$bin/kwok" ]; then
  say "building kwok $KWOK_VERSION"
  GOBIN="$bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2
  say "kwok built after $(( $(date +%s) - start ))s"
fi

have_all || { say "build finished but binaries are missing in $bin"; exit 1; }
say "all binaries ready in $bin ($(( $(date +%s) - start ))s)"
echo "$bin"

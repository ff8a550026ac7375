#!/usr/bin/env bash
# Builds Helm from the Go module proxy at a pinned version (like testbed/build.sh builds
# Kubernetes) into ${XDG_CACHE_HOME:-$HOME/.cache}/kube-failover/tools. A binary already
# there is reused as is, so a warm run costs nothing.
#
# Prints the path of the helm binary on its last line of standard output; progress goes
# to stderr.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"

tools="${XDG_CACHE_HOME:-$HOME/.cache}/kube-failover/tools"
helm="$tools/helm-$HELM_VERSION"

if [ -x "$helm" ]; then
  echo "$helm"
  exit 0
fi

command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "go is not on PATH: install Go 1.25 or newer" >&2; exit 1; }
printf '[helm] building helm %s from the Go module proxy (cold Go caches: about 3 min on 2 cores)\n' \
  "$HELM_VERSION" >&2
gobin="$tools/gobin-helm-$HELM_VERSION"
mkdir -p "$gobin"
# The version Helm reports (`helm version`) is set the way its Makefile sets it.
GOBIN="$gobin" GOTOOLCHAIN=local CGO_ENABLED=0 \
  go install -ldflags "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
mv "$gobin/helm" "$helm"
rmdir "$gobin" 2>/dev/null || true
echo "$helm"

#!/bin/sh
# Helm post-renderer: adds the guard to the env0 agent chart's Deployments as Helm
# installs or upgrades it. Helm pipes the rendered manifests in; this builds them with
# the guard component folder given as argument (primary/ or standby/ here, or a copy of
# yours) and prints the result.
#
#   helm upgrade --install env0-agent env0/env0-agent -n env0-agent -f values.yaml \
#     --post-renderer deploy/kubernetes/guard/post-render.sh \
#     --post-renderer-args deploy/kubernetes/guard/primary
#
# Needs kustomize v5 on PATH (or in $KUSTOMIZE).
set -eu
dir="${1:?usage: post-render.sh GUARD_COMPONENT_DIR (e.g. deploy/kubernetes/guard/primary)}"
[ -f "$dir/kustomization.yaml" ] || {
  echo "post-render.sh: $dir has no kustomization.yaml" >&2
  exit 1
}
dir="$(cd "$dir" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat >"$work/rendered.yaml"
# kustomize takes no absolute component path: link the folder in.
ln -s "$dir" "$work/guard"
cat >"$work/kustomization.yaml" <<KUSTOMIZATION
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - rendered.yaml
components:
  - guard
KUSTOMIZATION
"${KUSTOMIZE:-kustomize}" build "$work"

#!/usr/bin/env bash
# The container image without a Docker daemon: the root filesystem assembled from Debian
# packages (deploy/image/rootfs.sh, the same script as the Dockerfile's first stage), the
# release binary, and an OCI image built by buildah from scratch; then inspected (layers,
# user, entrypoint, command, file list, no shell) and run against the test bed
# (tests/e2e_image.rs: host network, read-only root, UID 65532, no capabilities, config
# and kubeconfigs mounted as the Helm chart mounts them).
#
#   ci/image.sh [build] [inspect] [run]      (default: all three)
#
# Not part of ci/test.sh: the image needs the release build (`cargo build --release
# --locked`, 5+ minutes on 2 cores with fat LTO), which the test suite does not. Run it for
# a release, or set KUBE_FAILOVER_RELEASE_BIN to a release binary built already.
#
# Needs (Debian 12): buildah, podman, runc, umoci (installed here when missing), as root.
# Output: the image localhost/kube-failover:<version> in the local container storage and
# target/image/kube-failover-<version>.oci.tar (an OCI archive: `skopeo copy
# oci-archive:… docker://registry/…` pushes it).
set -euo pipefail
cd "$(dirname "$0")/.."

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
image="localhost/kube-failover:$version"
out="target/image"
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(build inspect run)

say() { printf '[image] %s\n' "$*" >&2; }

tools() {
  local missing=()
  for t in buildah podman runc umoci; do command -v "$t" >/dev/null || missing+=("$t"); done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      buildah podman runc umoci >/dev/null
  fi
}

build() {
  local bin="${KUBE_FAILOVER_RELEASE_BIN:-}"
  if [ -z "$bin" ]; then
    say "cargo build --release --locked (stripped, as the Dockerfile builds it)"
    CARGO_PROFILE_RELEASE_STRIP=symbols KUBE_FAILOVER_REVISION="$revision" \
      cargo build --release --locked --bin kube-failover
    bin=target/release/kube-failover
  fi
  # The image says which commit its binary was built from (as `--version` does).
  revision="$("$bin" --version | sed -n 's/.*(revision \([^,]*\),.*/\1/p')"
  mkdir -p "$out"
  local rootfs="$out/rootfs" epoch
  epoch="$(git log -1 --format=%ct 2>/dev/null || date +%s)"
  say "root filesystem from Debian packages"
  apt-get update -qq
  SOURCE_DATE_EPOCH="$epoch" deploy/image/rootfs.sh "$rootfs"
  say "buildah: image $image"
  # Two layers, like the Dockerfile: the base, then the binary.
  local ctr
  ctr="$(buildah from scratch)"
  buildah copy --quiet "$ctr" "$rootfs/" / >/dev/null
  buildah commit --quiet --format oci --rm "$ctr" localhost/kube-failover-base:"$version" >/dev/null
  ctr="$(buildah from localhost/kube-failover-base:"$version")"
  buildah copy --quiet --chmod 0755 "$ctr" "$bin" /kube-failover >/dev/null
  buildah config \
    --user 65532:65532 \
    --workingdir / \
    --port 9464/tcp \
    --entrypoint '["/kube-failover"]' \
    --cmd '["run", "--config", "/etc/kube-failover/config.toml"]' \
    --label org.opencontainers.image.title=kube-failover \
    --label "org.opencontainers.image.description=Keeps an active/passive Kubernetes workload alive across two clusters" \
    --label org.opencontainers.image.licenses=Apache-2.0 \
    --label "org.opencontainers.image.version=$version" \
    --label "org.opencontainers.image.revision=$revision" \
    "$ctr"
  buildah commit --quiet --format oci --rm "$ctr" "$image" >/dev/null
  buildah rmi localhost/kube-failover-base:"$version" >/dev/null
  rm -f "$out/kube-failover-$version.oci.tar"
  buildah push --quiet "$image" "oci-archive:$out/kube-failover-$version.oci.tar:$version"
  say "built $image: $(du -h "$out/kube-failover-$version.oci.tar" | cut -f1) as an OCI archive"
}

inspect() {
  python3 ci/image_checks.py "$image" "$out/kube-failover-$version.oci.tar"
}

run() {
  # tests/e2e_image.rs starts the image through podman; its runtime is runc (crun refuses
  # the hybrid cgroup hierarchy of some hosts), with limits below the host's hard ones.
  KUBE_FAILOVER_TESTBED_BIN="${KUBE_FAILOVER_TESTBED_BIN:-$(testbed/build.sh | tail -n 1)}" \
    KUBE_FAILOVER_IMAGE="$image" \
    cargo test --locked --test suite e2e_image:: -- --ignored --nocapture --test-threads=1
}

tools
for step in "${steps[@]}"; do
  case "$step" in
    build | inspect | run) "$step" ;;
    *) echo "usage: ci/image.sh [build] [inspect] [run]" >&2; exit 2 ;;
  esac
done

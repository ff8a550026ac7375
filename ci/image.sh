#!/usr/bin/env bash
# The container image without a Docker daemon: the root filesystem assembled from Debian
# packages (deploy/image/rootfs.sh, the same script as the Dockerfile's first stage), the
# daemon's binary, and an OCI image built by buildah from scratch; then inspected (layers,
# user, entrypoint, command, file list, no shell: ci/image_checks.py) and run against the
# test bed (tests/e2e_image.rs: host network, read-only root, UID 65532, no capabilities,
# config and kubeconfigs mounted as the Helm chart mounts them).
#
#   ci/image.sh [--debug] [build] [inspect] [run]      (default: all three)
#
# Which binary the image carries; everything else (rootfs.sh, the two layers, user,
# entrypoint, command, labels, the checks and the test) is the same for both:
#   (default)  the release binary, `cargo build --release --locked` stripped (fat LTO, one
#              codegen unit: about 20 minutes on 2 busy cores): the image a release
#              publishes, localhost/kube-failover:<version>. KUBE_FAILOVER_RELEASE_BIN
#              names a release binary built already.
#   --debug    the debug binary that `cargo test` builds and every end-to-end test runs
#              (`cargo test --workspace --locked --no-run`, nothing left to build once the
#              tests are built), stripped: localhost/kube-failover:<version>-debug. This is
#              the image ci/test.sh builds and runs: it proves the base, the layout and
#              the way the chart runs the image at no extra build; only the binary's code
#              differs from the release image (47.8 MB stripped instead of 11.9 MB).
#              A profile of its own for the CI image (release with opt-level 1, no LTO,
#              16 codegen units: 25.0 MB stripped) would build every crate a second time:
#              763 CPU-seconds, over 6 minutes on 2 idle cores, against none for this one.
#
# Needs (Debian 12), as root: buildah, podman, runc and containers-storage (their configs
# under /etc/containers and /usr/share/containers come with the packages), binutils
# (strip, readelf), python3 with PyYAML; installed here when missing.
# Output: the image in the local container storage (an earlier image of the same tag is
# removed) and target/image/kube-failover-<tag>.oci.tar (an OCI archive: `skopeo copy
# oci-archive:… docker://registry/…` pushes it).
set -euo pipefail
cd "$(dirname "$0")/.."
. ci/apt.sh

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
target="${CARGO_TARGET_DIR:-target}"
out="target/image"
kind=release
if [ "${1:-}" = "--debug" ]; then
  kind=debug
  shift
fi
tag="$version"
[ "$kind" = release ] || tag="$version-$kind"
image="localhost/kube-failover:$tag"
archive="$out/kube-failover-$tag.oci.tar"
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(build inspect run)

say() { printf '[image] %s\n' "$*" >&2; }

# What the steps run, installed when missing (a fresh Debian 12 as root). Package lists
# are refreshed once: build() needs them anyway for the base's packages.
tools() {
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  # storage.conf: without it podman and buildah fall back on built-in defaults.
  [ -e /usr/share/containers/storage.conf ] || [ -e /etc/containers/storage.conf ] \
    || missing+=(containers-storage)
  command -v strip >/dev/null && command -v readelf >/dev/null || missing+=(binutils)
  command -v python3 >/dev/null || missing+=(python3)
  python3 -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
  say "apt-get update"
  apt_get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt_get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
  for f in /etc/containers/policy.json /etc/containers/registries.conf; do
    [ -e "$f" ] || { say "$f is missing (package golang-github-containers-common)"; exit 1; }
  done
  say "$(buildah --version), $(podman --version), $(runc --version | head -n 1)"
}

binary() {
  local bin
  if [ "$kind" = debug ]; then
    say "cargo test --workspace --locked --no-run (the debug build the tests run)"
    cargo test --workspace --locked --no-run
    bin="$target/debug/kube-failover"
  elif [ -n "${KUBE_FAILOVER_RELEASE_BIN:-}" ]; then
    bin="$KUBE_FAILOVER_RELEASE_BIN"
  else
    say "cargo build --release --locked (stripped, as the Dockerfile builds it)"
    CARGO_PROFILE_RELEASE_STRIP=symbols KUBE_FAILOVER_REVISION="$revision" \
      cargo build --release --locked --bin kube-failover
    bin="$target/release/kube-failover"
  fi
  # A stripped copy: the release build strips already, the debug build keeps its symbols
  # and debug info for the tests' backtraces.
  mkdir -p "$out"
  strip -o "$out/kube-failover" "$bin"
  say "binary: $bin ($kind, $(du -m "$bin" | cut -f1) MB), stripped copy $(du -m "$out/kube-failover" | cut -f1) MB: $("$out/kube-failover" --version)"
}

build() {
  binary
  local bin="$out/kube-failover"
  # The image says which commit its binary was built from (as `--version` does).
  revision="$("$bin" --version | sed -n 's/.*(revision \([^,]*\),.*/\1/p')"
  revision="${revision:-unknown}"
  local rootfs="$out/rootfs" epoch
  epoch="$(git log -1 --format=%ct 2>/dev/null || date +%s)"
  say "root filesystem from Debian packages (deploy/image/rootfs.sh)"
  SOURCE_DATE_EPOCH="$epoch" deploy/image/rootfs.sh "$rootfs"
  say "buildah: image $image"
  # An earlier build of this tag would be left untagged in the storage at each run.
  buildah rmi "$image" >/dev/null 2>&1 || true
  # Two layers, like the Dockerfile: the base, then the binary.
  local ctr
  ctr="$(buildah from scratch)"
  buildah copy --quiet "$ctr" "$rootfs/" / >/dev/null
  buildah commit --quiet --format oci --rm "$ctr" localhost/kube-failover-base:"$tag" >/dev/null
  ctr="$(buildah from localhost/kube-failover-base:"$tag")"
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
  buildah rmi localhost/kube-failover-base:"$tag" >/dev/null
  rm -rf "$rootfs" "$bin" "$archive"
  buildah push --quiet "$image" "oci-archive:$archive:$tag"
  say "built $image: $(du -h "$archive" | cut -f1) as an OCI archive ($archive)"
}

inspect() {
  say "ci/image_checks.py $image"
  python3 ci/image_checks.py "$image" "$archive"
}

run() {
  # tests/e2e_image.rs starts the image through podman; its runtime is runc (crun refuses
  # the hybrid cgroup hierarchy of some hosts), with limits below the host's hard ones.
  # `--ignored`: plain `cargo test` has no image and skips it, so it runs here only.
  say "cargo test --test suite e2e_image:: -- --ignored (podman runs $image on the test bed)"
  KUBE_FAILOVER_TESTBED_BIN="${KUBE_FAILOVER_TESTBED_BIN:-$(testbed/build.sh | tail -n 1)}" \
    KUBE_FAILOVER_IMAGE="$image" \
    cargo test --locked --test suite e2e_image:: -- --ignored --nocapture --test-threads=1
}

for step in "${steps[@]}"; do
  case "$step" in
    build | inspect | run) ;;
    *) echo "usage: ci/image.sh [--debug] [build] [inspect] [run]" >&2; exit 2 ;;
  esac
done
tools
for step in "${steps[@]}"; do
  started=$SECONDS
  "$step"
  say "$step: done in $((SECONDS - started)) s"
done

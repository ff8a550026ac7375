# syntax=docker/dockerfile:1
#
# kube-failover container image: build with the same `cargo build --release --locked` as
# ci/image.sh does for a release, run on a root filesystem assembled from Debian 12
# packages the way distroless images are (glibc, libgcc, CA certificates, tzdata, the
# nonroot user 65532; no shell, no package manager): deploy/image/rootfs.sh, the same
# script ci/image.sh builds the image with (buildah, no Docker daemon), so both give the
# same layout.
#
# Why glibc and not static: the binary is an ordinary glibc build (TLS is rustls, so no
# OpenSSL), the one CI tests. Building it in Debian 12 and taking the libraries from
# Debian 12 keeps the glibc versions identical.
#
#   docker build -t kube-failover:0.1.0 --build-arg VERSION=0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" .

ARG RUST_VERSION=1.95.0

FROM rust:${RUST_VERSION}-bookworm AS build
# `kube-failover --version` names this revision (the build context has no .git).
ARG REVISION=unknown
WORKDIR /src
# The whole workspace (see .dockerignore): cargo loads every member and every declared
# target (the testbed crate, benches) before it builds the one binary.
COPY . .
# Cache mounts keep the registry and the target dir between builds; the binary is copied
# out of the cached target dir in the same step. Symbols are stripped here, not in
# Cargo.toml, so local release builds keep them for profiling.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_STRIP=symbols KUBE_FAILOVER_REVISION="${REVISION}" \
    cargo build --release --locked --bin kube-failover \
 && cp target/release/kube-failover /kube-failover

# The base: Debian 12's packages unpacked and pruned (deploy/image/rootfs.sh).
FROM debian:bookworm-slim AS rootfs
COPY deploy/image/rootfs.sh /usr/local/bin/rootfs.sh
# hadolint ignore=DL3008
RUN apt-get update && /usr/local/bin/rootfs.sh /rootfs && rm -rf /var/lib/apt/lists/*

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="kube-failover" \
      org.opencontainers.image.description="Keeps an active/passive Kubernetes workload alive across two clusters" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# Two layers: the base, then the binary (a new release changes only the second).
COPY --from=rootfs /rootfs/ /
COPY --from=build /kube-failover /kube-failover
# 65532 is the base's "nonroot"; numeric so that runAsNonRoot can verify it without
# reading /etc/passwd.
USER 65532:65532
WORKDIR /
# Admin port: /metrics, /healthz, /readyz, /status. The daemon listens on loopback by
# default; a container config must set daemon.listen = "0.0.0.0:9464".
EXPOSE 9464
ENTRYPOINT ["/kube-failover"]
CMD ["run", "--config", "/etc/kube-failover/config.toml"]

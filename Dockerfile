# syntax=docker/dockerfile:1
#
# kube-failover container image: build with the same `cargo build --release --locked` as
# CI, run on distroless "cc" (glibc + libgcc, no shell, no package manager).
#
# Why cc and not static: the binary is an ordinary glibc build (TLS is rustls, so no
# OpenSSL), and it needs libc and libgcc_s at run time. Building it in Debian 12 and
# running it on distroless Debian 12 keeps the glibc versions identical. A musl build
# would fit distroless/static (about 20 MB smaller) but would be a different build from
# the one CI tests.
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

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="kube-failover" \
      org.opencontainers.image.description="Keeps an active/passive Kubernetes workload alive across two clusters" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /kube-failover /kube-failover
# 65532 is distroless' "nonroot"; numeric so that runAsNonRoot can verify it without
# reading /etc/passwd.
USER 65532:65532
# Admin port: /metrics, /healthz, /readyz, /status. The daemon listens on loopback by
# default; a container config must set daemon.listen = "0.0.0.0:9464".
EXPOSE 9464
ENTRYPOINT ["/kube-failover"]
CMD ["run", "--config", "/etc/kube-failover/config.toml"]

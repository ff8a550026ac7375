#!/usr/bin/env bash
# The project's test command: lints, unit tests, end-to-end tests on real API servers
# (the test bed is built or reused first), and the packaging checks.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
last=$SECONDS
# Each step's title, with how long the previous one took (a warm run should stay well
# under 20 minutes: this says where the time goes).
step() {
  printf '\n=== %s (previous step %ds, %ds in all)\n' "$*" $((SECONDS - last)) $((SECONDS - started))
  last=$SECONDS
}
trap 'printf "\n=== done in %ds (last step %ds)\n" $((SECONDS - started)) $((SECONDS - last))' EXIT

step "test bed binaries"
KUBE_FAILOVER_TESTBED_BIN="$(testbed/build.sh | tail -n 1)"
export KUBE_FAILOVER_TESTBED_BIN

# First: it installs the tools that the end-to-end tests need too (prometheus, promtool).
step "packaging checks"
ci/check-deploy.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit and end-to-end)"
# End-to-end tests each start two control planes; two at a time fit 2 cores. Every test
# binary runs even when one fails, so one run reports every failure.
cargo test --workspace --locked --no-fail-fast -- --test-threads=2


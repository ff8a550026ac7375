#!/usr/bin/env bash
# The project's test command: lints, unit tests, end-to-end tests on real API servers
# (the test bed is built or reused first), the packaging checks, and the container image
# built from the debug binary and run on the test bed.
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

step "cargo test --no-run (the build the tests and the image share)"
cargo test --workspace --locked --no-run

# The image from the debug binary just built (the release image is built the same way
# from the release binary: ci/image.sh), inspected, and run by podman on the test bed
# (tests/e2e_image.rs, `--ignored`: it runs here, not in the step below). A failure is
# reported at the end, after the tests have run.
step "container image (ci/image.sh --debug: build, inspect, run)"
image_status=0
ci/image.sh --debug build inspect run || image_status=$?

step "cargo test (unit and end-to-end)"
# End-to-end tests each start two control planes; two at a time fit 2 cores. Every test
# binary runs even when one fails, so one run reports every failure.
test_status=0
cargo test --workspace --locked --no-fail-fast -- --test-threads=2 || test_status=$?

if [ "$image_status" -ne 0 ]; then
  echo "FAIL: the container image step (ci/image.sh --debug exited $image_status)" >&2
fi
if [ "$test_status" -ne 0 ]; then
  echo "FAIL: cargo test exited $test_status" >&2
fi
[ "$image_status" -eq 0 ] && [ "$test_status" -eq 0 ]


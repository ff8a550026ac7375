#!/usr/bin/env bash
# The project's test command: lints, unit tests, end-to-end tests on real API servers
# (the test bed is built or reused first), the packaging checks, a 3-minute fault
# campaign with a fixed seed, and the container image built from the debug binary and
# run on the test bed.
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

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test --no-run, and the fault campaign's runner (the builds the later steps share)"
cargo test --workspace --locked --no-run
cargo bench --locked --profile dev --bench chaos --no-run

# The packaging checks (they also install tools the end-to-end tests need: prometheus,
# promtool) and a 3-minute fault campaign with a fixed seed (ci/chaos.sh: three instances,
# two guards, random overlapping faults, the invariants checked from outside) side by
# side: both mostly wait (tools, API servers, the campaign's timers), so together they take
# little more than the longer of the two. The campaign's output follows the checks'.
step "packaging checks, and beside them the fault campaign (ci/chaos.sh)"
chaos_log="$(mktemp)"
ci/chaos.sh >"$chaos_log" 2>&1 &
chaos_pid=$!
deploy_status=0
ci/check-deploy.sh || deploy_status=$?
chaos_status=0
wait "$chaos_pid" || chaos_status=$?
echo "--- the fault campaign (ci/chaos.sh), exit $chaos_status:"
cat "$chaos_log"
rm -f "$chaos_log"

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

if [ "$deploy_status" -ne 0 ]; then
  echo "FAIL: the packaging checks (ci/check-deploy.sh exited $deploy_status)" >&2
fi
if [ "$chaos_status" -ne 0 ]; then
  echo "FAIL: the fault campaign (ci/chaos.sh exited $chaos_status: see its report above)" >&2
fi
if [ "$image_status" -ne 0 ]; then
  echo "FAIL: the container image step (ci/image.sh --debug exited $image_status)" >&2
fi
if [ "$test_status" -ne 0 ]; then
  echo "FAIL: cargo test exited $test_status" >&2
fi
[ "$deploy_status" -eq 0 ] && [ "$chaos_status" -eq 0 ] && [ "$image_status" -eq 0 ] &&
  [ "$test_status" -eq 0 ]


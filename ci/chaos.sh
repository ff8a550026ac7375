#!/usr/bin/env bash
# A short fault campaign with a fixed seed (README, "Fault campaign"): three daemon
# instances on the test bed under random, overlapping faults for 3 minutes, the safety
# invariants checked from outside. Exits non-zero on a violation; the report is in
# target/chaos-<seed>.md. About 4 minutes on 2 cores with a warm debug build (the
# campaign, 30 s of settling, the clusters' start; 250 s measured). ci/test.sh runs it
# beside the packaging checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# The clock-rate fault runs an instance under libfaketime (Debian's faketime).
if ! ls /usr/lib/*/faketime/libfaketimeMT.so.1 /usr/lib/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 &&
  [ -z "${KUBE_FAILOVER_FAKETIME_LIB:-}" ]; then
  . ci/apt.sh
  apt_get update -qq && apt_get install -y -qq --no-install-recommends faketime
fi

KUBE_FAILOVER_TESTBED_BIN="$(testbed/build.sh | tail -n 1)"
export KUBE_FAILOVER_TESTBED_BIN
export KUBE_FAILOVER_CHAOS_SEED="${KUBE_FAILOVER_CHAOS_SEED:-20}"
export KUBE_FAILOVER_CHAOS_DURATION="${KUBE_FAILOVER_CHAOS_DURATION:-3m}"
# The debug build: the daemon and the runner unoptimised, no release build to wait for.
cargo bench --locked --profile dev --bench chaos

#!/bin/sh
# The watchdog a user would write today instead of kube-failover: ask the primary's
# API server for /readyz every INTERVAL seconds; after THRESHOLD failures in a row,
# scale the standby's Deployments to 1 and stop. Nothing else: no quorum, no record,
# no fencing of the old primary when it comes back.
#
# Settings come from the environment: KUBECTL, PRIMARY_KUBECONFIG, STANDBY_KUBECONFIG,
# NAMESPACE, DEPLOYMENTS (space-separated), INTERVAL and TIMEOUT (seconds), THRESHOLD.
set -u
fails=0
while :; do
    if "$KUBECTL" --kubeconfig "$PRIMARY_KUBECONFIG" --request-timeout="${TIMEOUT}s" \
        get --raw /readyz >/dev/null 2>&1; then
        fails=0
    else
        fails=$((fails + 1))
        if [ "$fails" -ge "$THRESHOLD" ]; then
            # shellcheck disable=SC2086 # one argument per Deployment
            "$KUBECTL" --kubeconfig "$STANDBY_KUBECONFIG" -n "$NAMESPACE" \
                scale deployment $DEPLOYMENTS --replicas=1
            exit
        fi
    fi
    sleep "$INTERVAL"
done

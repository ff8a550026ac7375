#!/usr/bin/env python3
"""Checks of the packaging in deploy/ that need more than one command: called by
ci/check-deploy.sh, one subcommand per check. Each prints what it found and exits non-zero
on a problem. Run from the repository root.

  prometheusrule [--write]   deploy/kubernetes/base/prometheusrule.yaml == deploy/prometheus/alerts.yaml
  extract-rules BUILD OUT    the PrometheusRule spec of a `kustomize build` output, as a rules file
  alert-mutants              every alert's unit tests catch a never/always-firing or for-less mutant
  metric-names               alerts and dashboard use only the daemon's metrics (metrics.txt)
  dashboard                  the Grafana dashboard is sound and its queries parse
  servicemonitor BUILD       the ServiceMonitor finds the Service and its port
  networkpolicy BUILD KUSTOMIZE   only the monitoring namespace reaches the admin port,
                             and the documented patch moves it to another namespace
  rbac-namespace KUSTOMIZE   target-rbac's subject follows a namespace override
  image-contract BUILD       Dockerfile user/port/command agree with the Deployment
  docker-context             the files the Dockerfile copies load with --locked
  systemd-config             the example config points at the unit's credentials
  alertmanager               the example routing sends each alert by its severity
"""

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

ALERTS = "deploy/prometheus/alerts.yaml"
ALERT_TESTS = "deploy/prometheus/alerts.test.yaml"
METRICS = "deploy/prometheus/metrics.txt"
PROMETHEUSRULE = "deploy/kubernetes/base/prometheusrule.yaml"
DASHBOARD = "deploy/grafana/kube-failover.json"

PROMETHEUSRULE_HEADER = """\
# GENERATED from deploy/prometheus/alerts.yaml by `ci/deploy_checks.py prometheusrule
# --write`: edit that file, then regenerate. ci/check-deploy.sh fails when they differ.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: kube-failover
  labels:
    app.kubernetes.io/name: kube-failover
spec:
"""


def fail(msg):
    print(f"  {msg}")
    sys.exit(1)


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def render_prometheusrule():
    """The PrometheusRule text: alerts.yaml's body indented under `spec:`. Comments and
    block scalars survive because the indentation is uniform."""
    with open(ALERTS) as f:
        lines = f.read().splitlines()
    # Drop the leading comment block: it describes alerts.yaml, not the generated object.
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)
    body = "\n".join(("  " + line) if line.strip() else "" for line in lines)
    return PROMETHEUSRULE_HEADER + body + "\n"


def cmd_prometheusrule(args):
    want = render_prometheusrule()
    if args and args[0] == "--write":
        with open(PROMETHEUSRULE, "w") as f:
            f.write(want)
        print(f"  wrote {PROMETHEUSRULE}")
        return
    try:
        with open(PROMETHEUSRULE) as f:
            have = f.read()
    except FileNotFoundError:
        fail(f"{PROMETHEUSRULE} is missing: run ci/deploy_checks.py prometheusrule --write")
    # The semantic comparison is the one that matters; the text one keeps the
    # generated file from drifting in comments and layout.
    with open(ALERTS) as f:
        rules = yaml.safe_load(f)
    spec = yaml.safe_load(have)["spec"]
    if spec != rules:
        fail(f"{PROMETHEUSRULE} spec differs from {ALERTS}: run "
             "ci/deploy_checks.py prometheusrule --write")
    if have != want:
        fail(f"{PROMETHEUSRULE} is not the generated text: run "
             "ci/deploy_checks.py prometheusrule --write")
    n = sum(len(g["rules"]) for g in rules["groups"])
    print(f"  PrometheusRule spec equals {ALERTS} ({n} rules)")


def cmd_extract_rules(args):
    build, out = args
    rules = [d for d in load_all(build) if d.get("kind") == "PrometheusRule"]
    if len(rules) != 1:
        fail(f"expected one PrometheusRule in the build, found {len(rules)}")
    with open(out, "w") as f:
        yaml.safe_dump(rules[0]["spec"], f, sort_keys=False)
    print(f"  extracted {rules[0]['metadata']['namespace']}/{rules[0]['metadata']['name']}")


def run_tests(rules_doc, workdir):
    """promtool test rules with the committed tests against `rules_doc`; True if passed."""
    with open(os.path.join(workdir, "alerts.yaml"), "w") as f:
        yaml.safe_dump(rules_doc, f, sort_keys=False)
    shutil.copy(ALERT_TESTS, os.path.join(workdir, "alerts.test.yaml"))
    r = subprocess.run(["promtool", "test", "rules", "alerts.test.yaml"], cwd=workdir,
                       capture_output=True, text=True)
    return r.returncode == 0


def cmd_alert_mutants(_args):
    """Proves the unit tests can fail for each alert: a mutant that never fires (so a
    firing case must exist), one that always fires (so a not-firing case must exist) and,
    for alerts with `for`, one without it (so a case must sit in the pending window)."""
    with open(ALERTS) as f:
        rules = yaml.safe_load(f)
    survivors = []
    count = 0
    with tempfile.TemporaryDirectory() as tmp:
        if not run_tests(rules, tmp):
            fail("the unmutated rules fail their tests")
        for gi, group in enumerate(rules["groups"]):
            for ri, rule in enumerate(group["rules"]):
                if "alert" not in rule:
                    continue
                name = rule["alert"]
                kinds = ["never", "always"] + (["without its for"] if "for" in rule else [])
                for kind in kinds:
                    mutant = yaml.safe_load(yaml.safe_dump(rules))
                    m = mutant["groups"][gi]["rules"][ri]
                    if kind == "never":
                        m["expr"] = f"({rule['expr']}) and on() vector(0) > 1"
                    elif kind == "always":
                        m["expr"] = f"({rule['expr']}) or on() vector(1)"
                        m.pop("for", None)
                    else:
                        # Fires as soon as the condition holds: a test must look inside
                        # the pending window.
                        m.pop("for")
                    count += 1
                    if run_tests(mutant, tmp):
                        survivors.append(f"{name} ({kind})")
    if survivors:
        fail("tests did not notice: " + ", ".join(survivors))
    print(f"  all {count} mutants (never firing, always firing, no `for`) were caught")


def metric_contract():
    names = {}
    with open(METRICS) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, kind = line.split()
                names[name] = kind
    return names


def series_names(kind, name):
    if kind == "histogram":
        return {name + s for s in ("_bucket", "_sum", "_count")}
    return {name}


def promql_metric_names(expr):
    """Metric names in a PromQL expression: identifiers followed by `{`, `[`, `)` or
    used bare, minus functions, keywords and label names inside braces or by()."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "{}", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)  # ranges
    names = set()
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expr):
        ident, call = m.group(1), m.group(2)
        if call or ident in {"and", "or", "unless", "bool", "offset", "inf", "nan"}:
            continue
        if re.fullmatch(r"\d+[smhdwy]?", ident):
            continue
        names.add(ident)
    return names


def dashboard_exprs():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            exprs.append((panel["title"], t["expr"]))
    for a in dash.get("annotations", {}).get("list", []):
        if "expr" in a:
            exprs.append((f"annotation {a['name']}", a["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
            if not m:
                fail(f"variable {v['name']}: unexpected query {q!r}")
            exprs.append((f"variable {v['name']}", m.group(1)))
    return dash, exprs


def cmd_metric_names(_args):
    contract = metric_contract()
    allowed = set().union(*(series_names(k, n) for n, k in contract.items()))
    allowed |= {"up"}  # Prometheus' own, per target
    with open(ALERTS) as f:
        rules = yaml.safe_load(f)
    used = []
    for g in rules["groups"]:
        for r in g["rules"]:
            used += [(r["alert"], n) for n in promql_metric_names(r["expr"])]
    _, exprs = dashboard_exprs()
    for title, e in exprs:
        used += [(f"dashboard '{title}'", n) for n in promql_metric_names(e)]
    unknown = sorted({f"{n} (in {where})" for where, n in used if n not in allowed})
    if unknown:
        fail("not in " + METRICS + ": " + ", ".join(unknown))
    # The other direction: every metric the daemon promises has a use somewhere, or the
    # contract lists something nobody watches.
    used_names = {n for _, n in used}
    unused = sorted(n for n, k in contract.items()
                    if not (series_names(k, n) & used_names) and not n.startswith("process_"))
    if unused:
        fail("in " + METRICS + " but used by no alert or panel: " + ", ".join(unused))
    print(f"  {len(used_names)} metric names used by alerts and dashboard, all in {METRICS}")


def cmd_dashboard(_args):
    dash, exprs = dashboard_exprs()
    problems = []
    ids = [p["id"] for p in dash["panels"]]
    if len(ids) != len(set(ids)):
        problems.append("duplicate panel ids")
    for p in dash["panels"]:
        if p.get("type") != "row" and not p.get("targets"):
            problems.append(f"panel '{p['title']}' has no query")
        ds = p.get("datasource", {})
        if p.get("type") != "row" and ds.get("uid") != "${datasource}":
            problems.append(f"panel '{p['title']}' does not use the $datasource variable")
    wanted = ["group state", "probe latency", "probe failures", "promotions", "fence",
              "standby fit", "replicas", "dual-active", "no active side",
              "primary unobservable", "record restores", "leaders per group",
              "groups led per instance", "observers by verdict", "identity clash"]
    titles = " | ".join(p["title"].lower() for p in dash["panels"])
    problems += [f"no panel about {w}" for w in wanted if w not in titles]
    if problems:
        fail("; ".join(problems))
    # PromQL syntax: promtool parses each query as a recording rule, with Grafana's
    # variables replaced by values of the right shape.
    subst = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h",
             "${group:regex}": "env0", "$group": "env0"}
    rules = []
    for i, (title, e) in enumerate(exprs):
        for k, v in subst.items():
            e = e.replace(k, v)
        if "$" in e:
            problems.append(f"'{title}': unknown variable in {e!r}")
        rules.append({"record": f"dashboard:query_{i}", "expr": e})
    if problems:
        fail("; ".join(problems))
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
    r = subprocess.run(["promtool", "check", "rules", f.name], capture_output=True, text=True)
    os.unlink(f.name)
    if r.returncode != 0:
        fail("promtool rejects a dashboard query:\n" + r.stdout + r.stderr)
    print(f"  {len(dash['panels'])} panels, {len(exprs)} queries parse")


def cmd_servicemonitor(args):
    docs = load_all(args[0])
    svcs = [d for d in docs if d["kind"] == "Service"]
    sms = [d for d in docs if d["kind"] == "ServiceMonitor"]
    deps = [d for d in docs if d["kind"] == "Deployment"]
    if len(sms) != 1 or len(deps) != 1:
        fail(f"expected one ServiceMonitor and one Deployment, got {len(sms)}, {len(deps)}")
    sm, dep = sms[0], deps[0]
    sel = sm["spec"]["selector"]["matchLabels"]
    ns = sm["metadata"]["namespace"]
    hits = [s for s in svcs if s["metadata"]["namespace"] == ns
            and all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
    if len(hits) != 1:
        fail(f"ServiceMonitor selector {sel} matches {len(hits)} Services in {ns}")
    svc = hits[0]
    for ep in sm["spec"]["endpoints"]:
        port = [p for p in svc["spec"]["ports"] if p.get("name") == ep["port"]]
        if not port:
            fail(f"Service {svc['metadata']['name']} has no port named {ep['port']}")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    if not all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items()):
        fail("the Service's selector does not select the Deployment's Pods")
    cports = {p["name"]: p["containerPort"]
              for c in dep["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    for p in svc["spec"]["ports"]:
        if p["targetPort"] not in cports:
            fail(f"Service targetPort {p['targetPort']} is no named container port")
    # The job label is the value of the Service's label that jobLabel names, or the
    # Service's name without one: the DaemonDown alert matches job="kube-failover".
    job_label = sm["spec"].get("jobLabel")
    job = (svc["metadata"].get("labels", {}).get(job_label) if job_label
           else svc["metadata"]["name"])
    if job != "kube-failover":
        fail(f"the scrape job would be called {job!r}, not kube-failover "
             "(see KubeFailoverDaemonDown)")
    print(f"  ServiceMonitor -> Service {svc['metadata']['name']}:{ep['port']} -> "
          f"container port {cports[svc['spec']['ports'][0]['targetPort']]}, job kube-failover")


# The patch deploy/README.md documents for another monitoring namespace.
NETWORKPOLICY_PATCH = """\
- op: replace
  path: /spec/ingress/0/from/0/namespaceSelector/matchLabels/kubernetes.io~1metadata.name
  value: observability
"""


def admitted_namespaces(docs):
    """The namespaces the NetworkPolicy admits to the daemon's admin port, after checking
    that it selects the daemon's Pods, filters ingress only, and names a real port."""
    nps = [d for d in docs if d["kind"] == "NetworkPolicy"]
    deps = [d for d in docs if d["kind"] == "Deployment"]
    if len(nps) != 1 or len(deps) != 1:
        fail(f"expected one NetworkPolicy and one Deployment, got {len(nps)}, {len(deps)}")
    np, dep = nps[0], deps[0]
    spec = np["spec"]
    if np["metadata"].get("namespace") != dep["metadata"].get("namespace"):
        fail("the NetworkPolicy is not in the Deployment's namespace")
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    sel = spec["podSelector"].get("matchLabels", {})
    if not sel or not all(pod_labels.get(k) == v for k, v in sel.items()):
        fail(f"podSelector {sel} does not select the daemon's Pods {pod_labels}")
    if spec.get("policyTypes") != ["Ingress"]:
        fail(f"policyTypes {spec.get('policyTypes')}: expected [Ingress] (egress goes to "
             "site-specific API servers)")
    cports = {p["name"]: p["containerPort"]
              for c in dep["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
    namespaces = []
    for rule in spec.get("ingress", []):
        ports = rule.get("ports", [])
        if not ports:
            fail("an ingress rule without ports admits every port")
        for p in ports:
            if p["port"] not in cports and p["port"] not in cports.values():
                fail(f"ingress port {p['port']} is no container port ({cports})")
        peers = rule.get("from", [])
        if not peers:
            fail("an ingress rule without `from` admits everyone")
        for peer in peers:
            if set(peer) != {"namespaceSelector"}:
                fail(f"peer {peer}: only a namespaceSelector is expected (no ipBlock, "
                     "no bare podSelector)")
            labels = peer["namespaceSelector"].get("matchLabels", {})
            if set(labels) != {"kubernetes.io/metadata.name"}:
                fail(f"namespaceSelector {labels} does not name one namespace")
            namespaces.append(labels["kubernetes.io/metadata.name"])
    return namespaces


def cmd_networkpolicy(args):
    build, kustomize = args
    admitted = admitted_namespaces(load_all(build))
    if admitted != ["monitoring"]:
        fail(f"the base admits {admitted}, expected only the monitoring namespace")
    with tempfile.TemporaryDirectory(dir="deploy/kubernetes") as tmp:
        rel = os.path.relpath("deploy/kubernetes/base", tmp)
        with open(os.path.join(tmp, "kustomization.yaml"), "w") as f:
            f.write(f"resources:\n  - {rel}\npatches:\n  - target:\n"
                    "      kind: NetworkPolicy\n      name: kube-failover\n"
                    "    path: monitoring-namespace.yaml\n")
        with open(os.path.join(tmp, "monitoring-namespace.yaml"), "w") as f:
            f.write(NETWORKPOLICY_PATCH)
        out = subprocess.run([kustomize, "build", tmp], capture_output=True, text=True)
    if out.returncode != 0:
        fail("the documented patch does not build:\n" + out.stderr)
    patched = admitted_namespaces([d for d in yaml.safe_load_all(out.stdout) if d])
    if patched != ["observability"]:
        fail(f"the documented patch admits {patched}, expected observability")
    with open("deploy/README.md") as f:
        readme = f.read()
    # Shown inside a list item, so indented by two spaces.
    shown = "".join("  " + line + "\n" for line in NETWORKPOLICY_PATCH.splitlines())
    if shown not in readme:
        fail("deploy/README.md does not show the patch this check applies")
    print("  admin port: namespace monitoring only (kubelet: node traffic); the documented "
          "patch moves it to another namespace")


def cmd_rbac_namespace(args):
    kustomize = args[0]
    with tempfile.TemporaryDirectory(dir="deploy/kubernetes") as tmp:
        rel = os.path.relpath("deploy/kubernetes/target-rbac", tmp)
        with open(os.path.join(tmp, "kustomization.yaml"), "w") as f:
            f.write(f"namespace: agents-elsewhere\nresources:\n  - {rel}\n")
        out = subprocess.run([kustomize, "build", tmp], capture_output=True, text=True,
                             check=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    rb = [d for d in docs if d["kind"] == "RoleBinding"][0]
    wrong = [d["metadata"]["name"] for d in docs
             if d["metadata"].get("namespace") != "agents-elsewhere"]
    subj = [s.get("namespace") for s in rb["subjects"] if s["kind"] == "ServiceAccount"]
    if wrong or subj != ["agents-elsewhere"]:
        fail(f"namespace override missed: objects {wrong}, subject namespaces {subj}")
    print("  an overlay's namespace moves every object and the ServiceAccount subject")


def dockerfile_instructions():
    with open("Dockerfile") as f:
        text = re.sub(r"\\\n", " ", f.read())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def cmd_image_contract(args):
    docs = load_all(args[0])
    dep = [d for d in docs if d["kind"] == "Deployment"][0]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    ins = dockerfile_instructions()
    final = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    last = {w: r for w, r in ins[final:]}
    problems = []
    uid = last.get("USER", "").split(":")[0]
    if str(pod["securityContext"]["runAsUser"]) != uid:
        problems.append(f"image USER {uid} vs runAsUser {pod['securityContext']['runAsUser']}")
    port = c["ports"][0]["containerPort"]
    if last.get("EXPOSE") != str(port):
        problems.append(f"EXPOSE {last.get('EXPOSE')} vs containerPort {port}")
    if json.loads(last.get("CMD", "[]")) != c.get("args"):
        problems.append(f"CMD {last.get('CMD')} vs args {c.get('args')}")
    if json.loads(last.get("ENTRYPOINT", "[]")) != ["/kube-failover"]:
        problems.append("ENTRYPOINT is not /kube-failover")
    if problems:
        fail("; ".join(problems))
    print(f"  image and Deployment agree: uid {uid}, port {port}, args {' '.join(c['args'])}")


def dockerignore_included(path, rules):
    """Docker's rule: the last matching pattern wins; a pattern matching a parent
    directory matches everything below it."""
    keep = True
    parts = path.split("/")
    for neg, pat in rules:
        pat = pat.rstrip("/")
        if any(fnmatch.fnmatchcase("/".join(parts[:i]), pat) for i in range(1, len(parts) + 1)):
            keep = neg
    return keep


def cmd_docker_context(_args):
    with open(".dockerignore") as f:
        rules = []
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                rules.append((line.startswith("!"), line.lstrip("!")))
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           capture_output=True, text=True, check=True).stdout.split()
    context = [p for p in files if dockerignore_included(p, rules) and os.path.exists(p)]
    ins = dockerfile_instructions()
    final = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    # COPYs from the build context (not --from another stage), their flags dropped.
    copies = [[a for a in r.split() if not a.startswith("--")]
              for w, r in ins[:final] if w == "COPY" and "--from=" not in r]
    with tempfile.TemporaryDirectory() as tmp:
        for args in copies:
            *srcs, dest = args
            for src in srcs:
                src = src.rstrip("/")
                hits = [p for p in context
                        if src == "." or p == src or p.startswith(src + "/")]
                if not hits:
                    fail(f"COPY {src}: nothing in the build context (.dockerignore?)")
                for p in hits:
                    target = os.path.join(tmp, p)
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    shutil.copy(p, target)
        # What `cargo build --release --locked` checks before compiling anything: the
        # workspace and every declared target load from exactly these files, and
        # Cargo.lock needs no change. (`cargo metadata` would not notice a missing target.)
        r = subprocess.run(["cargo", "fetch", "--locked"], cwd=tmp, capture_output=True,
                           text=True)
    if r.returncode != 0:
        fail("cargo fetch --locked in the image's build context failed:\n" + r.stderr)
    print(f"  build context: {len(context)} files; the workspace resolves with --locked")


def cmd_systemd_config(_args):
    with open("deploy/systemd/kube-failover.service") as f:
        unit = f.read()
    m = re.search(r"^LoadCredential=([^:\n]+):(\S+)$", unit, re.M)
    if not m:
        fail("no LoadCredential=ID:DIRECTORY in the unit")
    cred_id = m.group(1)
    prefix = f"/run/credentials/kube-failover.service/{cred_id}_"
    with open("deploy/systemd/config.toml") as f:
        paths = re.findall(r'^kubeconfig\s*=\s*"([^"]+)"', f.read(), re.M)
    bad = [p for p in paths if not p.startswith(prefix)]
    if not paths or bad:
        fail(f"kubeconfig paths {bad or paths} are not under {prefix}*")
    exec_start = re.search(r"^ExecStart=.*--config (\S+)", unit, re.M).group(1)
    print(f"  {len(paths)} kubeconfigs under {prefix}*, config {exec_start}")


def cmd_alertmanager(_args):
    """amtool validates the example and resolves each alert's route: critical pages,
    warning goes to chat, other teams' alerts stay on the default receiver."""
    config = "deploy/prometheus/alertmanager.example.yml"
    r = subprocess.run(["amtool", "check-config", config], capture_output=True, text=True)
    if r.returncode != 0:
        fail(r.stdout + r.stderr)
    want = {"critical": "kube-failover-page", "warning": "kube-failover-chat"}
    with open(ALERTS) as f:
        rules = [r for g in yaml.safe_load(f)["groups"] for r in g["rules"] if "alert" in r]
    cases = [(r["alert"], r["labels"]["severity"], want.get(r["labels"]["severity"]))
             for r in rules]
    cases.append(("SomeoneElsesAlert", "critical", "default"))
    wrong = []
    for alert, severity, receiver in cases:
        r = subprocess.run(["amtool", "config", "routes", "test", f"--config.file={config}",
                            f"--verify.receivers={receiver}", f"alertname={alert}",
                            f"severity={severity}", "group=env0"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            wrong.append(f"{alert} ({severity}) -> {r.stdout.strip()}, not {receiver}")
    if wrong:
        fail("; ".join(wrong))
    print(f"  {len(cases)} alerts routed by severity as documented")


COMMANDS = {
    "prometheusrule": cmd_prometheusrule,
    "extract-rules": cmd_extract_rules,
    "alert-mutants": cmd_alert_mutants,
    "metric-names": cmd_metric_names,
    "dashboard": cmd_dashboard,
    "servicemonitor": cmd_servicemonitor,
    "networkpolicy": cmd_networkpolicy,
    "rbac-namespace": cmd_rbac_namespace,
    "image-contract": cmd_image_contract,
    "docker-context": cmd_docker_context,
    "systemd-config": cmd_systemd_config,
    "alertmanager": cmd_alertmanager,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        sys.exit(2)
    COMMANDS[sys.argv[1]](sys.argv[2:])

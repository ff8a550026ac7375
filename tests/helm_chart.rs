//! The Helm charts (deploy/helm/kube-failover and deploy/helm/kube-failover-target-rbac).
//!
//! Without Helm (plain `cargo test`): values.schema.json describes the configuration keys
//! the daemon knows, no more and no fewer, with every duration checked as one.
//!
//! With Helm (`--ignored`, run by ci/check-deploy.sh, which builds Helm with
//! ci/build-helm.sh and passes it as `HELM`, the kustomize base as JSON in
//! `KUBE_FAILOVER_RENDERED` and the Prometheus Operator's CRDs in
//! `KUBE_FAILOVER_OPERATOR_CRDS`): `helm lint --strict`; `helm template` over the values
//! files in the chart's ci/ folder, each rendering what its values say and a config the
//! daemon accepts; bad values failing with the value named; the chart's defaults equal
//! to the kustomize base in every field that matters; the rendered objects accepted by a
//! test-bed API server (server-side dry-run, strict field validation, the operator's real
//! CRDs); `helm install` and `helm upgrade` onto it, the install refusing a missing
//! kubeconfig Secret.

use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope};
use kube_failover::config::{ClusterConfig, DaemonConfig, GroupConfig, HttpCheckConfig};
use kube_failover_testbed::{Cluster, ClusterSpec};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_kube-failover");
const FIELD_MANAGER: &str = "kube-failover-helm-check";
/// Where the chart mounts the kubeconfig Secret.
const KUBECONFIG_DIR: &str = "/etc/kube-failover/kubeconfigs";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn chart(name: &str) -> PathBuf {
    repo().join("deploy/helm").join(name)
}

fn schema() -> Value {
    let path = chart("kube-failover").join("values.schema.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("values.schema.json"))
        .expect("values.schema.json is JSON")
}

/// The keys a type serializes (every field: Options as null).
fn keys_of(value: impl serde::Serialize) -> BTreeSet<String> {
    match serde_json::to_value(value).expect("serialize") {
        Value::Object(map) => map.keys().cloned().collect(),
        other => panic!("not a table: {other}"),
    }
}

/// The schema's properties of an object schema, each with whether it is a duration.
fn schema_keys(node: &Value, what: &str) -> BTreeSet<String> {
    assert_eq!(
        node["additionalProperties"],
        json!(false),
        "{what}: unknown keys must fail"
    );
    node["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{what}: no properties"))
        .keys()
        .cloned()
        .collect()
}

/// The durations among a type's keys: those whose default serializes as a humantime
/// string, or (Options, null by default) those set here.
fn assert_durations(node: &Value, value: impl serde::Serialize, optional: &[&str], what: &str) {
    let value = serde_json::to_value(value).expect("serialize");
    for (key, v) in value.as_object().expect("table") {
        let is_duration = optional.contains(&key.as_str())
            || v.as_str()
                .is_some_and(|s| humantime::parse_duration(s).is_ok());
        let schema = &node["properties"][key];
        assert_eq!(
            schema["$ref"] == json!("#/$defs/duration"),
            is_duration,
            "{what}.{key}: a duration in the daemon's config exactly when the schema checks one ({schema})"
        );
    }
}

#[test]
fn values_schema_follows_the_configuration_types() {
    let schema = schema();
    let config = &schema["properties"]["config"];
    let top: BTreeSet<String> = ["daemon", "notify", "coordination", "env0", "groups"]
        .map(String::from)
        .into();
    assert_eq!(schema_keys(config, "config"), top);

    let daemon = &config["properties"]["daemon"];
    assert_eq!(
        schema_keys(daemon, "config.daemon"),
        keys_of(DaemonConfig::default())
    );
    // watch_timeout is unset by default: it then follows the protocol.
    assert_durations(
        daemon,
        DaemonConfig::default(),
        &["watch_timeout"],
        "config.daemon",
    );
    let leader = &daemon["properties"]["leader"];
    assert_eq!(
        schema_keys(leader, "config.daemon.leader"),
        keys_of(DaemonConfig::default().leader)
    );
    assert_durations(
        leader,
        DaemonConfig::default().leader,
        &["lease_duration", "renew_deadline"],
        "config.daemon.leader",
    );

    // A group as the daemon reads it, every optional key at its default.
    let group: GroupConfig = serde_json::from_value(json!({
        "name": "g",
        "primary": {"namespace": "a"},
        "standby": {"namespace": "b"},
        "workloads": [{"name": "w"}],
    }))
    .expect("a minimal group");
    let g = &config["properties"]["groups"]["items"];
    assert_eq!(schema_keys(g, "config.groups[]"), keys_of(&group));
    for side in ["primary", "standby"] {
        assert_eq!(
            schema_keys(&g["properties"][side], side),
            keys_of(ClusterConfig {
                kubeconfig: None,
                context: None,
                namespace: "a".into()
            })
        );
    }
    assert_eq!(
        schema_keys(
            &g["properties"]["workloads"]["items"],
            "config.groups[].workloads[]"
        ),
        keys_of(&group.workloads[0])
    );
    let policy = &g["properties"]["policy"];
    assert_eq!(
        schema_keys(policy, "config.groups[].policy"),
        keys_of(&group.policy)
    );
    assert_durations(policy, &group.policy, &[], "config.groups[].policy");
    let observers = &policy["properties"]["observers"];
    assert_eq!(
        schema_keys(observers, "config.groups[].policy.observers"),
        keys_of(&group.policy.observers)
    );
    assert_durations(
        observers,
        &group.policy.observers,
        &["ttl"],
        "config.groups[].policy.observers",
    );
    let check = HttpCheckConfig {
        name: "c".into(),
        url: "http://x".into(),
        expected_status: 200,
        timeout: None,
    };
    let http = &g["properties"]["http_checks"]["items"];
    assert_eq!(
        schema_keys(http, "config.groups[].http_checks[]"),
        keys_of(&check)
    );
    assert_durations(http, &check, &["timeout"], "config.groups[].http_checks[]");

    // The duration pattern takes what the daemon takes and refuses what it refuses.
    let pattern = schema["$defs"]["duration"]["pattern"].as_str().unwrap();
    for good in ["5s", "500ms", "2m", "1h 30m", "1h30m", "10 min"] {
        assert!(humantime::parse_duration(good).is_ok(), "{good}");
        assert!(
            matches_duration(pattern, good),
            "{good} refused by {pattern}"
        );
    }
    for bad in ["5", "5x", "five seconds", "-5s", "5s,", ""] {
        assert!(humantime::parse_duration(bad).is_err(), "{bad}");
        assert!(
            !matches_duration(pattern, bad),
            "{bad} accepted by {pattern}"
        );
    }
}

/// The schema's duration pattern, applied by hand: it is `^\s*(N\s*UNIT\s*)+$` with the
/// units listed in it (no regex engine among the test dependencies).
fn matches_duration(pattern: &str, s: &str) -> bool {
    let units: Vec<&str> = pattern
        .split_once("\\s*(")
        .and_then(|(_, rest)| rest.split_once(")\\s*)+$"))
        .map(|(list, _)| list.split('|').collect())
        .unwrap_or_else(|| panic!("unexpected pattern {pattern}"));
    let mut rest = s.trim_start();
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return false;
        }
        rest = rest[digits..].trim_start();
        // The regex tries the alternatives in order; a longer unit listed first wins.
        let Some(unit) = units.iter().find(|u| rest.starts_with(**u)) else {
            return false;
        };
        rest = rest[unit.len()..].trim_start();
    }
    true
}

// --- with Helm ---------------------------------------------------------------------------

fn helm_bin() -> PathBuf {
    std::env::var_os("HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("HELM is not set: run ci/check-deploy.sh (ci/build-helm.sh builds it)")
        })
}

/// Helm with its own empty config, cache and data folders (nothing of the user's).
struct Helm {
    home: tempfile::TempDir,
    kubeconfig: Option<PathBuf>,
}

impl Helm {
    fn new() -> Helm {
        Helm {
            home: tempfile::tempdir().expect("tempdir"),
            kubeconfig: None,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(helm_bin());
        cmd.args(args)
            .env("HELM_CONFIG_HOME", self.home.path().join("config"))
            .env("HELM_CACHE_HOME", self.home.path().join("cache"))
            .env("HELM_DATA_HOME", self.home.path().join("data"))
            .env_remove("KUBECONFIG");
        match &self.kubeconfig {
            Some(k) => cmd.arg("--kubeconfig").arg(k),
            // Without a cluster: lookups find nothing (see templates/validate.yaml).
            None => cmd.args(["--kubeconfig", "/dev/null"]),
        };
        cmd.output().expect("run helm")
    }

    /// `helm template kube-failover <chart> -n kube-failover` with these arguments: the
    /// documents as JSON, or Helm's error.
    fn template(&self, chart_name: &str, args: &[&str]) -> Result<Vec<Value>, String> {
        let chart = chart(chart_name);
        let mut all = vec![
            "template",
            "kube-failover",
            chart.to_str().unwrap(),
            "--namespace",
            "kube-failover",
        ];
        all.extend_from_slice(args);
        let out = self.run(&all);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(yaml_docs(&String::from_utf8_lossy(&out.stdout)))
    }
}

/// The documents of a YAML stream, as JSON (PyYAML: ci/check-deploy.sh installs it).
fn yaml_docs(text: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("docs.yaml");
    std::fs::write(&path, text).expect("write");
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))",
        ])
        .arg(&path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} among {:?}", kinds(docs)))
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .map(|d| {
            format!(
                "{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// The config.toml the chart renders.
fn config_toml(docs: &[Value], name: &str) -> toml::Table {
    let text = find(docs, "ConfigMap", name)["data"]["config.toml"]
        .as_str()
        .expect("config.toml")
        .to_string();
    text.parse()
        .unwrap_or_else(|e| panic!("config.toml: {e}\n{text}"))
}

/// `kube-failover check-config` on a rendered config, its kubeconfigs replaced by
/// placeholders (the chart mounts the real ones): Ok with the resolved config, or the
/// daemon's complaint.
fn check_config(config: &toml::Table) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml::to_string(config).unwrap()).expect("write");
    let mut cmd = Command::new(BIN);
    cmd.arg("check-config").arg("--config").arg(&path);
    for (key, _) in std::env::vars() {
        if key.starts_with("KUBE_FAILOVER") {
            cmd.env_remove(key);
        }
    }
    let groups = config["groups"].as_array().expect("groups");
    for (i, group) in groups.iter().enumerate() {
        for side in ["primary", "standby"] {
            let kc = dir.path().join(format!("{i}-{side}.kubeconfig"));
            std::fs::write(
                &kc,
                format!(
                    "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"https://{side}-{i}.invalid:6443\"}}}}]\nusers: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: c, context: {{cluster: c, user: u}}}}]\ncurrent-context: c\n"
                ),
            )
            .expect("kubeconfig");
            assert!(
                group[side]["kubeconfig"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(KUBECONFIG_DIR)),
                "groups[{i}].{side}.kubeconfig is under the Secret's mount"
            );
            cmd.env(
                format!(
                    "KUBE_FAILOVER__GROUPS__{i}__{}__KUBECONFIG",
                    side.to_uppercase()
                ),
                &kc,
            );
        }
    }
    let out = cmd.output().expect("check-config");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn values_file(name: &str) -> String {
    chart("kube-failover")
        .join("ci")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
#[ignore = "needs Helm: ci/check-deploy.sh runs it"]
fn charts_lint_render_their_values_and_refuse_bad_ones() {
    let helm = Helm::new();
    for name in ["kube-failover", "kube-failover-target-rbac"] {
        let out = helm.run(&["lint", "--strict", chart(name).to_str().unwrap()]);
        assert!(
            out.status.success(),
            "helm lint --strict {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Defaults: the kustomize base's objects, config and alert rules.
    let docs = helm
        .template("kube-failover", &[])
        .expect("defaults render");
    let deployment = find(&docs, "Deployment", "kube-failover");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let config = config_toml(&docs, "kube-failover-config");
    check_config(&config).expect("the default config is valid");
    let alerts = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yaml")).unwrap();
    let rules = yaml_docs(&alerts);
    assert_eq!(
        find(&docs, "PrometheusRule", "kube-failover")["spec"],
        rules[0],
        "the PrometheusRule carries deploy/prometheus/alerts.yaml"
    );
    let dashboard = find(&docs, "ConfigMap", "kube-failover-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value =
        serde_json::from_str(dashboard["data"]["kube-failover.json"].as_str().unwrap())
            .expect("the dashboard is JSON");
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/kube-failover.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        json, file,
        "the dashboard is deploy/grafana/kube-failover.json"
    );

    // Five replicas and two groups: the Deployment, the quorum and both groups follow.
    let docs = helm
        .template(
            "kube-failover",
            &["-f", &values_file("replicas-and-groups-values.yaml")],
        )
        .expect("renders");
    assert_eq!(
        find(&docs, "Deployment", "kube-failover")["spec"]["replicas"],
        5
    );
    let config = config_toml(&docs, "kube-failover-config");
    let groups = config["groups"].as_array().unwrap();
    let names: Vec<&str> = groups.iter().map(|g| g["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["env0-eu", "env0-us"]);
    assert_eq!(groups[1]["standby"]["namespace"].as_str(), Some("env0-us"));
    assert_eq!(
        groups[0]["policy"]["observers"]["quorum"].as_integer(),
        Some(3),
        "integers stay integers: {config}"
    );
    assert_eq!(config["daemon"]["mode"].as_str(), Some("auto"));
    assert_eq!(config["daemon"]["probe_interval"].as_str(), Some("2s"));
    let resolved = check_config(&config).expect("two groups are valid");
    assert!(resolved.contains("env0-us"), "{resolved}");
    assert!(
        !docs.iter().any(|d| d["kind"] == "PodDisruptionBudget"),
        "the values turn the PDB off"
    );
    let np = find(&docs, "NetworkPolicy", "kube-failover");
    let peers: Vec<&Value> = np["spec"]["ingress"][0]["from"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(peers.len(), 3, "two namespaces and an ipBlock: {peers:?}");

    // The kubeconfigs from files: the chart's Secret, mounted, the pods rolled on change.
    let docs = helm
        .template(
            "kube-failover",
            &["-f", &values_file("kubeconfig-files-values.yaml")],
        )
        .expect("renders");
    let secret = find(&docs, "Secret", "kube-failover-kubeconfigs");
    let keys: BTreeSet<&str> = secret["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["primary", "standby"]));
    let checksum = |docs: &[Value]| {
        find(docs, "Deployment", "kube-failover")["spec"]["template"]["metadata"]["annotations"]
            ["checksum/kubeconfigs"]
            .clone()
    };
    let other = helm
        .template(
            "kube-failover",
            &[
                "-f",
                &values_file("kubeconfig-files-values.yaml"),
                "--set",
                "kubeconfigs.files.standby=rotated",
            ],
        )
        .expect("renders");
    assert_ne!(
        checksum(&docs),
        checksum(&other),
        "a new kubeconfig rolls the pods"
    );

    // A config of the user's: no ConfigMap of the chart, the user's Secret mounted.
    let docs = helm
        .template(
            "kube-failover",
            &["-f", &values_file("existing-config-values.yaml")],
        )
        .expect("renders");
    assert!(!kinds(&docs).contains("ConfigMap/kube-failover-config"));
    let volumes =
        &find(&docs, "Deployment", "kube-failover")["spec"]["template"]["spec"]["volumes"];
    assert_eq!(
        volumes[0]["secret"]["secretName"],
        "my-kube-failover-config"
    );
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "ServiceMonitor" || d["kind"] == "PrometheusRule")
    );

    // Bad values fail, naming the value. (A values file each: `--set` on a list
    // element replaces the whole list.)
    let group = |primary_kubeconfig: &str, cooldown: &str, quorum: &str| {
        format!(
            "config:\n  groups:\n    - name: env0\n      primary: {{kubeconfig: {primary_kubeconfig}, namespace: a}}\n      standby: {{kubeconfig: /etc/kube-failover/kubeconfigs/standby, namespace: a}}\n      workloads: [{{selector: env0=agent-trigger}}]\n      policy: {{cooldown: {cooldown}, observers: {{quorum: {quorum}}}}}\n"
        )
    };
    let ok = "/etc/kube-failover/kubeconfigs/primary";
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, (values, named)) in [
        ("replicas: 3\n".to_string(), "replicas"),
        (
            "config:\n  daemon: {probe_intervall: 5s}\n".into(),
            "probe_intervall",
        ),
        (
            "config:\n  daemon: {probe_interval: 5x}\n".into(),
            "probe_interval",
        ),
        ("config:\n  daemon: {mode: manual}\n".into(), "mode"),
        (group(ok, "ten minutes", "2"), "cooldown"),
        (group(ok, "10m", "2.5"), "quorum"),
        (
            group("/var/run/kube/config", "10m", "2"),
            "config.groups[0].primary.kubeconfig",
        ),
        (group("", "10m", "2"), "/config/groups/0/primary/kubeconfig"),
        ("config:\n  groups: []\n".into(), "groups"),
        (
            "existingConfig: {configMap: a, secret: b}\n".into(),
            "existingConfig",
        ),
        (
            "kubeconfigs: {files: {primary: x}}\n".into(),
            "kubeconfigs.files.standby",
        ),
        ("image: {pullPolicy: Sometimes}\n".into(), "pullPolicy"),
        ("serviceMonitor: {interval: 30}\n".into(), "interval"),
    ]
    .into_iter()
    .enumerate()
    {
        let path = dir.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&path, &values).expect("write");
        let err = helm
            .template("kube-failover", &["-f", path.to_str().unwrap()])
            .expect_err(&format!("refused: {values}"));
        let err = err
            .lines()
            .filter(|l| !l.contains("symbolic link"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            err.contains(named),
            "{values}: the error names {named}: {err}"
        );
    }

    // The target clusters' chart: role.yaml's rules as they are, the binding's subject in
    // the release's namespace, the optional Roles from their files.
    let docs = helm
        .template(
            "kube-failover-target-rbac",
            &[
                "--namespace",
                "env0-agent",
                "--set",
                "clearStaleLocks.enabled=true,coordination.namespace=kube-failover,mirror.write=true",
                "--set",
                "guard.enabled=true,guard.subjects[0].kind=ServiceAccount,guard.subjects[0].name=guard",
                "--set",
                "clusterWatch.enabled=true",
            ],
        )
        .expect("renders");
    let file = |p: &str| {
        yaml_docs(
            &std::fs::read_to_string(repo().join("deploy/kubernetes/target-rbac").join(p)).unwrap(),
        )
    };
    for (name, source) in [
        ("kube-failover", file("role.yaml")[0].clone()),
        (
            "kube-failover-clear-stale-locks",
            file("clear-stale-locks/role.yaml")[0].clone(),
        ),
        (
            "kube-failover-coordination",
            file("coordination/role.yaml")[0].clone(),
        ),
        (
            "kube-failover-mirror-write",
            file("mirror-role.yaml")[1].clone(),
        ),
        ("kube-failover-guard", file("guard-role.yaml")[0].clone()),
    ] {
        assert_eq!(
            find(&docs, "Role", name)["rules"],
            source["rules"],
            "Role {name}"
        );
        let binding = find(&docs, "RoleBinding", name);
        assert_eq!(binding["roleRef"]["name"], name);
    }
    let binding = find(&docs, "RoleBinding", "kube-failover");
    assert_eq!(binding["metadata"]["namespace"], "env0-agent");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "kube-failover", "namespace": "env0-agent"}])
    );
    assert_eq!(
        find(&docs, "Role", "kube-failover-coordination")["metadata"]["namespace"],
        "kube-failover"
    );
    assert_eq!(
        find(&docs, "RoleBinding", "kube-failover-guard")["subjects"],
        json!([{"kind": "ServiceAccount", "name": "guard", "namespace": "env0-agent"}])
    );
    // The cluster-wide watches' ClusterRole, named after the release's namespace (one
    // per agent namespace may be installed), with the rules of cluster-watch/.
    let cluster_watch = "kube-failover-cluster-watch-env0-agent";
    assert_eq!(
        find(&docs, "ClusterRole", cluster_watch)["rules"],
        file("cluster-watch/clusterrole.yaml")[0]["rules"]
    );
    let binding = find(&docs, "ClusterRoleBinding", cluster_watch);
    assert_eq!(binding["roleRef"]["name"], cluster_watch);
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "kube-failover", "namespace": "env0-agent"}])
    );
    assert!(!kinds(&docs).contains("Role/kube-failover-mirror-read"));
    find(&docs, "Secret", "kube-failover-token");
    let err = helm
        .template("kube-failover-target-rbac", &["--set", "mirror.reed=true"])
        .expect_err("unknown key");
    assert!(err.contains("reed"), "{err}");

    // The guard's config beside the agents: the ConfigMap and Secret the kustomize
    // component mounts (same names, same keys), a guard.toml the guard accepts.
    let component =
        std::fs::read_to_string(repo().join("deploy/kubernetes/guard/install/pod.yaml"))
            .expect("the components' pod.yaml");
    for (name, key) in [
        ("kube-failover-guard", "guard.toml"),
        ("kube-failover-guard-standby", "kubeconfig"),
    ] {
        assert!(
            component.contains(&format!("name: {name}\n"))
                && component.contains(&format!("key: {key}\n")),
            "the component mounts {name} (key {key})"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("guard.kubeconfig");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").expect("write");
    for side in ["primary", "standby"] {
        let docs = helm
            .template(
                "kube-failover-target-rbac",
                &[
                    "--namespace",
                    "env0-agent",
                    "--set",
                    &format!("guard.beside.enabled=true,guard.beside.side={side}"),
                    "--set",
                    "guard.beside.settings.stop_grace=20s,guard.beside.standby.namespace=failover",
                    "--set-file",
                    &format!("guard.beside.standby.kubeconfig={}", kubeconfig.display()),
                ],
            )
            .expect("renders");
        let text = find(&docs, "ConfigMap", "kube-failover-guard")["data"]["guard.toml"]
            .as_str()
            .expect("guard.toml")
            .to_string();
        let path = dir.path().join("guard.toml");
        std::fs::write(&path, &text).expect("write");
        let config = kube_failover::guard::config::GuardConfig::load(&path)
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(config.side.as_str(), side);
        assert_eq!(config.group, "env0");
        assert_eq!(config.stop_grace, std::time::Duration::from_secs(20));
        assert_eq!(config.standby.namespace, "failover");
        assert_eq!(config.standby.context.as_deref(), Some("standby"));
        assert_eq!(
            config.standby.kubeconfig.as_deref(),
            Some(Path::new("/etc/kube-failover-guard/standby.kubeconfig"))
        );
        let secret = find(&docs, "Secret", "kube-failover-guard-standby");
        assert_eq!(secret["metadata"]["namespace"], "env0-agent");
        assert!(secret["data"]["kubeconfig"].is_string());
    }
    // Without the kubeconfig value: the ConfigMap only (the Secret is the user's).
    let docs = helm
        .template(
            "kube-failover-target-rbac",
            &["--set", "guard.beside.enabled=true"],
        )
        .expect("renders");
    find(&docs, "ConfigMap", "kube-failover-guard");
    assert!(!kinds(&docs).contains("Secret/kube-failover-guard-standby"));
    for (bad, named) in [
        ("guard.beside.side=both", "side"),
        ("guard.beside.settings.side=standby", "side"),
        ("guard.beside.group=Not_A_Label", "group"),
    ] {
        let err = helm
            .template(
                "kube-failover-target-rbac",
                &["--set", "guard.beside.enabled=true", "--set", bad],
            )
            .expect_err(bad);
        assert!(err.contains(named), "{bad}: {err}");
    }
}

/// Labels Helm adds and kustomize does not (and the other way round), the image, the
/// pods' config checksums, the config's content hash and the whitespace in alert
/// expressions: what may differ between the chart's defaults and the kustomize base.
fn normalize(doc: &Value) -> Value {
    fn walk(v: &Value, key: &str) -> Value {
        match v {
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (k, v) in map {
                    // Label sets: only the name label counts (kustomize selects on it;
                    // Helm adds app.kubernetes.io/instance to selectors).
                    if matches!(key, "matchLabels" | "selector" | "labels") {
                        if k == "app.kubernetes.io/name" {
                            out.insert(k.clone(), v.clone());
                        }
                        continue;
                    }
                    if k == "image"
                        || (key == "metadata" && matches!(k.as_str(), "annotations" | "namespace"))
                    {
                        continue;
                    }
                    out.insert(k.clone(), walk(v, k));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(|i| walk(i, key)).collect()),
            Value::String(s) if key == "name" && s.starts_with("kube-failover-config-") => {
                json!("kube-failover-config")
            }
            // kustomize writes a folded (`>-`) expression with more-indented lines back
            // with an extra line break; PromQL does not care about whitespace.
            Value::String(s) if key == "expr" => {
                json!(s.split_whitespace().collect::<Vec<_>>().join(" "))
            }
            other => other.clone(),
        }
    }
    walk(doc, "")
}

#[test]
#[ignore = "needs Helm and the kustomize base: ci/check-deploy.sh runs it"]
fn chart_defaults_equal_the_kustomize_base() {
    let dir = std::env::var_os("KUBE_FAILOVER_RENDERED")
        .expect("KUBE_FAILOVER_RENDERED: run ci/check-deploy.sh, which renders the base");
    let base: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(Path::new(&dir).join("base.json")).expect("base.json"),
    )
    .expect("JSON");
    let chart = Helm::new()
        .template("kube-failover", &[])
        .expect("defaults render");

    let base_kinds: BTreeSet<String> = kinds(&base)
        .into_iter()
        .filter(|k| !k.starts_with("Namespace/"))
        .map(|k| {
            if k.starts_with("ConfigMap/kube-failover-config-") {
                "ConfigMap/kube-failover-config".into()
            } else {
                k
            }
        })
        .collect();
    let mut chart_kinds = kinds(&chart);
    // Only the chart has the dashboard (kustomize users import the JSON); only the base
    // creates its Namespace (Helm installs into one: --create-namespace).
    assert!(chart_kinds.remove("ConfigMap/kube-failover-dashboard"));
    assert_eq!(chart_kinds, base_kinds, "the same objects");

    for kind_name in &base_kinds {
        let (kind, name) = kind_name.split_once('/').unwrap();
        let ours = find(&chart, kind, name);
        let theirs = base
            .iter()
            .find(|d| d["kind"] == kind && normalize(d)["metadata"]["name"] == name)
            .unwrap();
        if kind == "ConfigMap" {
            let a = config_toml(&chart, name);
            let b: toml::Table = theirs["data"]["config.toml"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(
                a, b,
                "config.toml: the chart's values are the base's config.toml"
            );
            continue;
        }
        assert_eq!(
            normalize(ours),
            normalize(theirs),
            "{kind_name}: the chart's defaults differ from the kustomize base"
        );
    }
}

/// Server-side apply with dryRun and strict field validation: what the API server would
/// store, or its refusal.
async fn dry_run_apply(client: &Client, discovery: &Discovery, doc: &Value) {
    let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", doc["apiVersion"].as_str().unwrap()),
    };
    let gvk = GroupVersionKind::gvk(group, version, doc["kind"].as_str().unwrap());
    let (ar, caps) = discovery
        .resolve_gvk(&gvk)
        .unwrap_or_else(|| panic!("the API server does not serve {gvk:?}"));
    let name = doc["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Cluster => Api::all_with(client.clone(), &ar),
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            doc["metadata"]["namespace"].as_str().expect("a namespace"),
            &ar,
        ),
    };
    let mut params = PatchParams::apply(FIELD_MANAGER).validation_strict();
    params.dry_run = true;
    api.patch(name, &params, &Patch::Apply(doc))
        .await
        .unwrap_or_else(|e| panic!("server-side dry-run of {} {name}: {e}", doc["kind"]));
}

/// Creates these objects (CRDs, Namespaces, Secrets) from YAML text.
async fn create_all(client: &Client, text: &str) {
    // Discovery right after the API server (or a CRD) came up can meet a group not
    // served yet (404): asked again for a while before it counts.
    let mut tries = 0;
    let discovery = loop {
        match Discovery::new(client.clone()).run().await {
            Ok(d) => break d,
            Err(e) if tries < 30 => {
                tries += 1;
                eprintln!("discovery not ready yet ({e}); again in 1s");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => panic!("discovery: {e}"),
        }
    };
    for doc in yaml_docs(text) {
        let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", doc["apiVersion"].as_str().unwrap()),
        };
        let gvk = GroupVersionKind::gvk(group, version, doc["kind"].as_str().unwrap());
        let (ar, caps) = discovery.resolve_gvk(&gvk).expect("served");
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Cluster => Api::all_with(client.clone(), &ar),
            Scope::Namespaced => Api::namespaced_with(
                client.clone(),
                doc["metadata"]["namespace"].as_str().unwrap(),
                &ar,
            ),
        };
        let obj: DynamicObject = serde_json::from_value(doc).expect("object");
        api.create(&PostParams::default(), &obj)
            .await
            .expect("create");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Helm and the test bed: ci/check-deploy.sh runs it"]
async fn charts_install_and_upgrade_on_a_test_bed_api_server() {
    let crds = std::env::var_os("KUBE_FAILOVER_OPERATOR_CRDS")
        .map(PathBuf::from)
        .expect("KUBE_FAILOVER_OPERATOR_CRDS: the Prometheus Operator's CRD folder (ci/check-deploy.sh)");
    let cluster = Cluster::start_with(
        ClusterSpec::new("helm")
            .namespace("testbed-agent")
            .wait_ready(false),
    )
    .await
    .expect("start a test-bed cluster");
    let client = cluster.client();

    // The Prometheus Operator's own CRDs, so its objects are validated as it would.
    for file in [
        "monitoring.coreos.com_servicemonitors.yaml",
        "monitoring.coreos.com_prometheusrules.yaml",
    ] {
        let text = std::fs::read_to_string(crds.join(file)).expect("CRD file");
        create_all(&client, &text).await;
    }
    create_all(
        &client,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-failover}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: env0-agent}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: grafana}\n",
    )
    .await;
    // The CRDs take a moment to be served.
    let discovery = loop {
        let d = Discovery::new(client.clone())
            .run()
            .await
            .expect("discovery");
        let served = |kind| {
            d.resolve_gvk(&GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind))
                .is_some()
        };
        if served("ServiceMonitor") && served("PrometheusRule") {
            break d;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };

    // Every values file renders objects the API server accepts as they are.
    let helm = Helm::new();
    for values in [
        None,
        Some("replicas-and-groups-values.yaml"),
        Some("kubeconfig-files-values.yaml"),
        Some("existing-config-values.yaml"),
    ] {
        let args: Vec<String> = values
            .map(|v| vec!["-f".to_string(), values_file(v)])
            .unwrap_or_default();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        for doc in helm.template("kube-failover", &args).expect("renders") {
            dry_run_apply(&client, &discovery, &doc).await;
        }
    }
    for doc in helm
        .template(
            "kube-failover-target-rbac",
            &["--namespace", "env0-agent", "--set", "clearStaleLocks.enabled=true,mirror.read=true,mirror.write=true,mirror.prune=true,coordination.namespace=kube-failover"],
        )
        .expect("renders")
    {
        dry_run_apply(&client, &discovery, &doc).await;
    }

    // helm install against the cluster: refused while the kubeconfig Secret is missing.
    let helm = Helm {
        kubeconfig: Some(cluster.admin_kubeconfig().to_path_buf()),
        ..Helm::new()
    };
    let chart_path = chart("kube-failover");
    let chart_dir = chart_path.to_str().unwrap();
    let install = |extra: &[&str]| {
        let mut args = vec!["install", "kube-failover", chart_dir, "-n", "kube-failover"];
        args.extend_from_slice(extra);
        helm.run(&args)
    };
    let out = install(&[]);
    assert!(
        !out.status.success(),
        "installed without the kubeconfig Secret"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kubeconfigs.existingSecret") && err.contains("kube-failover-kubeconfigs"),
        "{err}"
    );
    create_all(
        &client,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: kube-failover-kubeconfigs, namespace: kube-failover}\nstringData: {primary: x}\n",
    )
    .await;
    let out = install(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "installed with a Secret lacking the key standby"
    );
    assert!(err.contains("\"standby\""), "{err}");
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "kube-failover")
        .patch(
            "kube-failover-kubeconfigs",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"standby": "y"}})),
        )
        .await
        .expect("add the key");
    let out = install(&[]);
    assert!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let notes = String::from_utf8_lossy(&out.stdout);
    assert!(
        notes.contains("port-forward svc/kube-failover 9464"),
        "{notes}"
    );
    assert!(notes.contains("kube-failover status"), "{notes}");

    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "kube-failover");
    let replicas = |d: k8s_openapi::api::apps::v1::Deployment| d.spec.and_then(|s| s.replicas);
    assert_eq!(
        replicas(deployments.get("kube-failover").await.unwrap()),
        Some(3)
    );
    Api::<DynamicObject>::namespaced_with(
        client.clone(),
        "kube-failover",
        &discovery
            .resolve_gvk(&GroupVersionKind::gvk(
                "monitoring.coreos.com",
                "v1",
                "PrometheusRule",
            ))
            .unwrap()
            .0,
    )
    .get("kube-failover")
    .await
    .expect("the PrometheusRule was installed");

    // helm upgrade: five replicas and two groups, a new config rolls the pod template.
    let before = deployments.get("kube-failover").await.unwrap();
    let out = helm.run(&[
        "upgrade",
        "kube-failover",
        chart_dir,
        "-n",
        "kube-failover",
        "-f",
        &values_file("replicas-and-groups-values.yaml"),
    ]);
    // That values file reads keys eu-primary, …: the Secret lacks them.
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"eu-primary\""));
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), "kube-failover")
        .patch(
            "kube-failover-kubeconfigs",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"eu-primary": "a", "eu-standby": "b", "us-primary": "c", "us-standby": "d"}})),
        )
        .await
        .expect("add the keys");
    let out = helm.run(&[
        "upgrade",
        "kube-failover",
        chart_dir,
        "-n",
        "kube-failover",
        "-f",
        &values_file("replicas-and-groups-values.yaml"),
    ]);
    assert!(
        out.status.success(),
        "helm upgrade: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = deployments.get("kube-failover").await.unwrap();
    assert_eq!(replicas(after.clone()), Some(5));
    let checksum = |d: &k8s_openapi::api::apps::v1::Deployment| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["checksum/config"]
            .clone()
    };
    assert_ne!(
        checksum(&before),
        checksum(&after),
        "the new config rolls the pods"
    );
    let cm =
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), "kube-failover")
            .get("kube-failover-config")
            .await
            .unwrap();
    let text = &cm.data.unwrap()["config.toml"];
    assert!(text.contains("env0-us"), "{text}");
    assert!(
        Api::<DynamicObject>::namespaced_with(
            client.clone(),
            "kube-failover",
            &discovery
                .resolve_gvk(&GroupVersionKind::gvk(
                    "policy",
                    "v1",
                    "PodDisruptionBudget"
                ))
                .unwrap()
                .0,
        )
        .get_opt("kube-failover")
        .await
        .unwrap()
        .is_none(),
        "the upgrade removed the PDB the values turn off"
    );

    // The target-rbac chart in the agent namespace of the same API server.
    let out = helm.run(&[
        "install",
        "kube-failover-rbac",
        chart("kube-failover-target-rbac").to_str().unwrap(),
        "-n",
        "env0-agent",
    ]);
    assert!(
        out.status.success(),
        "helm install target-rbac: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), "env0-agent")
        .get("kube-failover")
        .await
        .expect("the RoleBinding was installed");
    drop(cluster);
}

#[test]
fn charts_version_with_the_crate() {
    // A release tag is one version for the binary, the image and both charts (README.md,
    // "Releases"); the image tag the chart defaults to is its appVersion.
    for name in ["kube-failover", "kube-failover-target-rbac"] {
        let text = std::fs::read_to_string(chart(name).join("Chart.yaml")).expect("Chart.yaml");
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}: ")))
                .map(|v| v.trim().trim_matches('"').to_string())
                .unwrap_or_else(|| panic!("{name}: no {key}"))
        };
        assert_eq!(
            field("version"),
            env!("CARGO_PKG_VERSION"),
            "{name} version"
        );
        assert_eq!(
            field("appVersion"),
            env!("CARGO_PKG_VERSION"),
            "{name} appVersion"
        );
    }
}

//! The shipped Kubernetes manifests (deploy/kubernetes/base, the example overlay and
//! target-rbac) against a real API server from the test bed: every object is applied with
//! strict field validation (the NetworkPolicy is read back as written), the Pod passes the
//! namespace's "restricted" Pod Security admission, and the target-cluster RBAC grants the
//! daemon's ServiceAccount exactly role.yaml in the agent namespace and nothing else.
//!
//! The guard's component (deploy/kubernetes/guard) over a rendered env0 agent
//! (tests/fixtures/env0-agent/rendered.yaml): the agent's command wrapped and nothing else
//! of it changed, the init container, volumes and config, and the Pods admitted under
//! "restricted" on the same API server. Its sidecar form (deploy/kubernetes/guard/sidecar,
//! guard-primary-sidecar.json): a guard container after the agent's, the agent's probes
//! asking its verdict, and nothing else of the agent changed, admitted the same way.
//!
//! The manifests are rendered by `kustomize build` in ci/check-deploy.sh, which passes
//! them as JSON in the folder named by `KUBE_FAILOVER_RENDERED` (base.json, example.json,
//! target-rbac.json; env0-agent.json, the fixture, and guard-primary.json and
//! guard-standby.json, the fixture through deploy/kubernetes/guard/post-render.sh) and
//! runs these tests with `--ignored`: plain `cargo test` has no kustomize to render them
//! with. The shipped guard configs are checked by plain `cargo test`.

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope};
use kube_failover_testbed::{Cluster, ClusterSpec};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const RENDERED_ENV: &str = "KUBE_FAILOVER_RENDERED";
const FIELD_MANAGER: &str = "kube-failover-deploy-check";
/// The namespace the target-rbac kustomization puts everything in.
const AGENT_NS: &str = "env0-agent";
/// The namespace of the base.
const DAEMON_NS: &str = "kube-failover";

fn rendered(name: &str) -> Vec<Value> {
    let dir = std::env::var_os(RENDERED_ENV).unwrap_or_else(|| {
        panic!("{RENDERED_ENV} is not set: run ci/check-deploy.sh, which renders the manifests")
    });
    let path = PathBuf::from(dir).join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn kind_name(doc: &Value) -> String {
    format!(
        "{}/{}",
        doc["kind"].as_str().unwrap(),
        doc["metadata"]["name"].as_str().unwrap()
    )
}

/// Server-side applies every document (Namespaces first) with strict field validation, so
/// an unknown or misspelt field fails here, not silently in a user's cluster. Objects of
/// API groups the test bed does not serve (the Prometheus Operator's CRDs) are returned
/// instead of applied.
async fn apply_all(client: &Client, discovery: &Discovery, docs: &[Value]) -> BTreeSet<String> {
    let mut docs: Vec<&Value> = docs.iter().collect();
    docs.sort_by_key(|d| d["kind"] != "Namespace");
    let mut unserved = BTreeSet::new();
    for doc in docs {
        let (group, version) = match doc["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", doc["apiVersion"].as_str().unwrap()),
        };
        let gvk = GroupVersionKind::gvk(group, version, doc["kind"].as_str().unwrap());
        let Some((ar, caps)) = discovery.resolve_gvk(&gvk) else {
            unserved.insert(kind_name(doc));
            continue;
        };
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Cluster => Api::all_with(client.clone(), &ar),
            Scope::Namespaced => {
                let ns = doc["metadata"]["namespace"].as_str().unwrap_or_else(|| {
                    panic!("{} has no namespace after kustomize", kind_name(doc))
                });
                Api::namespaced_with(client.clone(), ns, &ar)
            }
        };
        let name = doc["metadata"]["name"].as_str().unwrap();
        let params = PatchParams::apply(FIELD_MANAGER).validation_strict();
        api.patch(name, &params, &Patch::Apply(doc))
            .await
            .unwrap_or_else(|e| panic!("server-side apply of {} failed: {e}", kind_name(doc)));
    }
    unserved
}

/// A Pod made from the Deployment's template, created with dryRun in the Deployment's
/// namespace: admission (Pod Security "restricted" included) runs, nothing is stored.
async fn dry_run_pod(
    client: &Client,
    deployment: &Value,
    mutate: impl FnOnce(&mut Value),
) -> kube::Result<Pod> {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "kube-failover-admission-check",
            "labels": deployment["spec"]["template"]["metadata"]["labels"],
        },
        "spec": deployment["spec"]["template"]["spec"],
    });
    mutate(&mut pod);
    let pod: Pod = serde_json::from_value(pod).expect("the template is a valid Pod spec");
    let ns = deployment["metadata"]["namespace"].as_str().unwrap();
    let params = PostParams {
        dry_run: true,
        field_manager: Some(FIELD_MANAGER.into()),
    };
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&params, &pod)
        .await
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let hits: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(hits.len(), 1, "expected one {kind}, found {}", hits.len());
    hits[0]
}

/// Whether the API server's authorizer lets `user` (with `groups`) do `attrs`.
async fn allowed(client: &Client, user: &str, groups: &[String], attrs: Value) -> bool {
    let mut spec = json!({ "user": user, "groups": groups });
    if attrs.get("path").is_some() {
        spec["nonResourceAttributes"] = attrs;
    } else {
        spec["resourceAttributes"] = attrs;
    }
    let review: SubjectAccessReview =
        serde_json::from_value(json!({ "spec": spec })).expect("a SubjectAccessReview");
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("create a SubjectAccessReview");
    answer.status.expect("a review status").allowed
}

fn service_account(ns: &str, name: &str) -> (String, Vec<String>) {
    (
        format!("system:serviceaccount:{ns}:{name}"),
        vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".into(),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "run by ci/check-deploy.sh, which renders the manifests with kustomize"]
async fn shipped_manifests_apply_admit_and_grant_exactly_the_role() {
    let base = rendered("base.json");
    let example = rendered("example.json");
    let target_rbac = rendered("target-rbac.json");

    // The test bed's own agent namespace is moved aside so that env0-agent, where
    // target-rbac goes, starts empty of RBAC.
    let cluster = Cluster::start_with(
        ClusterSpec::new("deploy")
            .namespace("testbed-agent")
            .wait_ready(false),
    )
    .await
    .expect("start a test-bed cluster");
    let client = cluster.client();
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("API discovery");

    // 1. The base, as `kubectl apply -k deploy/kubernetes/base` would send it.
    let unserved = apply_all(&client, &discovery, &base).await;
    assert_eq!(
        unserved,
        BTreeSet::from([
            "PrometheusRule/kube-failover".to_string(),
            "ServiceMonitor/kube-failover".to_string()
        ]),
        "only the Prometheus Operator's objects may be left out (promtool checks the rules)"
    );

    // The NetworkPolicy is stored as written: the daemon's Pod takes ingress only from
    // the monitoring namespace, on the admin port.
    let np = Api::<NetworkPolicy>::namespaced(client.clone(), DAEMON_NS)
        .get("kube-failover")
        .await
        .expect("the NetworkPolicy was applied");
    let spec = np.spec.expect("a NetworkPolicy spec");
    let pod_labels = &find(&base, "Deployment")["spec"]["template"]["metadata"]["labels"];
    let selector = spec.pod_selector.clone().unwrap_or_default();
    let selector = selector.match_labels.unwrap_or_default();
    assert!(!selector.is_empty(), "the NetworkPolicy selects by label");
    for (k, v) in selector {
        assert_eq!(pod_labels[&k], json!(v), "podSelector {k}={v}");
    }
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
    let rules = spec.ingress.expect("ingress rules");
    assert_eq!(rules.len(), 1);
    let peers = rules[0].from.clone().expect("a from list");
    let namespace = peers[0]
        .namespace_selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref())
        .and_then(|l| l.get("kubernetes.io/metadata.name"));
    assert_eq!(namespace.map(String::as_str), Some("monitoring"));

    // 2. The example overlay: the generated Secret and the Deployment now pointing at it.
    apply_all(&client, &discovery, &example).await;
    let secret = find(&example, "Secret");
    let deployment = find(&example, "Deployment");
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == secret["metadata"]["name"]),
        "the Deployment mounts the generated Secret {}",
        secret["metadata"]["name"]
    );

    // 3. Pod Security: the namespace enforces "restricted" and the Pod passes it. The
    // negative case shows the enforcement is live, so the positive one means something.
    dry_run_pod(&client, find(&base, "Deployment"), |_| {})
        .await
        .expect("the daemon's Pod passes the restricted Pod Security Standard");
    let rejected = dry_run_pod(&client, find(&base, "Deployment"), |pod| {
        pod["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true);
    })
    .await
    .expect_err("a Pod allowing privilege escalation is rejected in that namespace");
    assert!(
        rejected.to_string().contains("PodSecurity"),
        "rejected by Pod Security, not something else: {rejected}"
    );

    // 4. The daemon's own ServiceAccount in the third cluster may do nothing there.
    let (own, own_groups) = service_account(DAEMON_NS, "kube-failover");
    for (verb, resource) in [("list", "pods"), ("get", "secrets"), ("get", "configmaps")] {
        let attrs = json!({ "namespace": DAEMON_NS, "verb": verb, "resource": resource });
        assert!(
            !allowed(&client, &own, &own_groups, attrs).await,
            "{own} may {verb} {resource}"
        );
    }

    // 5. target-rbac in a primary or standby cluster, where the agent's namespace exists.
    let agent_ns: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": AGENT_NS } })).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &agent_ns)
        .await
        .expect("create the agent namespace");
    assert_eq!(
        apply_all(&client, &discovery, &target_rbac).await,
        BTreeSet::new(),
        "target-rbac uses only built-in kinds"
    );
    let (sa, groups) = service_account(AGENT_NS, "kube-failover");
    // Everything role.yaml grants, the binding gives to the ServiceAccount...
    let role = find(&target_rbac, "Role");
    let mut granted = 0;
    for rule in role["rules"].as_array().unwrap() {
        for group in rule["apiGroups"].as_array().unwrap() {
            for res in rule["resources"].as_array().unwrap() {
                let (resource, sub) = res
                    .as_str()
                    .unwrap()
                    .split_once('/')
                    .unwrap_or((res.as_str().unwrap(), ""));
                for verb in rule["verbs"].as_array().unwrap() {
                    let attrs = json!({
                        "namespace": AGENT_NS, "group": group, "resource": resource,
                        "subresource": sub, "verb": verb,
                    });
                    assert!(
                        allowed(&client, &sa, &groups, attrs.clone()).await,
                        "{sa} lacks {attrs}"
                    );
                    granted += 1;
                }
            }
        }
    }
    assert!(
        granted >= 10,
        "role.yaml grants {granted} verb/resource pairs, fewer than expected"
    );
    // The probes read Deployments, Pods and the record from watches of the namespace,
    // and the state checks the state volume's claim.
    for (group, resource) in [
        ("apps", "deployments"),
        ("", "pods"),
        ("", "configmaps"),
        ("", "persistentvolumeclaims"),
    ] {
        for verb in ["list", "watch"] {
            let attrs = json!({
                "namespace": AGENT_NS, "group": group, "resource": resource, "verb": verb,
            });
            assert!(
                allowed(&client, &sa, &groups, attrs.clone()).await,
                "{sa} lacks {attrs}"
            );
        }
    }
    // ...and the probe of the API server's /readyz needs no grant at all.
    let readyz = json!({ "path": "/readyz", "verb": "get" });
    assert!(
        allowed(&client, &sa, &groups, readyz).await,
        "{sa} cannot GET /readyz"
    );
    // What the daemon must never be able to do: read credentials, create, delete or
    // replace a Deployment (it patches one only to mark the promotion epoch), run code in
    // Pods, act outside its namespace.
    let forbidden = [
        json!({ "namespace": AGENT_NS, "resource": "secrets", "verb": "get" }),
        json!({ "namespace": AGENT_NS, "resource": "secrets", "verb": "list" }),
        json!({ "namespace": AGENT_NS, "group": "apps", "resource": "deployments", "verb": "delete" }),
        json!({ "namespace": AGENT_NS, "group": "apps", "resource": "deployments", "verb": "update" }),
        json!({ "namespace": AGENT_NS, "group": "apps", "resource": "deployments", "verb": "create" }),
        json!({ "namespace": AGENT_NS, "resource": "pods", "verb": "delete" }),
        json!({ "namespace": AGENT_NS, "resource": "pods", "subresource": "exec", "verb": "create" }),
        json!({ "namespace": AGENT_NS, "resource": "configmaps", "verb": "delete" }),
        json!({ "namespace": AGENT_NS, "group": "coordination.k8s.io", "resource": "leases", "verb": "delete" }),
        json!({ "namespace": AGENT_NS, "group": "coordination.k8s.io", "resource": "leases", "verb": "patch" }),
        json!({ "namespace": "default", "group": "coordination.k8s.io", "resource": "leases", "verb": "update" }),
        json!({ "namespace": "default", "group": "apps", "resource": "deployments", "verb": "get" }),
        json!({ "namespace": "testbed-agent", "group": "apps", "resource": "deployments", "subresource": "scale", "verb": "patch" }),
        json!({ "resource": "namespaces", "verb": "list" }),
        json!({ "resource": "nodes", "verb": "get" }),
    ];
    for attrs in forbidden {
        assert!(
            !allowed(&client, &sa, &groups, attrs.clone()).await,
            "{sa} may {attrs}"
        );
    }
}

// --- the guard beside the env0 agent --------------------------------------------------

/// Where the component puts the guard's binary and config in the agent's container.
const GUARD_BIN: &str = "/guard/kube-failover";
const GUARD_CONFIG: &str = "/etc/kube-failover-guard/guard.toml";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The guard's config loaded as the guard loads it: Ok(side), or its complaint.
fn load_guard_config(text: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("guard.toml");
    std::fs::write(&path, text).expect("write");
    kube_failover::guard::config::GuardConfig::load(&path)
        .map(|c| {
            assert_eq!(
                c.standby.kubeconfig.as_deref(),
                Some(Path::new("/etc/kube-failover-guard/standby.kubeconfig")),
                "the kubeconfig is where the component mounts the Secret"
            );
            c.side.as_str().to_string()
        })
        .map_err(|e| e.to_string())
}

#[test]
fn shipped_guard_configs_load_with_their_side() {
    for side in ["primary", "standby"] {
        let path = repo()
            .join("deploy/kubernetes/guard")
            .join(side)
            .join("guard.toml");
        let text = std::fs::read_to_string(&path).expect("guard.toml");
        assert_eq!(load_guard_config(&text).as_deref(), Ok(side), "{path:?}");
    }
    let path = repo().join("deploy/kubernetes/guard/primary-sidecar/guard.toml");
    let text = std::fs::read_to_string(&path).expect("guard.toml");
    assert_eq!(load_guard_config(&text).as_deref(), Ok("primary"));
    assert_eq!(guard_form(&text), "sidecar", "{path:?}");
}

/// The `form` of a guard config that loads.
fn guard_form(text: &str) -> &'static str {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("guard.toml");
    std::fs::write(&path, text).expect("write");
    kube_failover::guard::config::GuardConfig::load(&path)
        .expect("loads")
        .form
        .as_str()
}

fn deployments(docs: &[Value]) -> Vec<&Value> {
    docs.iter().filter(|d| d["kind"] == "Deployment").collect()
}

fn by_name<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

/// The guard's Pod-level and container-level additions, checked and then removed: what is
/// left must equal the chart's Deployment.
fn check_and_strip_guard(doc: &Value, original: &Value, side: &str, rendered: &[Value]) -> Value {
    let name = doc["metadata"]["name"].as_str().unwrap();
    let mut doc = doc.clone();
    let spec = &mut doc["spec"]["template"]["spec"];

    // The init container: the image's binary copies itself, as a non-root user, with
    // nothing writable but the emptyDir.
    let init = spec["initContainers"]
        .as_array()
        .expect("initContainers")
        .clone();
    assert_eq!(init.len(), 1, "{name}: one init container");
    let init = &init[0];
    assert!(
        init["image"]
            .as_str()
            .unwrap()
            .starts_with("kube-failover:"),
        "{name}: {}",
        init["image"]
    );
    assert_eq!(
        init["command"],
        Value::Null,
        "{name}: the image's entrypoint"
    );
    assert_eq!(
        init["args"],
        json!(["guard", "install", GUARD_BIN]),
        "{name}"
    );
    assert_eq!(
        init["volumeMounts"],
        json!([{"name": "kube-failover-guard-bin", "mountPath": "/guard"}])
    );
    let sc = &init["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "{name}");
    assert_eq!(sc["runAsUser"], 65532, "{name}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
    spec.as_object_mut().unwrap().remove("initContainers");

    // The volumes: the binary's emptyDir and the config from the generated ConfigMap and
    // Secret, which are in the same output.
    let volumes = spec["volumes"].as_array_mut().expect("volumes");
    let bin = volumes
        .iter()
        .position(|v| v["name"] == "kube-failover-guard-bin")
        .expect("the binary's volume");
    assert!(volumes[bin]["emptyDir"].is_object(), "{name}: an emptyDir");
    volumes.remove(bin);
    let cfg = volumes
        .iter()
        .position(|v| v["name"] == "kube-failover-guard-config")
        .expect("the config volume");
    let sources = volumes[cfg]["projected"]["sources"]
        .as_array()
        .unwrap()
        .clone();
    volumes.remove(cfg);
    if volumes.is_empty() {
        spec.as_object_mut().unwrap().remove("volumes");
    }
    let cm_name = sources[0]["configMap"]["name"]
        .as_str()
        .expect("a ConfigMap");
    let secret_name = sources[1]["secret"]["name"].as_str().expect("a Secret");
    assert!(cm_name.starts_with("kube-failover-guard-"), "{cm_name}");
    assert!(
        secret_name.starts_with("kube-failover-guard-standby-"),
        "{secret_name}"
    );
    assert_eq!(
        sources[0]["configMap"]["items"],
        json!([{"key": "guard.toml", "path": "guard.toml"}])
    );
    assert_eq!(
        sources[1]["secret"]["items"],
        json!([{"key": "kubeconfig", "path": "standby.kubeconfig"}])
    );
    let toml = by_name(rendered, "ConfigMap", cm_name)["data"]["guard.toml"]
        .as_str()
        .expect("guard.toml");
    assert_eq!(load_guard_config(toml).as_deref(), Ok(side), "{name}");
    assert!(by_name(rendered, "Secret", secret_name)["data"]["kubeconfig"].is_string());

    // The agent's container: the command wrapped, the chart's args after it unchanged.
    let container = &mut spec["containers"][0];
    let original_container = &original["spec"]["template"]["spec"]["containers"][0];
    let mut wrapped = vec![
        json!(GUARD_BIN),
        json!("guard"),
        json!("--config"),
        json!(GUARD_CONFIG),
        json!("--"),
    ];
    wrapped.extend(
        original_container["command"]
            .as_array()
            .unwrap()
            .iter()
            .cloned(),
    );
    assert_eq!(container["command"], Value::Array(wrapped), "{name}");
    container["command"] = original_container["command"].clone();
    let env = container["env"].as_array_mut().unwrap();
    assert_eq!(
        env[0],
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        "{name}: the guard's identity"
    );
    env.remove(0);
    let mounts = container["volumeMounts"].as_array_mut().unwrap();
    for (volume, path) in [
        ("kube-failover-guard-bin", "/guard"),
        ("kube-failover-guard-config", "/etc/kube-failover-guard"),
    ] {
        let i = mounts
            .iter()
            .position(|m| m["name"] == volume)
            .unwrap_or_else(|| panic!("{name}: no mount of {volume}"));
        assert_eq!(mounts[i]["mountPath"], path);
        assert_eq!(mounts[i]["readOnly"], true, "{name}: {volume} read-only");
        mounts.remove(i);
    }
    if mounts.is_empty() {
        container.as_object_mut().unwrap().remove("volumeMounts");
    }
    doc
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "run by ci/check-deploy.sh, which renders the guard component with kustomize"]
async fn guard_component_wraps_the_env0_agent_and_is_admitted() {
    let original = rendered("env0-agent.json");
    let sides = [
        ("primary", rendered("guard-primary.json")),
        ("standby", rendered("guard-standby.json")),
    ];
    for (side, docs) in &sides {
        let wrapped = deployments(docs);
        assert_eq!(wrapped.len(), 2, "{side}: the trigger and the proxy");
        for doc in wrapped {
            let name = doc["metadata"]["name"].as_str().unwrap();
            let chart = by_name(&original, "Deployment", name);
            // Everything the chart set (image, args, probes, resources, securityContext,
            // env, the agent's own volumes) is as it was.
            assert_eq!(
                &check_and_strip_guard(doc, chart, side, docs),
                chart,
                "{side}: {name}"
            );
        }
    }
    // The trigger's liveness probe and the read-only root are the chart's (checked in
    // full above; named here because the guard must not touch them).
    let trigger = by_name(
        &sides[0].1,
        "Deployment",
        "c0ffee12.agent-trigger-deployment",
    );
    let agent = &trigger["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        agent["livenessProbe"]["exec"]["command"],
        json!(["rm", "/tmp/healthy"])
    );
    assert_eq!(agent["securityContext"]["readOnlyRootFilesystem"], true);

    // On a real API server: every object applied with strict field validation in a
    // namespace that enforces "restricted", and the Pods of both Deployments admitted.
    let cluster = Cluster::start_with(
        ClusterSpec::new("guard-deploy")
            .namespace("testbed-agent")
            .wait_ready(false),
    )
    .await
    .expect("start a test-bed cluster");
    let client = cluster.client();
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("API discovery");
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {
            "name": AGENT_NS,
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
        }
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create the agent namespace");
    let mut docs = sides[0].1.clone();
    for doc in &mut docs {
        doc["metadata"]["namespace"] = json!(AGENT_NS);
    }
    assert_eq!(apply_all(&client, &discovery, &docs).await, BTreeSet::new());
    for doc in deployments(&docs) {
        dry_run_pod(&client, doc, |_| {})
            .await
            .unwrap_or_else(|e| panic!("{}: the Pod is refused: {e}", doc["metadata"]["name"]));
    }
    // The enforcement is live: the same Pod with a privileged init container is refused.
    let rejected = dry_run_pod(&client, deployments(&docs)[0], |pod| {
        pod["spec"]["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"] =
            json!(true);
    })
    .await
    .expect_err("a Pod whose init container may escalate is refused");
    assert!(rejected.to_string().contains("PodSecurity"), "{rejected}");
}

/// What the sidecar form's probes run: the guard's verdict, from the emptyDir.
fn guard_check() -> Vec<Value> {
    vec![
        json!(GUARD_BIN),
        json!("guard"),
        json!("check"),
        json!("--url"),
        json!("http://127.0.0.1:9095/agent"),
    ]
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "run by ci/check-deploy.sh, which renders the guard component with kustomize"]
async fn guard_sidecar_component_adds_a_guard_container_and_probes_and_is_admitted() {
    let original = rendered("env0-agent.json");
    let docs = rendered("guard-primary-sidecar.json");
    let guarded = deployments(&docs);
    assert_eq!(guarded.len(), 2, "the trigger and the proxy");
    for doc in guarded {
        let name = doc["metadata"]["name"].as_str().unwrap();
        let chart = by_name(&original, "Deployment", name);
        let spec = &doc["spec"]["template"]["spec"];
        let chart_agent = &chart["spec"]["template"]["spec"]["containers"][0];
        let containers = spec["containers"].as_array().expect("containers");
        assert_eq!(containers.len(), 2, "{name}: the agent and the guard");
        // The guard: after the agent's container, the image's entrypoint, its config,
        // its identity, no port, restricted.
        let guard = &containers[1];
        assert_eq!(guard["name"], "kube-failover-guard", "{name}");
        assert!(
            guard["image"]
                .as_str()
                .unwrap()
                .starts_with("kube-failover:")
        );
        assert_eq!(
            guard["command"],
            Value::Null,
            "{name}: the image's entrypoint"
        );
        assert_eq!(
            guard["args"],
            json!(["guard", "--config", GUARD_CONFIG]),
            "{name}: no agent command (form = sidecar)"
        );
        assert_eq!(
            guard["ports"],
            Value::Null,
            "{name}: no port on the Pod's IP"
        );
        assert_eq!(guard["env"][0]["name"], "POD_NAME");
        assert_eq!(guard["securityContext"]["runAsNonRoot"], true);
        assert_eq!(guard["securityContext"]["readOnlyRootFilesystem"], true);
        let cm_name = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "kube-failover-guard-config")
            .expect("the config volume")["projected"]["sources"][0]["configMap"]["name"]
            .as_str()
            .unwrap();
        let toml = by_name(&docs, "ConfigMap", cm_name)["data"]["guard.toml"]
            .as_str()
            .expect("guard.toml");
        assert_eq!(load_guard_config(toml).as_deref(), Ok("primary"));
        assert_eq!(guard_form(toml), "sidecar", "{name}");
        assert_eq!(
            spec["initContainers"][0]["args"],
            json!(["guard", "install", GUARD_BIN])
        );

        // The agent: first, its command untouched, its probes asking the verdict.
        let mut agent = containers[0].clone();
        assert_eq!(
            agent["name"], chart_agent["name"],
            "{name}: the agent first"
        );
        assert_eq!(
            agent["command"], chart_agent["command"],
            "{name}: not wrapped"
        );
        assert_eq!(
            agent["startupProbe"]["exec"]["command"],
            Value::Array(guard_check())
        );
        let liveness = &agent["livenessProbe"];
        match chart_agent["livenessProbe"]["exec"]["command"].as_array() {
            // The chart's own probe runs after the check, its timing unchanged.
            Some(own) => {
                let mut want = guard_check();
                want.push(json!("--"));
                want.extend(own.iter().cloned());
                assert_eq!(liveness["exec"]["command"], Value::Array(want), "{name}");
                assert_eq!(
                    liveness["periodSeconds"],
                    chart_agent["livenessProbe"]["periodSeconds"]
                );
            }
            None => {
                assert_eq!(liveness["exec"]["command"], Value::Array(guard_check()));
                assert_eq!(liveness["periodSeconds"], 5, "{name}");
                assert_eq!(liveness["failureThreshold"], 2, "{name}");
            }
        }
        // Nothing else of the agent's container changed but the binary's mount.
        let a = agent.as_object_mut().unwrap();
        a.remove("startupProbe");
        a.remove("livenessProbe");
        let mounts = a["volumeMounts"].as_array_mut().unwrap();
        let i = mounts
            .iter()
            .position(|m| m["name"] == "kube-failover-guard-bin")
            .expect("the binary's mount");
        assert_eq!(mounts[i]["readOnly"], true);
        mounts.remove(i);
        if mounts.is_empty() {
            a.remove("volumeMounts");
        }
        let mut chart_agent = chart_agent.clone();
        chart_agent.as_object_mut().unwrap().remove("livenessProbe");
        assert_eq!(agent, chart_agent, "{name}");
    }

    // Admitted under "restricted" on a real API server.
    let cluster = Cluster::start_with(
        ClusterSpec::new("guard-sidecar-deploy")
            .namespace("testbed-agent")
            .wait_ready(false),
    )
    .await
    .expect("start a test-bed cluster");
    let client = cluster.client();
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("API discovery");
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {
            "name": AGENT_NS,
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
        }
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create the agent namespace");
    let mut docs = docs;
    for doc in &mut docs {
        doc["metadata"]["namespace"] = json!(AGENT_NS);
    }
    assert_eq!(apply_all(&client, &discovery, &docs).await, BTreeSet::new());
    for doc in deployments(&docs) {
        dry_run_pod(&client, doc, |_| {})
            .await
            .unwrap_or_else(|e| panic!("{}: the Pod is refused: {e}", doc["metadata"]["name"]));
    }
    // The enforcement is live: the guard container allowed to escalate is refused.
    let rejected = dry_run_pod(&client, deployments(&docs)[0], |pod| {
        pod["spec"]["containers"][1]["securityContext"]["allowPrivilegeEscalation"] = json!(true);
    })
    .await
    .expect_err("a Pod whose guard container may escalate is refused");
    assert!(rejected.to_string().contains("PodSecurity"), "{rejected}");
}

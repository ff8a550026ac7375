//! The launcher on the real binaries: a cluster starts Ready with the env0-like workload,
//! controllers and kwok bring scaled-up Pods to Ready, the daemon's identity has exactly
//! its Role, workload faults stick, and nothing outlives a dropped cluster.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Node, Pod, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube_failover_testbed::{Cluster, ClusterPair, ClusterSpec, DAEMON_USER, NODE_NAME};
use serde_json::json;
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(60);

fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

async fn readyz(client: &Client) -> Result<String, kube::Error> {
    client
        .request_text(http::Request::get("/readyz").body(Vec::new()).unwrap())
        .await
}

#[tokio::test]
async fn cluster_starts_ready_with_the_agent_deployments() {
    let started = Instant::now();
    let cluster = Cluster::start("ready").await.expect("cluster starts");
    eprintln!(
        "cluster start (warm binaries): {:?}, RSS {} MiB",
        started.elapsed(),
        cluster.rss_bytes() >> 20
    );
    let client = cluster.client();

    assert_eq!(readyz(&client).await.expect("readyz answers"), "ok");
    assert_eq!(cluster.pids().len(), 4, "etcd, apiserver, kcm, kwok");
    assert!(cluster.server_url().starts_with("https://127.0.0.1:"));

    let ns: Api<Namespace> = Api::all(client.clone());
    ns.get("env0-agent").await.expect("agent namespace exists");

    let node = Api::<Node>::all(client.clone())
        .get(NODE_NAME)
        .await
        .expect("kwok node exists");
    let ready = node.status.unwrap().conditions.unwrap();
    assert!(
        ready
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "env0-agent");
    for (name, label) in [
        ("env0-agent-trigger-deployment", "agent-trigger"),
        ("env0-agent-proxy-deployment", "agent-proxy"),
    ] {
        let d = deployments.get(name).await.expect("deployment exists");
        assert_eq!(d.metadata.labels.unwrap()["env0"], label);
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.selector.match_labels.unwrap()["env0"], label);
        assert_eq!(
            spec.template.spec.unwrap().node_name.as_deref(),
            Some(NODE_NAME)
        );
        assert_eq!(d.status.unwrap().ready_replicas, Some(1), "{name} Ready");
    }
    // The selectors the daemon is configured with find exactly one Deployment each.
    for selector in ["env0=agent-trigger", "env0=agent-proxy"] {
        let found = deployments
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        assert_eq!(found.items.len(), 1, "{selector}");
    }
    assert_eq!(
        cluster.deployment_names(),
        [
            "env0-agent-trigger-deployment".to_string(),
            "env0-agent-proxy-deployment".to_string()
        ]
    );

    // Each kubeconfig has one context, named after the cluster, and works on its own.
    for kubeconfig in [cluster.admin_kubeconfig(), cluster.daemon_kubeconfig()] {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
        assert_eq!(kc.current_context.as_deref(), Some("ready"));
        assert_eq!(kc.contexts.len(), 1);
        assert_eq!(kc.contexts[0].name, cluster.context());
    }
}

#[tokio::test]
async fn scaling_the_standby_up_brings_a_ready_pod() {
    let cluster = Cluster::start_with(ClusterSpec::new("scale-up").replicas(0))
        .await
        .expect("cluster starts");
    let client = cluster.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "env0-agent");
    let trigger = cluster.trigger_deployment();
    let none = pods
        .list(&ListParams::default().labels("env0=agent-trigger"))
        .await
        .unwrap();
    assert!(none.items.is_empty(), "standby starts without Pods");
    assert_eq!(cluster.replicas(&trigger).await.unwrap(), 0);

    let start = Instant::now();
    cluster.scale(&trigger, 1).await.unwrap();
    let took = cluster
        .wait_deployment_ready(&trigger, SETTLE)
        .await
        .expect("trigger becomes Ready");
    eprintln!(
        "scale 0->1 to Deployment Ready: {:?} (wait alone {took:?})",
        start.elapsed()
    );

    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), "env0-agent");
    let rs = replicasets
        .list(&ListParams::default().labels("env0=agent-trigger"))
        .await
        .unwrap();
    assert_eq!(
        rs.items.len(),
        1,
        "the deployment controller made one ReplicaSet"
    );
    let owner = &rs.items[0].metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.kind, "Deployment");
    assert_eq!(owner.name, trigger);

    let running = pods
        .list(&ListParams::default().labels("env0=agent-trigger"))
        .await
        .unwrap();
    assert_eq!(running.items.len(), 1);
    let pod = &running.items[0];
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some(NODE_NAME)
    );
    let status = pod.status.as_ref().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert!(
        status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );

    // And back down: the Pod goes away.
    cluster.scale(&trigger, 0).await.unwrap();
    cluster
        .wait_deployment_ready(&trigger, SETTLE)
        .await
        .unwrap();
    let deadline = Instant::now() + SETTLE;
    loop {
        let left = pods
            .list(&ListParams::default().labels("env0=agent-trigger"))
            .await
            .unwrap();
        if left.items.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "pod still there: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn daemon_identity_has_exactly_its_role() {
    let cluster = Cluster::start("rbac").await.expect("cluster starts");
    let daemon = cluster.daemon_client().await.unwrap();
    let ns = cluster.namespace();
    let trigger = cluster.trigger_deployment();

    // Allowed: everything role.yaml grants.
    let deployments: Api<Deployment> = Api::namespaced(daemon.clone(), ns);
    deployments.get(&trigger).await.expect("get deployments");
    deployments
        .list(&ListParams::default().labels("env0=agent-trigger"))
        .await
        .expect("list deployments");
    // Patch marks a promoted Deployment with its epoch annotation.
    deployments
        .patch(
            &trigger,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": { "kube-failover/epoch": "1" } } })),
        )
        .await
        .expect("patch deployment");
    deployments.get_scale(&trigger).await.expect("get scale");
    deployments
        .patch_scale(
            &trigger,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "replicas": 0 } })),
        )
        .await
        .expect("patch scale");
    let mut scale = deployments.get_scale(&trigger).await.unwrap();
    scale.spec.as_mut().unwrap().replicas = Some(1);
    // The deployment controller is still writing the status of the scale-down above,
    // which bumps the resourceVersion; what is tested here is the `update` verb, so the
    // update is unconditional rather than racing the controller.
    scale.metadata.resource_version = None;
    deployments
        .replace_scale(&trigger, &PostParams::default(), &scale)
        .await
        .expect("update scale");
    Api::<Pod>::namespaced(daemon.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list pods");
    let configmaps: Api<ConfigMap> = Api::namespaced(daemon.clone(), ns);
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "kube-failover-record" }, "data": { "phase": "active" }
    }))
    .unwrap();
    let created = configmaps
        .create(&PostParams::default(), &cm)
        .await
        .expect("create configmap");
    let mut updated = configmaps
        .get("kube-failover-record")
        .await
        .expect("get configmap");
    updated
        .data
        .as_mut()
        .unwrap()
        .insert("phase".into(), "promoting".into());
    configmaps
        .replace("kube-failover-record", &PostParams::default(), &updated)
        .await
        .expect("update configmap with its resourceVersion");
    // A stale resourceVersion is a conflict, not a permission problem.
    let stale = configmaps
        .replace("kube-failover-record", &PostParams::default(), &created)
        .await
        .unwrap_err();
    assert_eq!(status_code(&stale), Some(409), "{stale}");
    configmaps
        .patch(
            "kube-failover-record",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "phase": "promoted" } })),
        )
        .await
        .expect("patch configmap");
    let event: Event = serde_json::from_value(json!({
        "metadata": { "name": "kube-failover-test.1" },
        "involvedObject": { "kind": "Deployment", "name": trigger, "namespace": ns },
        "reason": "Promoted", "message": "test", "type": "Normal",
    }))
    .unwrap();
    let events: Api<Event> = Api::namespaced(daemon.clone(), ns);
    events
        .create(&PostParams::default(), &event)
        .await
        .expect("create event");
    events
        .patch(
            "kube-failover-test.1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "count": 2 })),
        )
        .await
        .expect("patch event");

    // Forbidden: anything else.
    let forbidden: Vec<(&str, kube::Error)> = vec![
        (
            "delete deployment",
            deployments
                .delete(&trigger, &DeleteParams::default())
                .await
                .map(|_| ())
                .unwrap_err(),
        ),
        (
            "list secrets",
            Api::<Secret>::namespaced(daemon.clone(), ns)
                .list(&ListParams::default())
                .await
                .map(|_| ())
                .unwrap_err(),
        ),
        (
            "delete configmap",
            configmaps
                .delete("kube-failover-record", &DeleteParams::default())
                .await
                .map(|_| ())
                .unwrap_err(),
        ),
        (
            "list deployments in another namespace",
            Api::<Deployment>::namespaced(daemon.clone(), "kube-system")
                .list(&ListParams::default())
                .await
                .map(|_| ())
                .unwrap_err(),
        ),
        (
            "list deployments cluster-wide",
            Api::<Deployment>::all(daemon.clone())
                .list(&ListParams::default())
                .await
                .map(|_| ())
                .unwrap_err(),
        ),
        (
            "get pod",
            Api::<Pod>::namespaced(daemon.clone(), ns)
                .get("anything")
                .await
                .map(|_| ())
                .unwrap_err(),
        ),
    ];
    for (what, err) in forbidden {
        assert_eq!(status_code(&err), Some(403), "{what}: {err}");
        assert!(err.to_string().contains(DAEMON_USER), "{what}: {err}");
    }
    // /readyz needs no grant.
    assert_eq!(readyz(&daemon).await.expect("readyz as daemon"), "ok");

    // A certificate from a CA the cluster does not trust is rejected outright.
    let untrusted = cluster
        .client_from(cluster.untrusted_kubeconfig())
        .await
        .unwrap();
    let err = Api::<Deployment>::namespaced(untrusted, ns)
        .get(&trigger)
        .await
        .unwrap_err();
    assert_eq!(status_code(&err), Some(401), "{err}");
}

#[tokio::test]
async fn unready_pods_stay_unready_until_set_ready() {
    let cluster = Cluster::start("unready").await.expect("cluster starts");
    let trigger = cluster.trigger_deployment();
    let proxy = cluster.proxy_deployment();

    assert_eq!(cluster.set_pods_ready(&trigger, false).await.unwrap(), 1);
    let deployments: Api<Deployment> = Api::namespaced(cluster.client(), cluster.namespace());
    let start = Instant::now();
    loop {
        let st = deployments.get(&trigger).await.unwrap().status.unwrap();
        if st.ready_replicas.unwrap_or(0) == 0 && st.available_replicas.unwrap_or(0) == 0 {
            break;
        }
        assert!(
            start.elapsed() < SETTLE,
            "deployment never saw the Pod unready: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "pod unready -> Deployment unavailable: {:?}",
        start.elapsed()
    );

    // kwok does not flip it back: still unready well after its stages would have acted.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let pods = cluster.pod_readiness(&trigger).await.unwrap();
    assert_eq!(pods.len(), 1);
    assert!(!pods[0].1, "pod became Ready again: {pods:?}");
    let st = deployments.get(&trigger).await.unwrap().status.unwrap();
    assert_eq!(st.ready_replicas.unwrap_or(0), 0, "{st:?}");
    assert_eq!(st.available_replicas.unwrap_or(0), 0, "{st:?}");
    // The other Deployment is untouched.
    assert!(cluster.pod_readiness(&proxy).await.unwrap()[0].1);

    assert_eq!(cluster.set_pods_ready(&trigger, true).await.unwrap(), 1);
    cluster
        .wait_deployment_ready(&trigger, SETTLE)
        .await
        .expect("ready again");
}

#[tokio::test]
async fn scaling_behind_the_back_and_deleting_the_namespace() {
    let cluster = Cluster::start("ns-delete").await.expect("cluster starts");
    let proxy = cluster.proxy_deployment();
    cluster.scale(&proxy, 3).await.unwrap();
    cluster.wait_deployment_ready(&proxy, SETTLE).await.unwrap();
    assert_eq!(cluster.replicas(&proxy).await.unwrap(), 3);
    assert_eq!(cluster.pod_readiness(&proxy).await.unwrap().len(), 3);

    let took = cluster
        .delete_namespace()
        .await
        .expect("namespace goes away");
    eprintln!("namespace deletion with 4 pods: {took:?}");
    let err = cluster.deployment(&proxy).await.unwrap_err();
    assert!(
        err.to_string().contains("404") || err.to_string().contains("not found"),
        "{err}"
    );
    // The daemon's RoleBinding lived in that namespace: it now sees 403, not 404.
    let daemon = cluster.daemon_client().await.unwrap();
    let err = Api::<Deployment>::namespaced(daemon, cluster.namespace())
        .get(&proxy)
        .await
        .unwrap_err();
    assert_eq!(status_code(&err), Some(403), "{err}");
}

#[tokio::test]
async fn pair_starts_primary_active_and_standby_at_zero() {
    let started = Instant::now();
    let pair = ClusterPair::start().await.expect("pair starts");
    eprintln!(
        "pair start: {:?}; RSS primary {} MiB, standby {} MiB",
        started.elapsed(),
        pair.primary.rss_bytes() >> 20,
        pair.standby.rss_bytes() >> 20
    );
    assert_eq!(pair.primary.name(), "primary");
    assert_eq!(pair.standby.name(), "standby");
    assert_ne!(pair.primary.api_addr(), pair.standby.api_addr());
    for name in pair.primary.deployment_names() {
        assert_eq!(pair.primary.replicas(&name).await.unwrap(), 1);
        assert_eq!(pair.primary.pod_readiness(&name).await.unwrap().len(), 1);
    }
    for name in pair.standby.deployment_names() {
        assert_eq!(pair.standby.replicas(&name).await.unwrap(), 0);
        assert!(pair.standby.pod_readiness(&name).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn dropping_a_cluster_leaves_no_process_port_or_directory() {
    let cluster = Cluster::start("teardown").await.expect("cluster starts");
    let pids = cluster.pids();
    let dir = cluster.dir().to_path_buf();
    let api = cluster.api_addr();
    assert_eq!(pids.len(), 4);
    for pid in &pids {
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
    drop(cluster);
    for pid in &pids {
        // Not even a zombie: Drop reaps what it kills.
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still in /proc"
        );
    }
    assert!(!dir.exists(), "{} still there", dir.display());
    assert!(
        std::net::TcpStream::connect(api).is_err(),
        "API server port still answers"
    );
}

#[tokio::test]
async fn a_panicking_test_still_tears_down() {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let cluster = Cluster::start("panics").await.expect("cluster starts");
            tx.send((cluster.pids(), cluster.dir().to_path_buf()))
                .unwrap();
            panic!("the test fails while the cluster runs");
        })
    });
    assert!(handle.join().is_err(), "the thread panicked");
    let (pids, dir) = rx.recv().unwrap();
    assert_eq!(pids.len(), 4);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} left"
        );
    }
    assert!(!dir.exists());
}

//! Faults above the transport, on the real binaries: the HTTP fault proxy failing
//! `/readyz` (and delaying, refusing or resetting chosen paths) while everything else is
//! served, kube-apiserver's own shutdown delay, a Deployment relabelled and renamed as a
//! chart upgrade would, and the daemon's RoleBindings deleted and restored.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube_failover_testbed::{
    Cluster, ClusterSpec, DAEMON_USER, HttpFaultProxy, HttpRule, READYZ_FAILED_BODY,
};
use serde_json::json;
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(60);

async fn readyz(client: &Client, path: &str) -> Result<String, kube::Error> {
    client
        .request_text(http::Request::get(path).body(Vec::new()).unwrap())
        .await
}

fn code(r: &kube::Error) -> Option<u16> {
    match r {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

fn deployments(cluster: &Cluster, client: Client) -> Api<Deployment> {
    Api::namespaced(client, cluster.namespace())
}

async fn scale_as(api: &Api<Deployment>, name: &str, replicas: i32) -> Result<(), kube::Error> {
    api.patch_scale(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
    )
    .await
    .map(|_| ())
}

async fn grant_watch(cluster: &Cluster) {
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "testbed-watch" },
        "rules": [{ "apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["watch"] }],
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "testbed-watch" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "testbed-watch" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": DAEMON_USER }],
    }))
    .unwrap();
    let pp = PostParams::default();
    Api::<Role>::namespaced(cluster.client(), cluster.namespace())
        .create(&pp, &role)
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(cluster.client(), cluster.namespace())
        .create(&pp, &binding)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn http_proxy_fails_readyz_while_every_other_request_is_served() {
    let cluster = Cluster::start("http-proxied")
        .await
        .expect("cluster starts");
    let proxy = HttpFaultProxy::start(&cluster).await.unwrap();
    let via = cluster
        .client_from(proxy.daemon_kubeconfig())
        .await
        .unwrap();
    let direct = cluster.daemon_client().await.unwrap();
    let deps = deployments(&cluster, via.clone());
    let trigger = cluster.trigger_deployment();

    // No rules: everything goes through, as the daemon's identity (RBAC unchanged: the
    // namespace list is forbidden to it, the Deployments are not).
    assert_eq!(readyz(&via, "/readyz").await.unwrap(), "ok");
    assert_eq!(
        deps.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
    let err = Api::<Namespace>::all(via.clone())
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(403), "{err}");

    // A request with its own credentials goes upstream with them alone: a token the API
    // server does not know gets its 401, not the daemon's certificate.
    let mut with_token = http::Request::get(format!(
        "/apis/apps/v1/namespaces/{}/deployments",
        cluster.namespace()
    ))
    .body(Vec::new())
    .unwrap();
    with_token.headers_mut().insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_static("Bearer not-a-token"),
    );
    let err = via.request_text(with_token).await.unwrap_err();
    assert_eq!(code(&err), Some(401), "{err}");

    // /readyz fails (500, kube-apiserver's body) while reads, writes and the direct path
    // are fine.
    proxy.add_rule(HttpRule::readyz_failing());
    for path in ["/readyz", "/readyz?verbose", "/readyz/etcd"] {
        let err = readyz(&via, path).await.unwrap_err();
        assert_eq!(code(&err), Some(500), "{path}: {err}");
        let kube::Error::Api(status) = &err else {
            unreachable!()
        };
        assert_eq!(status.message, READYZ_FAILED_BODY.trim());
    }
    assert_eq!(readyz(&via, "/livez").await.unwrap(), "ok");
    assert_eq!(readyz(&direct, "/readyz").await.unwrap(), "ok");
    let list = deps
        .list(&ListParams::default())
        .await
        .expect("list served");
    assert_eq!(list.items.len(), 2);
    scale_as(&deps, &trigger, 2).await.expect("scale served");
    assert_eq!(cluster.replicas(&trigger).await.unwrap(), 2);

    // A watch through the proxy streams events as they happen (the daemon's Role allows
    // `watch`: its probes read watch caches; the extra grant keeps this check independent
    // of the Role).
    grant_watch(&cluster).await;
    let rv = list.metadata.resource_version.unwrap();
    let mut events = deps
        .watch(&WatchParams::default().timeout(60), &rv)
        .await
        .expect("watch starts")
        .boxed();
    cluster.scale(&trigger, 3).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(event) = events.try_next().await.expect("watch streams") {
            if let WatchEvent::Modified(d) = event
                && d.metadata.name.as_deref() == Some(trigger.as_str())
                && d.spec.as_ref().and_then(|s| s.replicas) == Some(3)
            {
                return true;
            }
        }
        false
    })
    .await
    .expect("watch event within 15 s");
    assert!(seen, "watch ended without the scale event");
    // A rule added while the watch runs leaves it streaming.
    proxy.add_rule(HttpRule::respond("/apis", 500, "no"));
    cluster.scale(&trigger, 1).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(15), events.try_next())
        .await
        .expect("watch still streams")
        .expect("watch event");
    assert!(next.is_some());
    drop(events);

    // A rule for one method only: scale writes answer 500 with a Status, reads go on.
    // (Not 503: the test bed's clients, like kube's default, retry 429, 503 and 504.)
    let status_500 = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "etcdserver: request timed out", "reason": "InternalError", "code": 500,
    })
    .to_string();
    proxy.set_rules(vec![
        HttpRule::respond("/apis/apps/v1/", 500, status_500).method(http::Method::PATCH),
    ]);
    let err = scale_as(&deps, &trigger, 0).await.unwrap_err();
    assert_eq!(code(&err), Some(500), "{err}");
    let kube::Error::Api(status) = &err else {
        unreachable!()
    };
    assert_eq!(status.reason, "InternalError");
    deps.get(&trigger).await.expect("reads still served");
    assert_eq!(
        cluster.replicas(&trigger).await.unwrap(),
        1,
        "write never arrived"
    );

    // Latency on a path: those requests are slow, others are not.
    proxy.set_rules(vec![HttpRule::delay(
        "/apis/apps/v1/",
        Duration::from_millis(600),
    )]);
    let start = Instant::now();
    deps.get(&trigger).await.expect("slow but served");
    let slow = start.elapsed();
    let start = Instant::now();
    readyz(&via, "/readyz").await.unwrap();
    let fast = start.elapsed();
    eprintln!("GET with a 600 ms rule: {slow:?}; /readyz beside it: {fast:?}");
    assert!(slow >= Duration::from_millis(600), "{slow:?}");

    // Reset: that request fails as a broken connection, never an HTTP answer; the next
    // request on another path gets through.
    proxy.set_rules(vec![HttpRule::reset("/apis/apps/v1/")]);
    let err = tokio::time::timeout(Duration::from_secs(5), deps.get(&trigger))
        .await
        .expect("reset fails fast")
        .unwrap_err();
    let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    eprintln!("request reset by the proxy: {chain}");
    assert!(chain.contains("reset by peer"), "{chain}");
    assert_eq!(code(&err), None, "{err}");
    assert_eq!(readyz(&via, "/readyz").await.unwrap(), "ok");

    proxy.clear_rules();
    deps.get(&trigger).await.expect("healed");
    eprintln!(
        "proxy: {} connections, {} requests, {} faulted",
        proxy.accepted(),
        proxy.requests(),
        proxy.faulted()
    );
    assert_eq!(proxy.faulted(), 6);

    // The API server gone: the client sees a broken connection, not a 502.
    cluster.stop_apiserver().await.unwrap();
    let fresh = cluster
        .client_from(proxy.daemon_kubeconfig())
        .await
        .unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        deployments(&cluster, fresh).get(&trigger),
    )
    .await
    .expect("fails fast")
    .unwrap_err();
    assert_eq!(code(&err), None, "{err}");
}

/// What a client saw while the API server shut down: when `/readyz` first failed with
/// 500 (and its body), how many LISTs were served after that, the last one, and when the
/// process had exited, all from the SIGTERM.
struct Shutdown {
    unready: Option<(Duration, String)>,
    served_while_unready: u32,
    last_served: Duration,
    exited: Duration,
}

/// SIGTERM to the API server; asks `/readyz` and LISTs Deployments every 200 ms until it
/// stops answering.
async fn stop_observed(cluster: &Cluster) -> Shutdown {
    let client = cluster.daemon_client().await.unwrap();
    let deps = deployments(cluster, client.clone());
    assert_eq!(readyz(&client, "/readyz").await.unwrap(), "ok");
    let sigterm = Instant::now();
    let observe = async {
        let mut unready: Option<(Duration, String)> = None;
        let mut served_while_unready = 0u32;
        let mut last_served = Duration::ZERO;
        loop {
            let ready =
                tokio::time::timeout(Duration::from_secs(2), readyz(&client, "/readyz")).await;
            match ready {
                Ok(Err(kube::Error::Api(s))) if s.code == 500 && unready.is_none() => {
                    unready = Some((sigterm.elapsed(), s.message.clone()));
                }
                Ok(Ok(_)) | Ok(Err(kube::Error::Api(_))) => {}
                _ => break,
            }
            let listed =
                tokio::time::timeout(Duration::from_secs(2), deps.list(&ListParams::default()))
                    .await;
            match listed {
                Ok(Ok(l)) if unready.is_some() => {
                    assert_eq!(l.items.len(), 2);
                    served_while_unready += 1;
                    last_served = sigterm.elapsed();
                }
                Ok(Ok(_)) => {}
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (unready, served_while_unready, last_served)
    };
    let (stopped, (unready, served_while_unready, last_served)) =
        tokio::join!(cluster.stop_apiserver(), observe);
    stopped.expect("stops");
    Shutdown {
        unready,
        served_while_unready,
        last_served,
        exited: sigterm.elapsed(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_delay_fails_readyz_while_requests_are_served() {
    const DELAY: Duration = Duration::from_secs(8);
    let cluster = Cluster::start_with(ClusterSpec::new("shutdown-delay").shutdown_delay(DELAY))
        .await
        .expect("cluster starts");
    assert_eq!(cluster.shutdown_delay_in_force(), Some(DELAY));
    // The knob is for the next start: the running API server keeps the spec's delay.
    cluster.set_shutdown_delay(None);
    assert_eq!(cluster.shutdown_delay_in_force(), Some(DELAY));

    let seen = stop_observed(&cluster).await;
    assert_eq!(cluster.shutdown_delay_in_force(), None, "not running");
    let (unready_after, body) = seen
        .unready
        .expect("/readyz failed with 500 during the delay");
    eprintln!(
        "shutdown delay {DELAY:?}: /readyz 500 after {unready_after:?}, {} LISTs served \
         while unready, last at {:?}, exited after {:?}; body:\n{body}",
        seen.served_while_unready, seen.last_served, seen.exited
    );
    assert!(body.contains("[-]shutdown failed"), "{body}");
    assert!(
        seen.served_while_unready >= 3,
        "requests must be served while /readyz fails"
    );
    assert!(
        seen.last_served >= DELAY / 2,
        "served only until {:?} of a {DELAY:?} delay",
        seen.last_served
    );

    // Started again with the knob's `None`: no delay, nothing served once SIGTERMed.
    cluster.start_apiserver().await.expect("starts again");
    assert_eq!(cluster.shutdown_delay_in_force(), None);
    let seen = stop_observed(&cluster).await;
    eprintln!(
        "no shutdown delay: /readyz 500 seen: {}, {} LISTs served while unready, last at {:?}, \
         exited after {:?}",
        seen.unready.is_some(),
        seen.served_while_unready,
        seen.last_served,
        seen.exited
    );
    // A request already on its way may still be answered; nothing after that.
    const KNOB: Duration = Duration::from_secs(6);
    assert!(
        seen.last_served < KNOB / 2,
        "no delay, yet served until {:?} after SIGTERM",
        seen.last_served
    );

    // And with a delay set by the knob (rounded up to whole seconds).
    cluster.set_shutdown_delay(Some(KNOB - Duration::from_millis(500)));
    cluster.start_apiserver().await.expect("starts again");
    assert_eq!(cluster.shutdown_delay_in_force(), Some(KNOB));
    let seen = stop_observed(&cluster).await;
    eprintln!(
        "knob's shutdown delay {KNOB:?}: {} LISTs served while unready, last at {:?}, exited after {:?}",
        seen.served_while_unready, seen.last_served, seen.exited
    );
    assert!(
        seen.unready.is_some() && seen.last_served >= KNOB / 2,
        "the knob's delay is in force: served while /readyz fails, until {:?}",
        seen.last_served
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chart_upgrade_relabels_and_renames_deployments() {
    let cluster = Cluster::start("chart-upgrade")
        .await
        .expect("cluster starts");
    let trigger = cluster.trigger_deployment();
    let daemon = deployments(&cluster, cluster.daemon_client().await.unwrap());
    let by_label = ListParams::default().labels("env0=agent-trigger");
    assert_eq!(daemon.list(&by_label).await.unwrap().items.len(), 1);
    let pods_before = cluster.pod_readiness(&trigger).await.unwrap();
    assert_eq!(pods_before.len(), 1);

    // Relabelled: the selector finds nothing, the Pods keep running untouched.
    let previous = cluster
        .set_deployment_label(&trigger, "env0", Some("agent-trigger-v2"))
        .await
        .unwrap();
    assert_eq!(previous.as_deref(), Some("agent-trigger"));
    assert!(daemon.list(&by_label).await.unwrap().items.is_empty());
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster
        .wait_deployment_ready(&trigger, Duration::from_secs(5))
        .await
        .expect("still settled");
    assert_eq!(cluster.pod_readiness(&trigger).await.unwrap(), pods_before);
    let restored = cluster
        .set_deployment_label(&trigger, "env0", previous.as_deref())
        .await
        .unwrap();
    assert_eq!(restored.as_deref(), Some("agent-trigger-v2"));
    assert_eq!(daemon.list(&by_label).await.unwrap().items.len(), 1);
    // A label that was not there is removed again by restoring `None`.
    assert_eq!(
        cluster
            .set_deployment_label(&trigger, "example.com/extra", Some("1"))
            .await
            .unwrap(),
        None
    );
    cluster
        .set_deployment_label(&trigger, "example.com/extra", None)
        .await
        .unwrap();
    let labels = cluster
        .deployment(&trigger)
        .await
        .unwrap()
        .metadata
        .labels
        .unwrap();
    assert!(!labels.contains_key("example.com/extra"));

    // Annotations, the same way.
    let note = "example.com/note";
    assert_eq!(
        cluster
            .set_deployment_annotation(&trigger, note, Some("by hand"))
            .await
            .unwrap(),
        None
    );
    let d = cluster.deployment(&trigger).await.unwrap();
    assert_eq!(d.metadata.annotations.unwrap()[note], "by hand");
    assert_eq!(
        cluster
            .set_deployment_annotation(&trigger, note, None)
            .await
            .unwrap()
            .as_deref(),
        Some("by hand")
    );

    // Renamed: the old name is gone with its ReplicaSets and Pods, the new one runs the
    // same workload under the same labels.
    let old_uid = cluster.deployment(&trigger).await.unwrap().metadata.uid;
    let renamed = "env0-agent-trigger-v2-deployment";
    cluster.rename_deployment(&trigger, renamed).await.unwrap();
    let err = daemon.get(&trigger).await.unwrap_err();
    assert_eq!(code(&err), Some(404), "{err}");
    let took = cluster
        .wait_deployment_ready(renamed, SETTLE)
        .await
        .unwrap();
    eprintln!("renamed deployment Ready after {took:?}");
    assert_eq!(cluster.replicas(renamed).await.unwrap(), 1);
    let found = daemon.list(&by_label).await.unwrap().items;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].metadata.name.as_deref(), Some(renamed));
    let replica_sets = Api::<ReplicaSet>::namespaced(cluster.client(), cluster.namespace())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        !replica_sets.items.iter().any(|rs| rs
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| Some(&o.uid) == old_uid.as_ref())),
        "the old deployment's replicasets are gone"
    );
    let pods = Api::<Pod>::namespaced(cluster.client(), cluster.namespace())
        .list(&ListParams::default().labels("env0=agent-trigger"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 1, "only the new deployment's pod");
    assert!(
        pods.items[0]
            .metadata
            .name
            .as_deref()
            .unwrap()
            .starts_with(renamed)
    );

    // Renamed back: the original name again (a new uid).
    cluster.rename_deployment(renamed, &trigger).await.unwrap();
    cluster
        .wait_deployment_ready(&trigger, SETTLE)
        .await
        .unwrap();
    assert_eq!(code(&daemon.get(renamed).await.unwrap_err()), Some(404));
    assert_eq!(daemon.list(&by_label).await.unwrap().items.len(), 1);

    // A ConfigMap deleted by name.
    let configmaps: Api<ConfigMap> = Api::namespaced(cluster.client(), cluster.namespace());
    let cm: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "record" }, "data": { "a": "1" } }))
            .unwrap();
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
    assert!(cluster.delete_configmap("record").await.unwrap());
    assert!(configmaps.get_opt("record").await.unwrap().is_none());
    assert!(!cluster.delete_configmap("record").await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_rolebinding_gives_the_daemon_403_until_restored() {
    let cluster = Cluster::start("rbac-revoke").await.expect("cluster starts");
    let trigger = cluster.trigger_deployment();
    let client = cluster.daemon_client().await.unwrap();
    let daemon = deployments(&cluster, client.clone());
    daemon.get(&trigger).await.expect("allowed at start");
    assert!(cluster.daemon_can_list_deployments().await.unwrap());

    let took = cluster.delete_daemon_role_bindings().await.unwrap();
    eprintln!("rolebinding deleted -> 403 after {took:?}");
    for err in [
        daemon.get(&trigger).await.unwrap_err(),
        daemon.list(&ListParams::default()).await.unwrap_err(),
        scale_as(&daemon, &trigger, 0).await.unwrap_err(),
    ] {
        assert_eq!(code(&err), Some(403), "{err}");
        let kube::Error::Api(s) = err else {
            unreachable!()
        };
        assert_eq!(s.reason, "Forbidden");
    }
    // The API server itself answers: /readyz stays open to the same identity.
    assert_eq!(readyz(&client, "/readyz").await.unwrap(), "ok");
    assert_eq!(cluster.replicas(&trigger).await.unwrap(), 1);

    let took = cluster.restore_daemon_role_bindings().await.unwrap();
    eprintln!("rolebinding re-created -> 200 after {took:?}");
    daemon.get(&trigger).await.expect("allowed again");
    scale_as(&daemon, &trigger, 1)
        .await
        .expect("scale allowed again");
    // Restoring twice is harmless.
    cluster.restore_daemon_role_bindings().await.unwrap();
}

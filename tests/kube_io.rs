//! Probes, the failover record and the actuator against real API servers from the test
//! bed, as the restricted `kube-failover` user that deploy/kubernetes/target-rbac grants
//! (so a verb missing from that Role fails here first). The probes are the daemon's
//! (and the operator commands'): Deployments, Pods and the record read from the
//! clusters' watch caches, `/readyz` shared per cluster.

use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube_failover::actuate::{ActuateError, Actuator};
use kube_failover::config::{
    ClusterConfig, GroupConfig, HttpCheckConfig, WatchScope, WorkloadConfig,
};
use kube_failover::kube::client::ClientOptions;
use kube_failover::kube::cluster::{ClusterHandle, Clusters};
use kube_failover::model::{
    Action, DeploymentRef, Evidence, FailoverRecord, FencedBy, Observation, PrimaryObservation,
    ProbeReason, ReasonCode, RecordPhase, Side, SignalId, StandbyObservation,
};
use kube_failover::probe::cached::{
    self, primary_caches, probe_primary, probe_primary_since, probe_standby, standby_caches,
};
use kube_failover::record::{self, RecordError};
use kube_failover_testbed::{Cluster, ClusterPair, ClusterSpec, FaultProxy, ProxyMode};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(3);
/// How long a change made through the API takes, at most, to reach the caches.
const WATCH_LAG: Duration = Duration::from_secs(10);
const IDENTITY: &str = "kube-io-test";

/// Each test starts control planes; on two cores, one test at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cluster_config(c: &Cluster) -> ClusterConfig {
    cluster_config_from(c, c.daemon_kubeconfig())
}

fn cluster_config_from(c: &Cluster, kubeconfig: &Path) -> ClusterConfig {
    ClusterConfig {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        context: Some(c.context().to_string()),
        namespace: c.namespace().to_string(),
    }
}

/// The clusters as the daemon holds them: clients bounded by `timeout`, `/readyz` once
/// per `interval`, one watch per namespace and kind.
fn daemon_clusters(timeout: Duration, interval: Duration) -> Clusters {
    Clusters::new(
        ClientOptions::for_call_timeout(timeout),
        interval,
        timeout,
        None,
        WatchScope::Namespaces,
    )
}

/// Probes the primary until `done` holds (a change reaches the caches by their watch, a
/// moment after the API server accepted it), for at most [`WATCH_LAG`]; the last
/// observation either way, for the caller's assertions.
async fn primary_until(
    cluster: &Arc<ClusterHandle>,
    g: &GroupConfig,
    http: &reqwest::Client,
    done: impl Fn(&PrimaryObservation) -> bool,
) -> PrimaryObservation {
    let start = Instant::now();
    loop {
        let obs = probe_primary(cluster, g, http, TIMEOUT, &[]).await;
        if done(&obs) || start.elapsed() > WATCH_LAG {
            return obs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// As [`primary_until`], for the standby.
async fn standby_until(
    cluster: &Arc<ClusterHandle>,
    g: &GroupConfig,
    done: impl Fn(&StandbyObservation) -> bool,
) -> StandbyObservation {
    let start = Instant::now();
    loop {
        let obs = probe_standby(cluster, g, TIMEOUT).await;
        if done(&obs) || start.elapsed() > WATCH_LAG {
            return obs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The env0 shape: the trigger by label selector, the proxy by name.
fn workloads(c: &Cluster) -> Vec<WorkloadConfig> {
    vec![
        WorkloadConfig {
            name: None,
            selector: Some("env0=agent-trigger".into()),
            replicas: 1,
        },
        WorkloadConfig {
            name: Some(c.proxy_deployment()),
            selector: None,
            replicas: 1,
        },
    ]
}

fn group(primary: &Cluster, standby: &Cluster) -> GroupConfig {
    GroupConfig {
        name: "env0".into(),
        primary: cluster_config(primary),
        standby: cluster_config(standby),
        workloads: workloads(primary),
        policy: Default::default(),
        http_checks: Vec::new(),
        record_name: None,
        state: Default::default(),
        drift: Default::default(),
        guards: Default::default(),
    }
}

/// A loopback HTTP server answering 200 to everything, for an HTTP check.
async fn http_ok() -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = sock.read(&mut buf).await;
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    (url, task)
}

async fn events(c: &Cluster, reason: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(c.client(), c.namespace());
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

fn reasons(obs: &[(SignalId, kube_failover::model::ProbeOutcome)]) -> Vec<ProbeReason> {
    obs.iter().map(|(_, o)| o.reason).collect()
}

/// Every workload signal unknown, each detail ending with `why`.
fn assert_unknown(obs: &PrimaryObservation, why: &str) {
    for (id, o) in &obs.workloads {
        assert_eq!(o.reason.evidence(), Evidence::Unknown, "{id}: {o:?}");
        assert!(o.detail.ends_with(why), "{id}: {o:?}");
    }
}

#[tokio::test]
async fn probes_record_and_actions_with_the_restricted_identity() {
    let _serial = SERIAL.lock().await;
    let pair = ClusterPair::start().await.expect("test bed starts");
    let (primary, standby) = (&pair.primary, &pair.standby);
    // The daemon's own HTTP check client, TLS and all, as the daemon builds it.
    let http = kube_failover::probe::http::client(TIMEOUT, kube_failover::user_agent::anonymous())
        .expect("HTTP check client");
    let (url, server) = http_ok().await;
    let mut g = group(primary, standby);
    g.http_checks.push(HttpCheckConfig {
        name: "agent".into(),
        url,
        expected_status: 200,
        timeout: None,
    });
    // An HTTPS endpoint whose certificate the daemon's host does not trust (the test
    // bed's own CA): the handshake runs and fails as `tls`, which proves nothing about
    // the workload (unknown, never down).
    let untrusted = HttpCheckConfig {
        name: "untrusted".into(),
        url: format!("{}/readyz", primary.server_url()),
        expected_status: 200,
        timeout: None,
    };

    let mut clusters = daemon_clusters(TIMEOUT, Duration::from_secs(1));
    let ph = clusters.get(&g.primary, Side::Primary).await.unwrap();
    let sh = clusters.get(&g.standby, Side::Standby).await.unwrap();
    let (p, s) = (ph.client().clone(), sh.client().clone());

    // --- a healthy primary and a fit standby --------------------------------------------
    // As a command waits for them: listed and watching.
    let started = Instant::now();
    primary_caches(&ph, &g, TIMEOUT)
        .await
        .expect("primary caches");
    standby_caches(&sh, &g, TIMEOUT)
        .await
        .expect("standby caches");
    eprintln!("measured: caches established in {:?}", started.elapsed());
    let prim = probe_primary(&ph, &g, &http, TIMEOUT, &[]).await;
    assert!(prim.api.passed(), "{:?}", prim.api);
    assert_eq!(
        prim.workloads
            .iter()
            .map(|(n, _)| n.to_string())
            .collect::<Vec<_>>(),
        [
            "workload:env0=agent-trigger".to_string(),
            format!("workload:{}", primary.proxy_deployment())
        ]
    );
    assert_eq!(
        reasons(&prim.workloads),
        [ProbeReason::Ok, ProbeReason::Ok],
        "{prim:?}"
    );
    assert_eq!(reasons(&prim.http), [ProbeReason::Ok], "{prim:?}");
    let tls = kube_failover::probe::http::check(&http, &untrusted, TIMEOUT).await;
    assert_eq!(tls.reason, ProbeReason::Tls, "{tls:?}");
    assert_eq!(tls.reason.evidence(), Evidence::Unknown, "{tls:?}");
    let views = prim.deployments.clone().expect("listed");
    assert_eq!(views.len(), 2);
    for v in &views {
        assert_eq!((v.desired, v.available, v.ready_pods), (1, 1, 1), "{v:?}");
    }
    assert!(prim.api.latency > Duration::ZERO);

    let stby = probe_standby(&sh, &g, TIMEOUT).await;
    assert!(stby.api.passed(), "{:?}", stby.api);
    assert!(stby.workloads.passed(), "{:?}", stby.workloads);
    assert_eq!(stby.record, Ok(FailoverRecord::default()), "no record yet");
    let views = stby.deployments.clone().expect("listed");
    assert_eq!(views.len(), 2);
    assert!(views.iter().all(|v| v.desired == 0), "{views:?}");

    // --- the record: create once, replace only at the read resourceVersion -------------
    let ns = standby.namespace();
    let scratch = "kube-io-scratch";
    let first = FailoverRecord {
        phase: Some(RecordPhase::Primary),
        epoch: 7,
        holder: IDENTITY.into(),
        ..FailoverRecord::default()
    };
    let stored = record::write(&s, ns, scratch, "scratch", &first, None)
        .await
        .unwrap();
    let rv1 = stored
        .resource_version
        .clone()
        .expect("stored with a resourceVersion");
    assert_eq!(
        stored,
        FailoverRecord {
            resource_version: Some(rv1.clone()),
            history: stored.history.clone(),
            ..first.clone()
        }
    );
    // The write adds one transition to the record's bounded history.
    assert_eq!(stored.history.len(), 1, "{:?}", stored.history);
    assert_eq!(stored.history[0].epoch, 7);
    assert_eq!(stored.history[0].by, "kube-io-test");
    let again = record::write(&s, ns, scratch, "scratch", &first, None).await;
    assert!(
        matches!(again, Err(RecordError::Conflict { .. })),
        "{again:?}"
    );
    let second = FailoverRecord {
        epoch: 8,
        ..first.clone()
    };
    let stored = record::write(&s, ns, scratch, "scratch", &second, Some(&rv1))
        .await
        .unwrap();
    assert_eq!(stored.epoch, 8);
    let stale = record::write(&s, ns, scratch, "scratch", &first, Some(&rv1)).await;
    assert!(
        matches!(stale, Err(RecordError::Conflict { .. })),
        "{stale:?}"
    );
    let read = record::read(&s, ns, scratch)
        .await
        .unwrap()
        .expect("exists");
    assert_eq!(read, stored);
    let cm: ConfigMap = Api::namespaced(standby.client(), ns)
        .get(scratch)
        .await
        .unwrap();
    let labels = cm.metadata.labels.unwrap();
    assert_eq!(labels["app.kubernetes.io/name"], "kube-failover");
    assert_eq!(labels["kube-failover/group"], "scratch");
    // Someone writes nonsense into it: a decode error naming the ConfigMap and key.
    let cms: Api<ConfigMap> = Api::namespaced(standby.client(), ns);
    cms.patch(
        scratch,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"epoch": "eight"}})),
    )
    .await
    .unwrap();
    let err = record::read(&s, ns, scratch).await.unwrap_err();
    assert_eq!(err.reason(), ProbeReason::Decode);
    assert!(
        err.to_string()
            .contains(&format!("ConfigMap {ns}/{scratch}: key epoch")),
        "{err}"
    );

    // --- promotion: record, scale up, Events, idempotence ------------------------------
    let actuator = Actuator::new(&g, p.clone(), s.clone(), IDENTITY.into());
    let obs = Observation {
        wall_unix: 0.0,
        primary: prim.clone(),
        standby: stby.clone(),
        observers: vec![],
    };
    let promoting = Action::RecordPromoting {
        epoch: 1,
        reason: ReasonCode::PrimaryDownQuorum,
        primary_deployments: primary
            .deployment_names()
            .into_iter()
            .map(|name| DeploymentRef { name, uid: None })
            .collect(),
    };
    let report = actuator.execute(&promoting, &obs).await.unwrap();
    assert!(report.changed());
    let rec = record::read(&s, ns, &g.record_name())
        .await
        .unwrap()
        .expect("written");
    assert_eq!(rec.phase, Some(RecordPhase::Promoting));
    assert_eq!(rec.epoch, 1);
    assert_eq!(rec.holder, IDENTITY);
    assert_eq!(rec.reason, "primary_down_quorum");
    assert!(rec.promoted_at.is_some() && rec.promoted_at_unix.is_some());
    assert_eq!(report.record.as_ref(), Some(&rec));
    // A second daemon deciding on the same (now stale) view loses the race.
    let err = actuator.execute(&promoting, &obs).await.unwrap_err();
    assert_eq!(err.reason(), "conflict", "{err}");

    let report = actuator
        .execute(&Action::ScaleStandbyUp { epoch: 1 }, &obs)
        .await
        .unwrap();
    let mut scaled: Vec<_> = report
        .scaled
        .iter()
        .map(|c| (c.deployment.clone(), c.from, c.to))
        .collect();
    scaled.sort();
    let mut want: Vec<_> = standby
        .deployment_names()
        .into_iter()
        .map(|n| (n, 0, 1))
        .collect();
    want.sort();
    assert_eq!(scaled, want, "{report}");
    for name in standby.deployment_names() {
        assert_eq!(standby.replicas(&name).await.unwrap(), 1);
        let dep = standby.deployment(&name).await.unwrap();
        let annotations = dep.metadata.annotations.unwrap_or_default();
        assert_eq!(
            annotations.get("kube-failover/epoch").map(String::as_str),
            Some("1"),
            "every promoted Deployment carries the epoch"
        );
    }
    // A scale decided on another epoch than the record's is refused before any write.
    let err = actuator
        .execute(&Action::ScaleStandbyUp { epoch: 2 }, &obs)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "conflict", "{err}");
    let promoted_events = events(standby, "KubeFailoverPromoted").await;
    assert_eq!(promoted_events.len(), 2, "{promoted_events:?}");
    for ev in &promoted_events {
        let dep = standby
            .deployment(ev.involved_object.name.as_deref().unwrap())
            .await
            .unwrap();
        assert_eq!(ev.involved_object.uid, dep.metadata.uid);
        assert_eq!(ev.reporting_instance.as_deref(), Some(IDENTITY));
        assert_eq!(ev.type_.as_deref(), Some("Normal"));
        let msg = ev.message.as_deref().unwrap();
        // The epoch is the one just recorded, not the observation's older one.
        assert!(
            msg.starts_with("group env0 epoch 1 (reason primary_down_quorum)"),
            "{msg}"
        );
    }
    let report = actuator
        .execute(&Action::ScaleStandbyUp { epoch: 1 }, &obs)
        .await
        .unwrap();
    assert!(!report.changed(), "{report}");
    assert_eq!(events(standby, "KubeFailoverPromoted").await.len(), 2);

    for name in standby.deployment_names() {
        standby
            .wait_deployment_ready(&name, Duration::from_secs(60))
            .await
            .unwrap();
    }
    let ready = |views: &[kube_failover::model::DeploymentView]| {
        views
            .iter()
            .all(|v| v.desired == 1 && v.available == 1 && v.ready_pods == 1)
    };
    let stby = standby_until(&sh, &g, |o| {
        o.deployments.as_deref().is_some_and(ready)
            && o.record
                .as_ref()
                .is_ok_and(|r| r.phase == Some(RecordPhase::Promoting))
    })
    .await;
    let views = stby.deployments.clone().unwrap();
    assert!(ready(&views), "{views:?}");
    assert_eq!(
        stby.record.as_ref().unwrap().phase,
        Some(RecordPhase::Promoting)
    );

    let report = actuator
        .execute(&Action::RecordPromoted { epoch: 1 }, &obs)
        .await
        .unwrap();
    assert!(report.changed());
    let rec = record::read(&s, ns, &g.record_name())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.phase, Some(RecordPhase::Promoted));
    assert!(rec.completed_at.is_some());
    assert_eq!(rec.reason, "primary_down_quorum", "kept");
    let report = actuator
        .execute(&Action::RecordPromoted { epoch: 1 }, &obs)
        .await
        .unwrap();
    assert!(!report.changed(), "already promoted: {report}");
    let err = actuator
        .execute(&Action::RecordPromoted { epoch: 2 }, &obs)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "conflict", "{err}");
    let err = actuator
        .execute(
            &Action::RecordFailed {
                epoch: 1,
                reason: ReasonCode::PromotionTimeout,
            },
            &obs,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.reason(),
        "conflict",
        "a promoted record is never marked failed: {err}"
    );

    // --- fencing the old primary --------------------------------------------------------
    let fence = Action::FencePrimary {
        epoch: 1,
        names: primary.deployment_names().to_vec(),
    };
    let report = actuator.execute(&fence, &obs).await.unwrap();
    assert_eq!(report.scaled.len(), 2, "{report}");
    assert!(
        report.scaled.iter().all(|c| c.from == 1 && c.to == 0),
        "{report}"
    );
    for name in primary.deployment_names() {
        assert_eq!(primary.replicas(&name).await.unwrap(), 0);
    }
    let fenced = events(primary, "KubeFailoverFenced").await;
    assert_eq!(fenced.len(), 2, "{fenced:?}");
    assert!(fenced.iter().all(|e| e.type_.as_deref() == Some("Warning")));
    let report = actuator.execute(&fence, &obs).await.unwrap();
    assert!(!report.changed(), "{report}");

    let fenced = [ProbeReason::ScaledToZero, ProbeReason::ScaledToZero];
    let prim = primary_until(&ph, &g, &http, |o| reasons(&o.workloads) == fenced).await;
    assert!(prim.api.passed());
    assert_eq!(reasons(&prim.workloads), fenced, "{prim:?}");
    assert!(prim.workloads[0].1.detail.contains("scaled to 0"));
    assert!(prim.deployments.unwrap().iter().all(|v| v.desired == 0));

    actuator
        .execute(
            &Action::RecordFenced {
                epoch: 1,
                by: FencedBy::Scale,
            },
            &obs,
        )
        .await
        .unwrap();
    let rec = record::read(&s, ns, &g.record_name())
        .await
        .unwrap()
        .unwrap();
    assert!(rec.fenced_at.is_some());
    assert_eq!(rec.fenced_by, Some(FencedBy::Scale));
    assert_eq!(rec.phase, Some(RecordPhase::Promoted));
    let report = actuator
        .execute(
            &Action::RecordFenced {
                epoch: 1,
                by: FencedBy::Guard,
            },
            &obs,
        )
        .await
        .unwrap();
    assert!(!report.changed());

    // --- correcting a standby that should be at 0 --------------------------------------
    // Not while the record says the standby is active: checked against a fresh read.
    let err = actuator
        .execute(&Action::ScaleStandbyDown { epoch: 1 }, &obs)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "conflict", "{err}");
    assert_eq!(
        standby
            .replicas(&standby.trigger_deployment())
            .await
            .unwrap(),
        1
    );
    // A person fails back (phase primary): now the standby is corrected.
    let cms: Api<ConfigMap> = Api::namespaced(standby.client(), ns);
    cms.patch(
        &g.record_name(),
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"data": {"phase": "primary"}})),
    )
    .await
    .unwrap();
    let report = actuator
        .execute(&Action::RecordFailback { epoch: 1 }, &obs)
        .await
        .unwrap();
    assert!(report.changed());
    let rec = record::read(&s, ns, &g.record_name())
        .await
        .unwrap()
        .unwrap();
    assert!(rec.failback_at_unix.is_some() && rec.failback_at.is_some());
    let report = actuator
        .execute(&Action::ScaleStandbyDown { epoch: 1 }, &obs)
        .await
        .unwrap();
    assert_eq!(report.scaled.len(), 2, "{report}");
    for name in standby.deployment_names() {
        assert_eq!(standby.replicas(&name).await.unwrap(), 0);
    }
    assert_eq!(
        events(standby, "KubeFailoverStandbyCorrected").await.len(),
        2
    );

    // --- what the restricted identity may not do, and what is not there ----------------
    let mut elsewhere = g.clone();
    elsewhere.primary.namespace = "default".into();
    // A command waiting for these caches is told at once: waiting cannot mend a 403.
    let started = Instant::now();
    let refused = primary_caches(&ph, &elsewhere, TIMEOUT).await.unwrap_err();
    assert_eq!(refused.reason, ProbeReason::Forbidden, "{refused:?}");
    assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());
    let prim = probe_primary(&ph, &elsewhere, &http, TIMEOUT, &[]).await;
    assert!(prim.api.passed(), "/readyz needs no grant");
    assert_eq!(
        reasons(&prim.workloads),
        [ProbeReason::Forbidden, ProbeReason::Forbidden],
        "{prim:?}"
    );
    assert_eq!(
        prim.workloads[1].1.detail,
        format!(
            "Deployment default/{}: watch of Deployments in default broken: HTTP 403 Forbidden",
            primary.proxy_deployment()
        )
    );
    assert_eq!(prim.deployments, None, "unknown, not empty");
    // A promotion recorded for this group, so the fence passes the record check and
    // meets RBAC.
    let fresh = Observation {
        standby: StandbyObservation {
            record: Ok(FailoverRecord::default()),
            ..obs.standby.clone()
        },
        ..obs.clone()
    };
    elsewhere.record_name = Some("kube-failover-elsewhere".into());
    let fencing = Actuator::new(&elsewhere, p.clone(), s.clone(), IDENTITY.into());
    fencing.execute(&promoting, &fresh).await.unwrap();
    let err = fencing.execute(&fence, &obs).await.unwrap_err();
    assert_eq!(err.reason(), "forbidden", "{err}");
    assert!(
        err.to_string()
            .starts_with("primary cluster, namespace default: list"),
        "{err}"
    );
    assert!(matches!(err, ActuateError::Call { .. }));

    let mut missing = g.clone();
    missing.workloads = vec![
        WorkloadConfig {
            name: Some("no-such-deployment".into()),
            selector: None,
            replicas: 1,
        },
        WorkloadConfig {
            name: None,
            selector: Some("env0=no-such-component".into()),
            replicas: 1,
        },
    ];
    let prim = probe_primary(&ph, &missing, &http, TIMEOUT, &[]).await;
    assert_eq!(
        reasons(&prim.workloads),
        [ProbeReason::NotFound, ProbeReason::NotFound],
        "{prim:?}"
    );
    assert_eq!(
        prim.workloads[0].1.detail,
        format!(
            "Deployment {}/no-such-deployment not found",
            primary.namespace()
        )
    );
    assert_eq!(
        prim.deployments,
        Some(Vec::new()),
        "listed, and nothing matched"
    );
    let stby: StandbyObservation = probe_standby(&sh, &missing, TIMEOUT).await;
    assert_eq!(stby.workloads.reason, ProbeReason::NotFound, "{stby:?}");
    missing.record_name = Some("kube-failover-missing".into());
    let promoting = Actuator::new(&missing, p.clone(), s.clone(), IDENTITY.into());
    promoting
        .execute(
            &Action::RecordPromoting {
                epoch: 1,
                reason: ReasonCode::PrimaryDownQuorum,
                primary_deployments: vec![],
            },
            &fresh,
        )
        .await
        .unwrap();
    let err = promoting
        .execute(&Action::ScaleStandbyUp { epoch: 1 }, &obs)
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "not_found", "{err}");

    server.abort();
}

/// Faults of the workload, of the credentials, of the path to the API server and of the
/// API server, as the daemon's probes classify them: a workload's own failure is down
/// evidence; whatever keeps the watcher from seeing is unknown, and while `/readyz`
/// says the API server cannot be reached the caches are not trusted (the API signal
/// carries the down evidence, the workload signals never a stale answer).
#[tokio::test]
async fn faults_are_classified() {
    let _serial = SERIAL.lock().await;
    let c = Cluster::start_with(ClusterSpec::new("faults"))
        .await
        .expect("test bed starts");
    let g = group(&c, &c);
    let http = reqwest::Client::new();
    let interval = Duration::from_secs(1);
    let mut clusters = daemon_clusters(TIMEOUT, interval);
    let daemon = clusters.get(&g.primary, Side::Primary).await.unwrap();
    primary_caches(&daemon, &g, TIMEOUT)
        .await
        .expect("caches established");

    // Pods that run but are not Ready, and a container in CrashLoopBackOff, as a
    // kubelet would report them through the Pod status.
    c.set_pods_ready(&c.trigger_deployment(), false)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(c.client(), c.namespace());
    let proxy_pods = pods
        .list(&ListParams::default().labels("env0=agent-proxy"))
        .await
        .unwrap();
    let proxy_pod = proxy_pods.items[0].metadata.name.clone().unwrap();
    let crash = serde_json::json!({"status": {
        "conditions": [{"type": "Ready", "status": "False"}],
        "containerStatuses": [{
            "name": "agent-proxy", "ready": false, "restartCount": 5,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}
        }]
    }});
    pods.patch_status(
        &proxy_pod,
        &PatchParams::default(),
        &Patch::Strategic(crash),
    )
    .await
    .unwrap();
    let failing = [ProbeReason::Unready, ProbeReason::CrashLoop];
    let prim = primary_until(&daemon, &g, &http, |o| reasons(&o.workloads) == failing).await;
    assert_eq!(reasons(&prim.workloads), failing, "{prim:?}");
    assert!(
        prim.workloads[1]
            .1
            .detail
            .contains(&format!("{proxy_pod}/agent-proxy")),
        "{prim:?}"
    );
    let views = prim.deployments.unwrap();
    assert!(
        views.iter().all(|v| v.desired == 1 && v.ready_pods == 0),
        "{views:?}"
    );
    // Heal both: Ready again, and a fresh Pod for the crashed one.
    c.set_pods_ready(&c.trigger_deployment(), true)
        .await
        .unwrap();
    pods.delete(&proxy_pod, &Default::default()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while pods.get_opt(&proxy_pod).await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "pod {proxy_pod} never went away");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for name in c.deployment_names() {
        c.wait_deployment_ready(&name, Duration::from_secs(60))
            .await
            .unwrap();
    }
    let healthy = [ProbeReason::Ok, ProbeReason::Ok];
    let prim = primary_until(&daemon, &g, &http, |o| reasons(&o.workloads) == healthy).await;
    assert_eq!(reasons(&prim.workloads), healthy, "{prim:?}");

    // Credentials the cluster does not accept: a command is told at once.
    let mut rejected = g.clone();
    rejected.primary = cluster_config_from(&c, c.untrusted_kubeconfig());
    rejected.standby = rejected.primary.clone();
    let untrusted = clusters
        .get(&rejected.primary, Side::Primary)
        .await
        .unwrap();
    let refused = primary_caches(&untrusted, &rejected, TIMEOUT)
        .await
        .unwrap_err();
    assert_eq!(refused.reason, ProbeReason::Unauthorized, "{refused:?}");
    let prim = probe_primary(&untrusted, &rejected, &http, TIMEOUT, &[]).await;
    assert_eq!(prim.api.reason, ProbeReason::Unauthorized, "{prim:?}");
    assert_eq!(
        reasons(&prim.workloads),
        [ProbeReason::Unauthorized, ProbeReason::Unauthorized],
        "{prim:?}"
    );
    let refused = standby_caches(&untrusted, &rejected, TIMEOUT)
        .await
        .unwrap_err();
    assert_eq!(refused.reason, ProbeReason::Unauthorized, "{refused:?}");
    let stby = probe_standby(&untrusted, &rejected, TIMEOUT).await;
    let record_err = stby.record.expect_err("record unreadable");
    assert_eq!(record_err.reason, ProbeReason::Unauthorized);
    assert!(
        record_err.detail.contains(&g.record_name()),
        "{}",
        record_err.detail
    );

    // The path to the API server drops packets, then resets connections. The watches
    // go through the proxy too; a fresh `/readyz` is asked each time (as after a lost
    // watch), bounded by the short probe timeout.
    let proxy = FaultProxy::start(c.api_addr()).await.unwrap();
    let mut proxied = g.clone();
    proxied.primary = cluster_config_from(&c, &c.daemon_kubeconfig_via(proxy.addr()).unwrap());
    proxied.standby = proxied.primary.clone();
    let short = Duration::from_millis(700);
    let mut short_clusters = daemon_clusters(short, Duration::from_secs(5));
    let via = short_clusters
        .get(&proxied.primary, Side::Primary)
        .await
        .unwrap();
    primary_caches(&via, &proxied, TIMEOUT)
        .await
        .expect("caches through the proxy");
    standby_caches(&via, &proxied, TIMEOUT)
        .await
        .expect("caches through the proxy");
    let prim = probe_primary(&via, &proxied, &http, short, &[]).await;
    assert!(prim.api.passed(), "{prim:?}");
    assert_eq!(reasons(&prim.workloads), healthy, "{prim:?}");
    proxy.set_mode(ProxyMode::Blackhole);
    let started = Instant::now();
    let (prim, _) =
        probe_primary_since(&via, &proxied, &http, short, &[], Some(Instant::now())).await;
    let took = started.elapsed();
    assert_eq!(prim.api.reason, ProbeReason::Timeout, "{prim:?}");
    // The watches' connections stall without a word: the caches still say Ok, and are
    // not believed.
    assert_unknown(
        &prim,
        "cached state not trusted while /readyz fails (timeout)",
    );
    assert_eq!(prim.deployments, None);
    assert!(
        took < short + Duration::from_millis(500),
        "bounded: took {took:?}"
    );
    let stby = probe_standby(&via, &proxied, short).await;
    assert_eq!(stby.api.reason, ProbeReason::Timeout, "the same answer");
    let record_err = stby.record.unwrap_err();
    assert_eq!(record_err.reason.evidence(), Evidence::Unknown);
    assert!(
        record_err.detail.contains(&g.record_name()) && record_err.detail.ends_with("(timeout)"),
        "{}",
        record_err.detail
    );
    proxy.set_mode(ProxyMode::Reset);
    let (prim, _) =
        probe_primary_since(&via, &proxied, &http, short, &[], Some(Instant::now())).await;
    assert_eq!(prim.api.reason, ProbeReason::Connect, "{prim:?}");
    assert_unknown(
        &prim,
        "cached state not trusted while /readyz fails (connect)",
    );
    drop(proxy);

    // The agent namespace is deleted. The daemon's Role lives in it, so the restricted
    // identity starting now sees 403; an identity with wider rights sees the objects
    // gone. The caches of the daemon already running hear the deletions on their
    // watches (whose grant was checked when they started).
    c.delete_namespace().await.unwrap();
    let mut after = daemon_clusters(TIMEOUT, interval);
    let starting = after.get(&g.primary, Side::Primary).await.unwrap();
    let prim = probe_primary(&starting, &g, &http, TIMEOUT, &[]).await;
    assert!(prim.api.passed());
    assert_eq!(
        reasons(&prim.workloads),
        [ProbeReason::Forbidden, ProbeReason::Forbidden],
        "{prim:?}"
    );
    let mut admin = g.clone();
    admin.primary = cluster_config_from(&c, c.admin_kubeconfig());
    admin.standby = admin.primary.clone();
    let wide = after.get(&admin.primary, Side::Primary).await.unwrap();
    primary_caches(&wide, &admin, TIMEOUT)
        .await
        .expect("an empty namespace is listed");
    let gone = [ProbeReason::NotFound, ProbeReason::NotFound];
    let prim = probe_primary(&wide, &admin, &http, TIMEOUT, &[]).await;
    assert_eq!(reasons(&prim.workloads), gone, "{prim:?}");
    let stby = probe_standby(&wide, &admin, TIMEOUT).await;
    assert_eq!(stby.workloads.reason, ProbeReason::NotFound);
    assert_eq!(
        stby.record,
        Ok(FailoverRecord::default()),
        "a missing record is no error"
    );
    let prim = primary_until(&daemon, &g, &http, |o| {
        o.workloads.iter().all(|(_, w)| !w.passed())
    })
    .await;
    for (id, o) in &prim.workloads {
        assert!(
            matches!(o.reason, ProbeReason::NotFound | ProbeReason::Forbidden),
            "{id}: {o:?}"
        );
    }

    // The API server is down: nothing listens on its port. `/readyz` says so at once,
    // and a command's wait for caches ends with it.
    c.stop_apiserver().await.unwrap();
    let (prim, _) =
        probe_primary_since(&daemon, &g, &http, TIMEOUT, &[], Some(Instant::now())).await;
    assert_eq!(prim.api.reason, ProbeReason::Refused, "{prim:?}");
    assert_unknown(
        &prim,
        "cached state not trusted while /readyz fails (refused)",
    );
    assert_eq!(prim.deployments, None);
    assert!(prim.api.latency < TIMEOUT);
    let mut later = daemon_clusters(TIMEOUT, interval);
    let late = later.get(&g.primary, Side::Primary).await.unwrap();
    let started = Instant::now();
    let unknown = primary_caches(&late, &g, TIMEOUT).await.unwrap_err();
    assert_eq!(unknown.reason.evidence(), Evidence::Unknown, "{unknown:?}");
    let prim = probe_primary(&late, &g, &http, TIMEOUT, &[]).await;
    let took = started.elapsed();
    assert_eq!(prim.api.reason, ProbeReason::Refused, "{prim:?}");
    assert_unknown(
        &prim,
        "cached state not trusted while /readyz fails (refused)",
    );
    assert!(
        took < TIMEOUT,
        "not waiting for caches that cannot start: {took:?}"
    );
}

/// The probes as the daemon runs them: Deployments, Pods and the record from watches
/// shared per cluster and namespace. A Pod turning unready shows at the next tick; an
/// API server stop breaks the watches within one interval, making the workload signals
/// unknown while `/readyz` carries the down evidence; they recover when it returns.
#[tokio::test]
async fn cached_probes_follow_the_watches() {
    cached_probes_follow_the_watches_in(WatchScope::Namespaces).await;
}

/// The same with one watch per kind across all namespaces (`watch_scope = "cluster"`),
/// the daemon's user granted the shipped ClusterRole.
#[tokio::test]
async fn cached_probes_follow_cluster_wide_watches() {
    cached_probes_follow_the_watches_in(WatchScope::Cluster).await;
}

async fn cached_probes_follow_the_watches_in(scope: WatchScope) {
    use kube_failover::kube::watch_cache::Freshness;

    let _serial = SERIAL.lock().await;
    let pair = ClusterPair::start().await.expect("test bed starts");
    let (primary, standby) = (&pair.primary, &pair.standby);
    if scope == WatchScope::Cluster {
        for c in [primary, standby] {
            c.grant_daemon_cluster_role(Path::new("cluster-watch/clusterrole.yaml"))
                .await
                .expect("cluster role granted");
        }
    }
    let g = group(primary, standby);
    let interval = Duration::from_secs(1);
    let mut clusters = Clusters::new(
        ClientOptions::for_call_timeout(TIMEOUT),
        interval,
        TIMEOUT,
        None,
        scope,
    );
    let p = clusters.get(&g.primary, Side::Primary).await.unwrap();
    let s = clusters.get(&g.standby, Side::Standby).await.unwrap();
    let again = clusters.get(&g.primary, Side::Primary).await.unwrap();
    assert!(std::sync::Arc::ptr_eq(&p, &again), "one handle per cluster");
    assert_eq!(clusters.len(), 2);
    let http = reqwest::Client::new();

    let prim = cached::probe_primary(&p, &g, &http, TIMEOUT, &[]).await;
    assert!(prim.api.passed(), "{prim:?}");
    assert_eq!(reasons(&prim.workloads), [ProbeReason::Ok, ProbeReason::Ok]);
    assert_eq!(prim.deployments.as_ref().map(Vec::len), Some(2));
    let stby = cached::probe_standby(&s, &g, TIMEOUT).await;
    assert!(stby.api.passed() && stby.workloads.passed(), "{stby:?}");
    assert_eq!(stby.record, Ok(FailoverRecord::default()));

    // A Pod turning unready is seen at the next tick.
    let trigger = primary.trigger_deployment();
    primary.set_pods_ready(&trigger, false).await.unwrap();
    tokio::time::sleep(interval).await;
    let prim = cached::probe_primary(&p, &g, &http, TIMEOUT, &[]).await;
    assert_eq!(
        reasons(&prim.workloads),
        [ProbeReason::Unready, ProbeReason::Ok],
        "{prim:?}"
    );
    primary.set_pods_ready(&trigger, true).await.unwrap();
    tokio::time::sleep(interval).await;
    let prim = cached::probe_primary(&p, &g, &http, TIMEOUT, &[]).await;
    assert_eq!(reasons(&prim.workloads), [ProbeReason::Ok, ProbeReason::Ok]);

    // A stopped API server breaks the watches within one interval, by themselves.
    let deployments = p.deployments(primary.namespace());
    primary.stop_apiserver().await.unwrap();
    tokio::time::sleep(interval).await;
    assert_ne!(deployments.freshness(), Freshness::Live);
    let prim = cached::probe_primary(&p, &g, &http, TIMEOUT, &[]).await;
    assert_eq!(prim.api.reason, ProbeReason::Refused, "{prim:?}");
    for (id, o) in &prim.workloads {
        assert_eq!(o.reason.evidence(), Evidence::Unknown, "{id}: {o:?}");
    }
    assert_eq!(prim.deployments, None);

    // Back: the watches list again and the signals recover.
    primary.start_apiserver().await.unwrap();
    let start = Instant::now();
    loop {
        tokio::time::sleep(interval).await;
        let prim = cached::probe_primary(&p, &g, &http, TIMEOUT, &[]).await;
        if prim.api.passed() && reasons(&prim.workloads) == [ProbeReason::Ok, ProbeReason::Ok] {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no recovery: {prim:?}"
        );
    }
}

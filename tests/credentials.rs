//! The daemon's clients against real API servers when credentials change under them: a
//! token revoked and rotated on disk, and an exec credential plugin that hangs. The
//! clients are those of a cluster handle, as the daemon holds them (one for calls, one
//! for watches), probed by the daemon's probes.

use kube_failover::config::{ClusterConfig, GroupConfig, WatchScope, WorkloadConfig};
use kube_failover::kube::client::ClientOptions;
use kube_failover::kube::cluster::{ClusterHandle, Clusters};
use kube_failover::model::{Evidence, PrimaryObservation, ProbeReason, Side};
use kube_failover::probe::api;
use kube_failover::probe::cached::{primary_caches, probe_primary_since};
use kube_failover_testbed::{Cluster, TokenCredentials};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Each test starts a control plane; on two cores, one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn cluster_config(c: &Cluster, kubeconfig: &Path) -> ClusterConfig {
    ClusterConfig {
        kubeconfig: Some(kubeconfig.to_path_buf()),
        context: Some(c.context().to_string()),
        namespace: c.namespace().to_string(),
    }
}

fn group(c: &Cluster, kubeconfig: &Path) -> GroupConfig {
    GroupConfig {
        name: "env0".into(),
        primary: cluster_config(c, kubeconfig),
        standby: cluster_config(c, kubeconfig),
        workloads: vec![
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
        ],
        policy: Default::default(),
        http_checks: Vec::new(),
        record_name: None,
        state: Default::default(),
        drift: Default::default(),
        guards: Default::default(),
    }
}

/// The cluster of `group`'s primary as the daemon holds it, its calls bounded by
/// `timeout`; its watches last `watch_timeout` (the daemon's `daemon.watch_timeout`).
async fn handle(
    group: &GroupConfig,
    timeout: Duration,
    watch_timeout: Option<Duration>,
) -> Arc<ClusterHandle> {
    Clusters::new(
        ClientOptions::for_call_timeout(timeout),
        Duration::from_secs(1),
        timeout,
        watch_timeout,
        WatchScope::Namespaces,
    )
    .get(&group.primary, Side::Primary)
    .await
    .expect("handle")
}

/// One probe of the primary with a `/readyz` sent now.
async fn probe(
    cluster: &Arc<ClusterHandle>,
    group: &GroupConfig,
    timeout: Duration,
) -> PrimaryObservation {
    let http = reqwest::Client::new();
    probe_primary_since(cluster, group, &http, timeout, &[], Some(Instant::now()))
        .await
        .0
}

/// Probes until `done` holds, for at most `bound`; the last observation either way.
async fn probe_until(
    cluster: &Arc<ClusterHandle>,
    group: &GroupConfig,
    timeout: Duration,
    bound: Duration,
    done: impl Fn(&PrimaryObservation) -> bool,
) -> (PrimaryObservation, Duration) {
    let start = Instant::now();
    loop {
        let obs = probe(cluster, group, timeout).await;
        if done(&obs) || start.elapsed() > bound {
            return (obs, start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn all_pass(obs: &PrimaryObservation) -> bool {
    obs.api.passed() && obs.workloads.iter().all(|(_, o)| o.passed())
}

/// A revoked token: `/readyz` answers 401 at once, the watches when they are resumed
/// (their grant is checked when they start; 1 s watches here). A token rotated on disk:
/// the same handle, not rebuilt, reads it after the 401s, and its caches are listed
/// again.
#[tokio::test]
async fn a_revoked_token_is_unauthorized_and_a_rotated_one_works_in_the_same_client() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start("creds-token").await.expect("cluster starts");
    let mut creds = TokenCredentials::create(&cluster, "io")
        .await
        .expect("token identity");
    let timeout = Duration::from_secs(3);
    let group = group(&cluster, creds.kubeconfig());
    let cluster_handle = handle(&group, timeout, Some(Duration::from_secs(1))).await;
    let client = cluster_handle.client();

    primary_caches(&cluster_handle, &group, timeout)
        .await
        .expect("caches established");
    let obs = probe(&cluster_handle, &group, timeout).await;
    assert!(all_pass(&obs), "{obs:?}");

    creds.revoke().await.expect("revoke");
    let out = api::readyz(client, timeout).await;
    assert_eq!(out.reason, ProbeReason::Unauthorized, "{out:?}");
    let unauthorized = |obs: &PrimaryObservation| {
        obs.workloads
            .iter()
            .all(|(_, o)| o.reason == ProbeReason::Unauthorized)
    };
    let (obs, took) = probe_until(
        &cluster_handle,
        &group,
        timeout,
        Duration::from_secs(15),
        unauthorized,
    )
    .await;
    eprintln!("measured: token revoked -> watches unauthorized: {took:?}");
    assert_eq!(obs.api.reason, ProbeReason::Unauthorized, "{obs:?}");
    for (name, out) in &obs.workloads {
        assert_eq!(out.reason, ProbeReason::Unauthorized, "{name}: {out:?}");
    }

    // The same handle, no restart: the 401s above made both its clients re-read the
    // file.
    creds.rotate().await.expect("rotate");
    assert!(api::readyz(client, timeout).await.passed());
    let (obs, took) = probe_until(
        &cluster_handle,
        &group,
        timeout,
        Duration::from_secs(30),
        all_pass,
    )
    .await;
    eprintln!("measured: token rotated -> caches serve again: {took:?}");
    assert!(all_pass(&obs), "{obs:?}");
    // Clones share the reloaded credentials.
    assert!(api::readyz(&client.clone(), timeout).await.passed());
}

/// The runtime has one thread: were anything to block it while the plugin hangs, the
/// ticker would miss its beats.
#[tokio::test(flavor = "current_thread")]
async fn a_hanging_exec_plugin_never_stalls_a_bounded_probe() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start("creds-exec").await.expect("cluster starts");
    let creds = TokenCredentials::create(&cluster, "hang")
        .await
        .expect("token identity");
    creds
        .set_exec_delay(Some(Duration::from_secs(60)))
        .expect("plugin sleeps");
    let probe_timeout = Duration::from_secs(1);
    let group = group(&cluster, creds.exec_kubeconfig());
    // Building the handle's clients runs no plugin.
    let cluster_handle = handle(&group, probe_timeout, None).await;
    assert_eq!(creds.exec_runs(), 0);

    let beats = Arc::new(AtomicU64::new(0));
    let max_gap_ms = Arc::new(AtomicU64::new(0));
    let ticker = {
        let (beats, max_gap_ms) = (beats.clone(), max_gap_ms.clone());
        tokio::spawn(async move {
            let mut last = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let gap = last.elapsed().as_millis() as u64;
                max_gap_ms.fetch_max(gap, Ordering::Relaxed);
                beats.fetch_add(1, Ordering::Relaxed);
                last = Instant::now();
            }
        })
    };
    let mut slowest = Duration::ZERO;
    for round in 0..3 {
        let start = Instant::now();
        let obs = probe(&cluster_handle, &group, probe_timeout).await;
        let took = start.elapsed();
        slowest = slowest.max(took);
        assert!(
            took < probe_timeout + Duration::from_millis(500),
            "a probe round took {took:?}"
        );
        assert_eq!(obs.api.reason, ProbeReason::Unauthorized, "{:?}", obs.api);
        assert!(
            obs.api.detail.contains("exec credential plugin")
                && obs.api.detail.contains("did not answer within 750ms"),
            "{}",
            obs.api.detail
        );
        // The caches' first list fails the same way; later, while it is tried again,
        // they are relisting. Either way unknown: never down evidence.
        for (name, out) in &obs.workloads {
            assert_eq!(out.reason.evidence(), Evidence::Unknown, "{name}: {out:?}");
            if round == 0 {
                assert_eq!(out.reason, ProbeReason::Unauthorized, "{name}: {out:?}");
                assert!(out.detail.contains("exec credential plugin"), "{out:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "measured: probe round with a hanging exec plugin: slowest {slowest:?}, ticker max gap {} ms over {} beats",
        max_gap_ms.load(Ordering::Relaxed),
        beats.load(Ordering::Relaxed)
    );
    assert!(max_gap_ms.load(Ordering::Relaxed) < 500);
    assert_eq!(
        creds.exec_runs(),
        2,
        "one plugin run at a time per client: the handle's for calls and for watches"
    );

    // The plugin answers again: once the hung run is cut off, the next one serves.
    creds.set_exec_delay(None).expect("plugin answers");
    let start = Instant::now();
    let mut recovered = None;
    while start.elapsed() < Duration::from_secs(30) {
        if api::readyz(cluster_handle.client(), probe_timeout)
            .await
            .passed()
        {
            recovered = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ticker.abort();
    let recovered = recovered.expect("credentials again within 30s");
    eprintln!("measured: hanging plugin fixed -> /readyz passes: {recovered:?}");
    let obs = probe(&cluster_handle, &group, probe_timeout).await;
    assert!(obs.api.passed(), "{:?}", obs.api);
    // The watches' client gets its credentials too: the caches are listed and serve.
    let (obs, took) = probe_until(
        &cluster_handle,
        &group,
        probe_timeout,
        Duration::from_secs(30),
        all_pass,
    )
    .await;
    eprintln!("measured: hanging plugin fixed -> caches serve: {took:?}");
    assert!(all_pass(&obs), "{obs:?}");
}

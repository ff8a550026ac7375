//! The daemon's clients against real API servers when credentials change under them: a
//! token revoked and rotated on disk, and an exec credential plugin that hangs.

use kube_failover::config::{ClusterConfig, GroupConfig, WorkloadConfig};
use kube_failover::kube::client::{ClientOptions, client_for_with};
use kube_failover::model::{ProbeReason, Side};
use kube_failover::probe::{api, probe_primary};
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

#[tokio::test]
async fn a_revoked_token_is_unauthorized_and_a_rotated_one_works_in_the_same_client() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start("creds-token").await.expect("cluster starts");
    let mut creds = TokenCredentials::create(&cluster, "io")
        .await
        .expect("token identity");
    let timeout = Duration::from_secs(3);
    let client = client_for_with(
        &cluster_config(&cluster, creds.kubeconfig()),
        Side::Primary,
        ClientOptions::for_call_timeout(timeout),
    )
    .await
    .expect("client");
    let group = group(&cluster, creds.kubeconfig());
    let http = reqwest::Client::new();

    let obs = probe_primary(&client, &group, &http, timeout, &[]).await;
    assert!(obs.api.passed(), "{:?}", obs.api);
    for (name, out) in &obs.workloads {
        assert!(out.passed(), "{name}: {out:?}");
    }

    creds.revoke().await.expect("revoke");
    let out = api::readyz(&client, timeout).await;
    assert_eq!(out.reason, ProbeReason::Unauthorized, "{out:?}");
    let obs = probe_primary(&client, &group, &http, timeout, &[]).await;
    for (name, out) in &obs.workloads {
        assert_eq!(out.reason, ProbeReason::Unauthorized, "{name}: {out:?}");
    }

    // The same client object, no restart: the 401s above made it re-read the file.
    creds.rotate().await.expect("rotate");
    let obs = probe_primary(&client, &group, &http, timeout, &[]).await;
    assert!(obs.api.passed(), "{:?}", obs.api);
    for (name, out) in &obs.workloads {
        assert!(out.passed(), "{name}: {out:?}");
    }
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
    let client = client_for_with(
        &cluster_config(&cluster, creds.exec_kubeconfig()),
        Side::Primary,
        ClientOptions::for_call_timeout(probe_timeout),
    )
    .await
    .expect("building the client runs no plugin");
    let group = group(&cluster, creds.exec_kubeconfig());
    let http = reqwest::Client::new();

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
    for _ in 0..3 {
        let start = Instant::now();
        let obs = probe_primary(&client, &group, &http, probe_timeout, &[]).await;
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
        for (name, out) in &obs.workloads {
            assert_eq!(out.reason, ProbeReason::Unauthorized, "{name}: {out:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "measured: probe round with a hanging exec plugin: slowest {slowest:?}, ticker max gap {} ms over {} beats",
        max_gap_ms.load(Ordering::Relaxed),
        beats.load(Ordering::Relaxed)
    );
    assert!(max_gap_ms.load(Ordering::Relaxed) < 500);
    assert_eq!(creds.exec_runs(), 1, "one plugin run at a time");

    // The plugin answers again: once the hung run is cut off, the next one serves.
    creds.set_exec_delay(None).expect("plugin answers");
    let start = Instant::now();
    let mut recovered = None;
    while start.elapsed() < Duration::from_secs(30) {
        if api::readyz(&client, probe_timeout).await.passed() {
            recovered = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ticker.abort();
    let recovered = recovered.expect("credentials again within 30s");
    eprintln!("measured: hanging plugin fixed -> probe passes: {recovered:?}");
    let obs = probe_primary(&client, &group, &http, probe_timeout, &[]).await;
    assert!(obs.api.passed(), "{:?}", obs.api);
}

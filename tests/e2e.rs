//! End-to-end scenarios: the real daemon binary against real API servers (the test bed),
//! with the restricted identity. Each test asserts what happened in the clusters.

use crate::support;

use kube::api::{Api, ListParams, Patch, PatchParams};
use kube_failover_testbed::{FaultProxy, NODE_NAME, ProxyMode};
use std::time::Duration;
use support::*;

fn latency(each_way: Duration) -> ProxyMode {
    ProxyMode::Latency {
        to_upstream: each_way,
        to_client: each_way,
    }
}

/// Scenarios 1 and 7: the primary's API server stops → the standby is promoted exactly
/// once, within the budget; the primary comes back → its workloads are fenced to 0.
#[tokio::test(flavor = "multi_thread")]
async fn primary_api_stopped_promotes_once_then_fences_the_returning_primary() {
    let pair = pair().await;
    let d = Daemon::start(&pair, &DaemonOpts::default()).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;

    let took = stop_primary_api_and_time_promotion(&pair, Duration::from_millis(50)).await;
    measured("SIGTERM -> primary apiserver exited", took.exited);
    measured("primary stopped -> standby scaled", took.scaled);
    measured("primary stopped -> standby Ready", took.ready);
    d.wait_state("promoted", Duration::from_secs(15)).await;
    let cm = record(&pair).await.expect("record written");
    assert_eq!(field_of(&cm, "phase").as_deref(), Some("promoted"));
    assert_eq!(field_of(&cm, "epoch").as_deref(), Some("1"));
    assert!(events_with_reason(&pair.standby, "KubeFailoverPromoted").await >= 2);

    // Stay promoted for a while: nothing else happens, exactly one promotion.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(d.metric(STARTED).await, Some(1.0));
    let succeeded = r#"kube_failover_promotions_total{group="env0",result="succeeded"}"#;
    assert_eq!(d.metric(succeeded).await, Some(1.0));

    pair.primary
        .start_apiserver()
        .await
        .expect("restart primary apiserver");
    let back = std::time::Instant::now();
    let fenced = wait_for(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { replicas(&pair.primary).await == 0 },
    )
    .await
    .expect("primary fenced");
    measured("primary API back -> primary fenced", fenced);
    assert!(back.elapsed() < Duration::from_secs(30));
    wait_for(
        Duration::from_secs(10),
        Duration::from_millis(200),
        || async { record_field(&pair, "fenced_at").await.is_some() },
    )
    .await
    .expect("fence recorded");
    assert!(events_with_reason(&pair.primary, "KubeFailoverFenced").await >= 1);
    assert_eq!(replicas(&pair.standby).await, 2, "the standby stays active");
    assert_eq!(d.metric(STARTED).await, Some(1.0));
}

/// Scenario 2: the primary's agent Pods go unready while its API is fine → promotion,
/// and the reachable primary is fenced at once.
#[tokio::test(flavor = "multi_thread")]
async fn unready_primary_pods_promote() {
    let pair = pair().await;
    let d = Daemon::start(&pair, &DaemonOpts::default()).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    let trigger = pair.primary.trigger_deployment();
    pair.primary
        .set_pods_ready(&trigger, false)
        .await
        .expect("make trigger pods unready");
    d.wait_state("promoted", Duration::from_secs(30)).await;
    let g = d.group().await.expect("status");
    assert!(
        g.signals
            .iter()
            .any(|s| s.name == "workload:env0=agent-trigger" && !s.up),
        "{g:#?}"
    );
    wait_for(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async { replicas(&pair.primary).await == 0 },
    )
    .await
    .expect("primary fenced");
    assert_eq!(replicas(&pair.standby).await, 2);
    assert_eq!(d.metric(STARTED).await, Some(1.0));
}

/// Scenario 3: failures shorter than the threshold, over and over → no promotion.
#[tokio::test(flavor = "multi_thread")]
async fn flapping_below_the_threshold_never_promotes() {
    let pair = pair().await;
    let opts = DaemonOpts {
        failure_threshold: 4,
        ..DaemonOpts::default()
    };
    let (d, proxy) = Daemon::start_via_proxy::<FaultProxy>(&pair, Via::Primary, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    // Only a leader would promote: prove it leads, or the test proves nothing.
    d.wait_leading(Duration::from_secs(20)).await;
    // 2 s of resets fail at most 3 one-second probes, below the threshold of 4.
    for _ in 0..8 {
        proxy.set_mode(ProxyMode::Reset);
        tokio::time::sleep(Duration::from_secs(2)).await;
        proxy.set_mode(ProxyMode::Pass);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let failures = d
        .metric(r#"kube_failover_probe_success{cluster="primary",group="env0",signal="api"}"#)
        .await;
    assert!(failures.is_some());
    let m = d.metrics().await;
    let api_failures: f64 = m
        .lines()
        .filter(|l| {
            l.starts_with("kube_failover_probe_failures_total{")
                && l.contains(r#"cluster="primary""#)
                && l.contains(r#"signal="api""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(api_failures >= 8.0, "the blips were seen: {api_failures}");
    assert_eq!(d.metric(STARTED).await, Some(0.0));
    assert_eq!(replicas(&pair.standby).await, 0);
    assert!(record(&pair).await.is_none(), "no record was ever written");
}

/// A primary API server that resets every connection for 1.6 s and answers for 1.4 s,
/// over and over (1 s x 3: below the threshold). Its watches are cut with it, so the
/// workload signals are unknown in each down window; that unknown follows from the
/// API's own down evidence: the group is `primary_suspect`, never `primary_unobservable`
/// (a blind watcher), and no Event is written. Counted from /status sampled every 100 ms
/// and from the daemon's log.
#[tokio::test(flavor = "multi_thread")]
async fn a_flapping_api_server_is_a_suspect_primary_not_a_blind_watcher() {
    const CYCLES: u32 = 15;
    let pair = pair().await;
    let opts = DaemonOpts::default();
    let (d, proxy) = Daemon::start_via_proxy::<FaultProxy>(&pair, Via::Primary, &opts).await;
    d.wait_leading(Duration::from_secs(20)).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    let done = std::sync::atomic::AtomicBool::new(false);
    let flapping = async {
        for _ in 0..CYCLES {
            proxy.set_mode(ProxyMode::Reset);
            tokio::time::sleep(Duration::from_millis(1_600)).await;
            proxy.set_mode(ProxyMode::Pass);
            tokio::time::sleep(Duration::from_millis(1_400)).await;
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let sampling = async {
        let mut seen: Vec<String> = Vec::new();
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            if let Some(g) = d.group().await
                && seen.last() != Some(&g.state.to_string())
            {
                seen.push(g.state.to_string());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        seen
    };
    let ((), sampled) = tokio::join!(flapping, sampling);
    assert!(
        sampled.iter().any(|s| s == "primary_suspect"),
        "the fault was in force: {sampled:?}"
    );
    assert!(
        sampled.iter().all(|s| s != "primary_unobservable"),
        "{sampled:?}"
    );
    let log = std::fs::read_to_string(&d.log).expect("daemon log");
    let changes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("state changed"))
        .collect();
    let minutes = f64::from(CYCLES) * 3.0 / 60.0;
    let events = events_with_reason(&pair.standby, "KubeFailoverPrimaryUnobservable").await
        + events_with_reason(&pair.primary, "KubeFailoverPrimaryUnobservable").await;
    eprintln!(
        "measured: flapping 1.6 s down / 1.4 s up: {:.1} state changes and {:.1} Events per minute",
        changes.len() as f64 / minutes,
        events as f64 / minutes
    );
    // The fault was in force: the group went suspect on the API's failures.
    assert!(
        changes.iter().any(|l| l.contains("primary_suspect")),
        "{}",
        d.log_text()
    );
    let blind: Vec<&&str> = changes
        .iter()
        .filter(|l| l.contains("primary_unobservable"))
        .collect();
    assert!(blind.is_empty(), "{blind:#?}");
    assert_eq!(events, 0, "no Event for a blind watcher");
    assert_eq!(d.metric(STARTED).await, Some(0.0));
    assert_eq!(replicas(&pair.standby).await, 0);
}

/// Scenario 4: the standby's API is down when the primary fails → blocked, visibly; the
/// standby comes back → promoted.
#[tokio::test(flavor = "multi_thread")]
async fn unfit_standby_blocks_until_it_returns() {
    let pair = pair().await;
    let d = Daemon::start(&pair, &DaemonOpts::default()).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    pair.standby.stop_apiserver().await.expect("stop standby");
    pair.primary.stop_apiserver().await.expect("stop primary");
    d.wait_state("blocked", Duration::from_secs(20)).await;
    let g = d.group().await.expect("status");
    assert!(!g.standby_fit);
    assert!(
        g.last_decision
            .reasons
            .iter()
            .any(|r| r == "standby_api_down"),
        "{g:#?}"
    );
    assert_eq!(
        d.metric(r#"kube_failover_standby_fit{group="env0"}"#).await,
        Some(0.0)
    );
    assert_eq!(
        d.metric(r#"kube_failover_group_state{group="env0",state="blocked"}"#)
            .await,
        Some(1.0)
    );
    pair.standby.start_apiserver().await.expect("start standby");
    d.wait_state("promoted", Duration::from_secs(40)).await;
    assert_eq!(replicas(&pair.standby).await, 2);
    assert_eq!(d.metric(STARTED).await, Some(1.0));
}

/// Scenario 5: latency below the probe timeout is fine; above it, it is a failure.
#[tokio::test(flavor = "multi_thread")]
async fn latency_counts_only_above_the_probe_timeout() {
    let pair = pair().await;
    let (d, proxy) =
        Daemon::start_via_proxy::<FaultProxy>(&pair, Via::Primary, &DaemonOpts::default()).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    proxy.set_mode(latency(Duration::from_millis(15)));
    tokio::time::sleep(Duration::from_secs(6)).await;
    let timeouts = r#"kube_failover_probe_failures_total{cluster="primary",group="env0",reason="timeout",signal="api"}"#;
    assert_eq!(d.metric(timeouts).await, Some(0.0));
    assert_eq!(d.group().await.expect("status").state, "primary_active");

    proxy.set_mode(latency(Duration::from_secs(1)));
    d.wait_state("promoted", Duration::from_secs(30)).await;
    assert!(d.metric(timeouts).await.unwrap_or(0.0) >= 3.0);
    assert_eq!(d.metric(STARTED).await, Some(1.0));
}

/// Scenario 6: only the watcher's path is cut (both clusters blackholed) → frozen, no
/// promotion; the path heals → back to primary_active.
#[tokio::test(flavor = "multi_thread")]
async fn watcher_only_partition_freezes() {
    let pair = pair().await;
    let opts = DaemonOpts {
        freeze_for: Duration::from_secs(5),
        ..DaemonOpts::default()
    };
    let (d, pp, sp) = Daemon::start_via_proxies::<FaultProxy>(&pair, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    pp.set_mode(ProxyMode::Blackhole);
    sp.set_mode(ProxyMode::Blackhole);
    d.wait_state("frozen", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let g = d.group().await.expect("status");
    assert_eq!(g.state, "frozen", "{g:#?}");
    assert!(
        g.last_decision
            .reasons
            .iter()
            .any(|r| r == "all_clusters_unreachable")
    );
    assert_eq!(d.metric(STARTED).await, Some(0.0));
    pp.set_mode(ProxyMode::Pass);
    sp.set_mode(ProxyMode::Pass);
    d.wait_state("primary_active", Duration::from_secs(30))
        .await;
    assert_eq!(replicas(&pair.standby).await, 0);
    assert_eq!(replicas(&pair.primary).await, 2);
    assert!(record(&pair).await.is_none());
}

/// Scenario 8: a `helm upgrade` sets the standby trigger to 1 while the primary is
/// active → reported and scaled back to 0.
#[tokio::test(flavor = "multi_thread")]
async fn standby_replicas_are_reported_and_corrected() {
    let pair = pair().await;
    let d = Daemon::start(&pair, &DaemonOpts::default()).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    // Measured from a settled leader: a starting instance first waits to see its peers.
    d.wait_leading(Duration::from_secs(20)).await;
    let trigger = pair.standby.trigger_deployment();
    pair.standby
        .scale(&trigger, 1)
        .await
        .expect("scale standby");
    let corrected = wait_for(
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async { pair.standby.replicas(&trigger).await.expect("replicas") == 0 },
    )
    .await
    .expect("standby corrected");
    measured("standby trigger at 1 -> corrected", corrected);
    let corrections = r#"kube_failover_standby_corrections_total{group="env0",result="success"}"#;
    d.wait_metric(corrections, Duration::from_secs(5), |v| v >= 1.0)
        .await;
    assert!(events_with_reason(&pair.standby, "KubeFailoverStandbyCorrected").await >= 1);
    assert_eq!(d.metric(STARTED).await, Some(0.0));
    assert_eq!(
        replicas(&pair.primary).await,
        2,
        "the primary is left alone"
    );
}

/// Scenario 8 with correction off: reported only.
#[tokio::test(flavor = "multi_thread")]
async fn standby_replicas_are_only_reported_when_correction_is_off() {
    let pair = pair().await;
    let opts = DaemonOpts {
        correct_standby: false,
        ..DaemonOpts::default()
    };
    let d = Daemon::start(&pair, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    // Only a leader corrects: without one, leaving the standby alone would prove nothing.
    d.wait_leading(Duration::from_secs(20)).await;
    let trigger = pair.standby.trigger_deployment();
    pair.standby
        .scale(&trigger, 1)
        .await
        .expect("scale standby");
    let gauge = r#"kube_failover_unexpected_standby_replicas{group="env0"}"#;
    wait_for(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async { d.metric(gauge).await == Some(1.0) },
    )
    .await
    .expect("unexpected replicas reported");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(pair.standby.replicas(&trigger).await.expect("replicas"), 1);
    let g = d.group().await.expect("status");
    assert_eq!(g.unexpected_standby_replicas, 1);
}

/// Scenario 9: the daemon is SIGKILLed in the middle of a promotion → the restarted
/// daemon completes it, once.
#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_killed_mid_promotion_is_completed_by_its_successor() {
    let pair = pair().await;
    // Keep the standby's Pods from being Ready: the promotion stays in `promoting`.
    let proxy_name = pair.standby.proxy_deployment();
    let api: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(pair.standby.client(), pair.standby.namespace());
    let park = serde_json::json!({"spec": {"template": {"spec": {"nodeName": "no-such-node"}}}});
    api.patch(&proxy_name, &PatchParams::default(), &Patch::Merge(&park))
        .await
        .expect("park standby proxy pods");

    let mut d = Daemon::start(&pair, &DaemonOpts::default()).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    pair.primary.stop_apiserver().await.expect("stop primary");
    d.wait_state("promoting", Duration::from_secs(20)).await;
    d.kill().await;
    let cm = record(&pair).await.expect("record");
    assert_eq!(field_of(&cm, "phase").as_deref(), Some("promoting"));

    let unpark = serde_json::json!({"spec": {"template": {"spec": {"nodeName": NODE_NAME}}}});
    api.patch(&proxy_name, &PatchParams::default(), &Patch::Merge(&unpark))
        .await
        .expect("unpark standby proxy pods");
    let d2 = Daemon::start_with_config(&d.config, d.admin, pair.primary.dir()).await;
    d2.wait_state("promoted", Duration::from_secs(30)).await;
    let cm = record(&pair).await.expect("record");
    assert_eq!(
        field_of(&cm, "epoch").as_deref(),
        Some("1"),
        "never started twice"
    );
    assert_eq!(d2.metric(STARTED).await, Some(0.0));
    assert_eq!(replicas(&pair.standby).await, 2);
}

/// Scenario 10: observe mode writes nothing (resourceVersions unchanged) and still
/// reports what it would do.
#[tokio::test(flavor = "multi_thread")]
async fn observe_mode_never_writes() {
    let pair = pair().await;
    let api: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(pair.standby.client(), pair.standby.namespace());
    let versions = |list: Vec<k8s_openapi::api::apps::v1::Deployment>| {
        let mut v: Vec<(String, String)> = list
            .into_iter()
            .map(|d| {
                (
                    d.metadata.name.unwrap_or_default(),
                    d.metadata.resource_version.unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = versions(api.list(&ListParams::default()).await.expect("list").items);
    let opts = DaemonOpts {
        mode: "observe",
        ..DaemonOpts::default()
    };
    let d = Daemon::start(&pair, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    // The leader counts the would-be promotion (any other instance leaves it to it).
    let took = d.wait_leading(Duration::from_secs(20)).await;
    measured("observe mode: start -> leading the group", took);
    pair.primary.stop_apiserver().await.expect("stop primary");
    d.wait_state("primary_down", Duration::from_secs(20)).await;
    let g = d.group().await.expect("status");
    assert!(g.last_decision.would_promote);
    assert_eq!(
        d.metric(r#"kube_failover_would_promote{group="env0"}"#)
            .await,
        Some(1.0)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = versions(api.list(&ListParams::default()).await.expect("list").items);
    assert_eq!(before, after, "no Deployment in the standby was written");
    assert!(record(&pair).await.is_none(), "no record was written");
    assert_eq!(
        events_with_reason(&pair.standby, "KubeFailoverPromoted").await,
        0
    );
}

/// Scenario 11: bad credentials, a forbidden verb and a deleted namespace give clear
/// reasons, no crash, and metrics that say why.
#[tokio::test(flavor = "multi_thread")]
async fn bad_credentials_forbidden_and_deleted_namespace_are_explained() {
    let pair = pair().await;
    let opts = DaemonOpts {
        primary_kubeconfig: Some(pair.primary.untrusted_kubeconfig().to_path_buf()),
        // The API server checks a watch's grant when it starts: the revoked binding
        // below shows when the standby's watches are resumed.
        watch_timeout: Some(Duration::from_secs(5)),
        ..DaemonOpts::default()
    };
    let d = Daemon::start(&pair, &opts).await;
    d.wait_group("bad credentials reported", Duration::from_secs(15), |g| {
        g.signals
            .iter()
            .any(|s| s.name == "api" && s.last_reason.as_ref().is_some_and(|r| r != "ok"))
    })
    .await;
    let g = d.group().await.expect("status");
    let api = g
        .signals
        .iter()
        .find(|s| s.name == "api")
        .expect("api signal");
    assert!(
        api.last_reason
            .as_ref()
            .is_some_and(|r| r == "unauthorized" || r == "tls"),
        "{api:#?}"
    );

    // Forbidden: take the daemon's RoleBinding away in the standby.
    let rb: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(pair.standby.client(), pair.standby.namespace());
    for b in rb.list(&ListParams::default()).await.expect("list").items {
        rb.delete(&b.metadata.name.unwrap_or_default(), &Default::default())
            .await
            .expect("delete rolebinding");
    }
    d.wait_group("forbidden reported", Duration::from_secs(15), |g| {
        g.standby.workloads_reason == "forbidden"
    })
    .await;
    let forbidden = r#"kube_failover_probe_failures_total{cluster="standby",group="env0",reason="forbidden",signal="workloads"}"#;
    d.wait_metric(forbidden, Duration::from_secs(5), |v| v >= 1.0)
        .await;
    assert!(!d.group().await.expect("status").standby_fit);

    // Deleted namespace in the standby, seen by an identity that may look.
    drop(d);
    let opts = DaemonOpts {
        standby_kubeconfig: Some(pair.standby.admin_kubeconfig().to_path_buf()),
        ..DaemonOpts::default()
    };
    let d = Daemon::start(&pair, &opts).await;
    pair.standby
        .delete_namespace()
        .await
        .expect("delete namespace");
    d.wait_group("missing namespace reported", Duration::from_secs(20), |g| {
        g.standby.workloads_reason == "not_found"
    })
    .await;
    let g = d.group().await.expect("status");
    assert!(!g.standby_fit);
    assert!(
        g.standby.detail.contains(pair.standby.namespace()),
        "{g:#?}"
    );
    // Still alive and ticking.
    let health = reqwest::get(format!("http://{}/healthz", d.admin))
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
}

/// SIGTERM: readyz goes 503, the daemon exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_cleanly() {
    let pair = pair().await;
    let mut d = Daemon::start(&pair, &DaemonOpts::default()).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    let status = d.terminate().await;
    assert_eq!(status.code(), Some(0), "{}", d.log_text());
    assert!(d.log_text().contains("kube-failover stopped"));
}

/// Issue 8: a standby API that takes more than a second per call during a promotion.
/// The promoting tick makes several such calls in a row (record, lists, scales, Events)
/// and takes longer than three probe intervals, the old bound of `/healthz`. The loop is
/// making progress all along, so `/healthz` answers 200 at every sample (a liveness probe
/// would never restart it), the promotion completes, and the same process exits cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn slow_standby_calls_during_a_promotion_keep_the_daemon_healthy() {
    let pair = pair().await;
    let interval = Duration::from_secs(4);
    let opts = DaemonOpts {
        interval,
        // A standby probe is two calls in a row (Deployments, then their Pods).
        timeout: Duration::from_millis(3800),
        ..DaemonOpts::default()
    };
    let (mut d, sp) = Daemon::start_via_proxy::<FaultProxy>(&pair, Via::Standby, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let admin = d.admin;
        tokio::spawn(async move {
            let http = admin_client();
            let (mut samples, mut failures) = (0u32, Vec::new());
            let (mut last_tick, mut changed_at) = (None, std::time::Instant::now());
            let mut longest_tick_gap = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                samples += 1;
                match http.get(format!("http://{admin}/healthz")).send().await {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => failures.push(format!("{}: {:?}", r.status(), r.text().await)),
                    Err(e) => failures.push(e.to_string()),
                }
                let status = http.get(format!("http://{admin}/status")).send().await;
                if let Ok(report) =
                    async { status?.json::<kube_failover::status::StatusReport>().await }.await
                    && report.last_tick_unix != last_tick
                {
                    longest_tick_gap = longest_tick_gap.max(changed_at.elapsed());
                    (last_tick, changed_at) = (report.last_tick_unix, std::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (samples, failures, longest_tick_gap)
        })
    };

    // 0.7 s each way: a call on an open connection takes about 1.4 s.
    sp.set_mode(latency(Duration::from_millis(700)));
    pair.primary.stop_apiserver().await.expect("stop primary");
    d.wait_state("promoted", Duration::from_secs(60)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (samples, failures, longest_tick_gap) = sampler.await.expect("sampler");

    assert_eq!(replicas(&pair.standby).await, 2);
    assert_eq!(d.metric(STARTED).await, Some(1.0));
    measured("longest time between two finished ticks", longest_tick_gap);
    assert!(
        longest_tick_gap > interval * 3,
        "the slow standby should have stretched a tick beyond three intervals ({longest_tick_gap:?})"
    );
    assert!(samples >= 20, "only {samples} /healthz samples");
    assert!(
        failures.is_empty(),
        "/healthz failed {} of {samples} samples: {failures:?}\n{}",
        failures.len(),
        d.log_text()
    );
    sp.set_mode(ProxyMode::Pass);
    assert!(d.terminate().await.success(), "{}", d.log_text());
}

//! End-to-end: the coordination's cost on the standby does not grow with the number of
//! groups. One instance runs 1 group, then another runs 20, on the same pair; the Lease
//! requests the standby's API server counts itself (`apiserver_request_total`,
//! `resource="leases"`) per tick stay at one renewal of the instance's observer Lease
//! plus the resumptions of one watch, where every group used to list its Leases and
//! write two of them at every tick (60 requests per tick for 20 groups).

use crate::support;

use kube_failover_testbed::{Cluster, ClusterPair};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::*;

/// `apiserver_request_total{resource="leases"}` by verb.
async fn lease_requests(c: &Cluster) -> BTreeMap<String, f64> {
    let all = apiserver_requests(c)
        .await
        .expect("the API server's metrics");
    all.into_iter()
        .filter(|((_, resource), _)| resource == "leases")
        .map(|((verb, _), value)| (verb, value))
        .collect()
}

/// Every group led by `d`.
async fn leads_all(d: &Daemon, groups: &[String]) -> bool {
    let m = d.metrics().await;
    groups
        .iter()
        .all(|g| metric_value(&m, &format!(r#"kube_failover_leader{{group="{g}"}}"#)) == Some(1.0))
}

/// Lease requests per tick on the standby over `window`, by verb, with `groups`
/// configured in one instance (minus the same window without the daemon).
async fn per_tick(
    pair: &ClusterPair,
    groups: usize,
    window: Duration,
    baseline: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    let names: Vec<String> = (0..groups).map(|i| format!("env{i}")).collect();
    let opts = DaemonOpts {
        identity: Some(format!("load-{groups}")),
        extra_groups: names[1..].to_vec(),
        ..DaemonOpts::default()
    };
    let mut d = Daemon::start(pair, &opts).await;
    let led = wait_for(
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async { leads_all(&d, &names).await },
    )
    .await;
    assert!(led.is_some(), "not every group led:\n{}", d.log_text());
    // Past the first writes (the leader Leases are created once).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = lease_requests(&pair.standby).await;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let after = lease_requests(&pair.standby).await;
    let secs = started.elapsed().as_secs_f64();
    // Still leading every group: the terms were kept by the observer Lease alone.
    assert!(leads_all(&d, &names).await, "{}", d.log_text());
    let status = d.terminate().await;
    assert!(status.success(), "{}", d.log_text());
    // The interval is 1 s: ticks = seconds.
    after
        .iter()
        .map(|(verb, n)| {
            let base = baseline.get(verb).copied().unwrap_or(0.0) * secs;
            let v = (n - before.get(verb).copied().unwrap_or(0.0) - base).max(0.0) / secs;
            (verb.clone(), v)
        })
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn lease_requests_per_tick_do_not_grow_with_the_groups() {
    let pair = pair().await;
    let window = Duration::from_secs(12);
    // The test bed's own Lease traffic (the controller manager's leader election, the
    // node's heartbeat), measured over the same window before any daemon runs: the
    // metric has no namespace label.
    let b0 = lease_requests(&pair.standby).await;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let b1 = lease_requests(&pair.standby).await;
    let baseline: BTreeMap<String, f64> = b1
        .iter()
        .map(|(k, v)| {
            let rate = (v - b0.get(k).copied().unwrap_or(0.0)) / t0.elapsed().as_secs_f64();
            (k.clone(), rate)
        })
        .collect();

    let one = per_tick(&pair, 1, window, &baseline).await;
    let twenty = per_tick(&pair, 20, window, &baseline).await;
    let total = |m: &BTreeMap<String, f64>| m.values().sum::<f64>();
    eprintln!(
        "measured: Lease requests per tick on the standby: 1 group {:.2} {one:?}, 20 groups {:.2} {twenty:?}",
        total(&one),
        total(&twenty)
    );
    // One renewal per interval (PUT) plus the watch's resumptions (WATCH, every 5 s);
    // the slack covers a renewal retried on a loaded machine. Before: 3 per group.
    assert!(total(&twenty) <= 2.0, "{twenty:?}");
    assert!(total(&twenty) <= total(&one) + 0.5, "{one:?} vs {twenty:?}");
    assert!(
        twenty.get("LIST").copied().unwrap_or(0.0) < 0.2,
        "no LIST per tick: {twenty:?}"
    );
    assert!(
        twenty.get("PUT").copied().unwrap_or(0.0) <= 1.5,
        "one renewal per interval: {twenty:?}"
    );
}

//! End-to-end: watches that last and cost no list to prove themselves.
//!
//! - A connection that goes silent (the proxy black-holes the daemon's whole path to the
//!   primary, watches included) makes the cached signals *unknown* within about a probe
//!   timeout, from the cluster's `/readyz`; once the path heals every watch is resumed
//!   from its resourceVersion and trusted again without a single LIST.
//! - A slow API server whose `/readyz` is late for a while (the shape of an overloaded
//!   one) is not loaded further: no watch is restarted and nothing is listed while it
//!   does not answer, the watches are proven again without a list once it answers, and a
//!   real outage of the primary is still promoted.
//!
//! Requests are counted by the API servers themselves (`apiserver_request_total`).

use crate::support;

use kube_failover_testbed::{
    Cluster, DEFAULT_NAMESPACE, FaultProxy, HttpFaultProxy, HttpRule, ProxyMode,
};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::*;

/// `apiserver_request_total` summed by verb, for the resources the caches watch in the
/// agent namespaces.
async fn cache_requests(c: &Cluster) -> BTreeMap<String, f64> {
    let mut by_verb = BTreeMap::new();
    let all = apiserver_requests(c)
        .await
        .expect("the API server's metrics");
    for ((verb, resource), value) in all {
        if ["deployments", "pods", "configmaps", "leases"].contains(&resource.as_str()) {
            *by_verb.entry(verb).or_insert(0.0) += value;
        }
    }
    by_verb
}

fn increase(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>, verb: &str) -> f64 {
    after.get(verb).copied().unwrap_or(0.0) - before.get(verb).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_watch_connection_is_distrusted_at_once_and_proven_again_without_a_list() {
    let pair = pair().await;
    // Observe mode: a black-holed primary is down evidence for `api`; this test is
    // about the caches, not the promotion that would follow.
    let opts = DaemonOpts {
        mode: "observe",
        ..DaemonOpts::default()
    };
    let (d, proxy) = Daemon::start_via_proxy::<FaultProxy>(&pair, Via::Primary, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        d.workloads_pass()
    })
    .await
    .expect("the workload signals pass from the caches");
    let before = cache_requests(&pair.primary).await;

    // Every established connection stalls, new ones hang: the watches hear nothing.
    let cut = Instant::now();
    proxy.set_mode(ProxyMode::Blackhole);
    let distrusted = wait_for(
        Duration::from_secs(15),
        Duration::from_millis(50),
        || async {
            d.group().await.is_some_and(|g| {
                g.signals
                    .iter()
                    .filter(|s| s.name.to_string().starts_with("workload"))
                    .all(|s| s.consecutive_unknown >= 1)
            })
        },
    )
    .await;
    let took = cut.elapsed();
    assert!(
        distrusted.is_some(),
        "the cached signals did not become unknown: {:#?}\n{}",
        d.group().await,
        d.log_text()
    );
    measured("silent watch connection distrusted", took);
    // The bound is the probe timeout after the next `/readyz` (one interval apart),
    // with room for a loaded machine; the watches' own read timeout is 80 s.
    assert!(
        took < opts.interval + opts.timeout + Duration::from_secs(5),
        "distrusted after {took:?}"
    );
    assert!(
        !d.workloads_pass().await,
        "a silent watch is never a stale pass"
    );

    tokio::time::sleep(Duration::from_secs(3)).await;
    let healed = Instant::now();
    proxy.set_mode(ProxyMode::Pass);
    let trusted = wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
        d.workloads_pass()
    })
    .await;
    assert!(
        trusted.is_some(),
        "the caches were not trusted again: {:#?}\n{}",
        d.group().await,
        d.log_text()
    );
    measured("watches proven again after the heal", healed.elapsed());
    let after = cache_requests(&pair.primary).await;
    assert_eq!(
        increase(&after, &before, "LIST"),
        0.0,
        "the watches were listed again: {before:?} -> {after:?}"
    );
    assert!(
        increase(&after, &before, "WATCH") >= 3.0,
        "each watch was resumed to prove its connection: {before:?} -> {after:?}"
    );
}

/// Where the coordination's Leases are written.
const LEASES: &str = "/apis/coordination.k8s.io/";

#[tokio::test(flavor = "multi_thread")]
async fn a_late_readyz_on_a_slow_api_server_adds_no_load_and_an_outage_is_still_promoted() {
    const NAMESPACES: usize = 20;
    let pair = pair().await;
    let namespaces = add_agent_namespaces(&pair, NAMESPACES).await;
    let proxy = HttpFaultProxy::start_for(&pair.standby).await;
    let opts = DaemonOpts {
        standby_kubeconfig: Some(proxy.daemon_kubeconfig_for(&pair.standby)),
        ..DaemonOpts::default()
    };
    let d = start_in_namespaces(&pair, &opts, &namespaces).await;
    let first = namespaces[0].clone();
    for ns in &namespaces {
        wait_for(
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async {
                d.group_named(ns)
                    .await
                    .is_some_and(|g| g.state == "primary_active" && g.standby_fit)
            },
        )
        .await
        .unwrap_or_else(|| panic!("{ns} primary_active with a fit standby\n{}", d.log_text()));
    }

    // The standby's API server turns slow (every request held 300 ms, the probe
    // timeout is 800 ms) and its `/readyz` late beyond the probe timeout: what an
    // overloaded API server looks like. Its writes are late too (an accepted observer
    // Lease renewal would stand for the `/readyz`).
    proxy.set_rules(vec![
        HttpRule::delay("/readyz", Duration::from_secs(5)),
        HttpRule::delay(LEASES, Duration::from_secs(5)).method(http::Method::PUT),
        HttpRule::delay("/", Duration::from_millis(300)),
    ]);
    let slow = Instant::now();
    wait_for(
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async { d.group_named(&first).await.is_some_and(|g| !g.standby_fit) },
    )
    .await
    .expect("the standby's late /readyz is seen");
    // From the third late answer in a row the watches are distrusted: each ends (the API
    // server counts a watch when it ends) and waits for /readyz to pass to start again.
    let late = late_readyz(&d, &first).await;
    wait_for(
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async { late_readyz(&d, &first).await >= late + 2.0 },
    )
    .await
    .expect("three late answers in a row");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = cache_requests(&pair.standby).await;
    let window = Duration::from_secs(15);
    tokio::time::sleep(window).await;
    let during = cache_requests(&pair.standby).await;
    measured("slow standby observed", slow.elapsed());
    let (lists, watches) = (
        increase(&during, &before, "LIST"),
        increase(&during, &before, "WATCH"),
    );
    eprintln!("while /readyz was late for {window:?}: {lists} LIST, {watches} WATCH");
    // Before: every late /readyz relisted every watch of the cluster (4 kinds per
    // namespace, one LIST each, every interval).
    assert_eq!(lists, 0.0, "{before:?} -> {during:?}");
    assert!(
        watches <= NAMESPACES as f64,
        "watches restarted while the server did not answer: {before:?} -> {during:?}"
    );

    // It answers again, still slowly: the watches are proven again, without a list.
    proxy.remove_rules("/readyz");
    proxy.remove_rules(LEASES);
    wait_for(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            for ns in &namespaces {
                if !d.group_named(ns).await.is_some_and(|g| g.standby_fit) {
                    return false;
                }
            }
            true
        },
    )
    .await
    .unwrap_or_else(|| panic!("the standby fit again in every group\n{}", d.log_text()));
    let after = cache_requests(&pair.standby).await;
    assert_eq!(
        increase(&after, &during, "LIST"),
        0.0,
        "{during:?} -> {after:?}"
    );

    // A real outage of the primary, while the standby is still slow: promoted.
    pair.primary
        .stop_apiserver()
        .await
        .expect("stop primary apiserver");
    let promoted = wait_for(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            d.group_named(&first)
                .await
                .is_some_and(|g| g.state == "promoted")
        },
    )
    .await;
    assert!(
        promoted.is_some(),
        "{first} not promoted: {:#?}\n{}",
        d.group_named(&first).await,
        d.log_text()
    );
    measured(
        "outage promoted on a slow standby",
        promoted.unwrap_or_default(),
    );
}

/// The `/readyz` answers of the standby that timed out, as the daemon counted them for
/// the group `group`.
async fn late_readyz(d: &Daemon, group: &str) -> f64 {
    let series = format!(
        r#"kube_failover_probe_failures_total{{cluster="standby",group="{group}",reason="timeout",signal="api"}}"#
    );
    d.metric(&series).await.unwrap_or(0.0)
}

/// One late `/readyz` now and then (what an overloaded API server gives) restarts no
/// watch: five single late answers of the standby, each followed by passing ones, cost
/// no LIST and no WATCH of the 20 namespaces' watches, where each used to resume all of
/// them (80 WATCH requests a time). Each late answer is seen by the daemon first.
#[tokio::test(flavor = "multi_thread")]
async fn a_late_readyz_now_and_then_restarts_no_watch() {
    const NAMESPACES: usize = 20;
    const BLIPS: usize = 5;
    let pair = pair().await;
    let namespaces = add_agent_namespaces(&pair, NAMESPACES).await;
    let proxy = HttpFaultProxy::start_for(&pair.standby).await;
    let opts = DaemonOpts {
        standby_kubeconfig: Some(proxy.daemon_kubeconfig_for(&pair.standby)),
        ..DaemonOpts::default()
    };
    let d = start_in_namespaces(&pair, &opts, &namespaces).await;
    let fit = || async {
        for ns in &namespaces {
            if !d
                .group_named(ns)
                .await
                .is_some_and(|g| g.state == "primary_active" && g.standby_fit)
            {
                return false;
            }
        }
        true
    };
    wait_for(Duration::from_secs(60), Duration::from_millis(200), fit)
        .await
        .unwrap_or_else(|| panic!("every group primary_active, standby fit\n{}", d.log_text()));
    let first = namespaces[0].clone();
    let observer_lease =
        format!("{LEASES}v1/namespaces/{DEFAULT_NAMESPACE}/leases/kube-failover.observer.e2e");

    let before = cache_requests(&pair.standby).await;
    for blip in 0..BLIPS {
        let seen = late_readyz(&d, &first).await;
        // The next /readyz only is held beyond the probe timeout. An accepted observer
        // Lease renewal stands for the standby's /readyz, so the renewal (and its early
        // retry) is held too: the next slot has no proof and asks /readyz. The rule names
        // the observer Lease: the groups' leader Lease renewals, written beside it, would
        // otherwise take the two holds now and then and leave the renewal proving.
        proxy.set_rules(vec![
            HttpRule::delay(&observer_lease, Duration::from_secs(5))
                .method(http::Method::PUT)
                .times(2),
            HttpRule::delay("/readyz", Duration::from_secs(5)).times(1),
        ]);
        wait_for(
            Duration::from_secs(15),
            Duration::from_millis(50),
            || async { late_readyz(&d, &first).await > seen },
        )
        .await
        .unwrap_or_else(|| panic!("late /readyz {blip} not seen\n{}", d.log_text()));
        wait_for(Duration::from_secs(15), Duration::from_millis(100), fit)
            .await
            .unwrap_or_else(|| panic!("the standby fit again after {blip}\n{}", d.log_text()));
    }
    let after = cache_requests(&pair.standby).await;
    let (lists, watches) = (
        increase(&after, &before, "LIST"),
        increase(&after, &before, "WATCH"),
    );
    eprintln!("{BLIPS} single late /readyz answers: {lists} LIST, {watches} WATCH");
    assert_eq!(lists, 0.0, "{before:?} -> {after:?}");
    // The watches' own resumptions (one per 4 to 5 minutes each) may fall in the
    // window; a restart of every watch would be 80 per late answer.
    assert!(
        watches < NAMESPACES as f64,
        "watches restarted for single late answers: {before:?} -> {after:?}"
    );
}

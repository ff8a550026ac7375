//! End-to-end: three instances on many groups in the shape users run, one env0 agent per
//! namespace, the instances coordinating in one namespace of the standby of their own
//! (`[coordination] namespace`, with the Role of target-rbac/coordination/ only). The
//! standby's API server counts the Lease requests itself (`apiserver_request_total`):
//! the writes are one renewal per instance and second whatever the number of groups and
//! namespaces (it was one per instance, namespace and second), every group is led, and
//! with quorum 2 of 3 the promotion does not wait for the second instance's next turn.
//!
//! `KUBE_FAILOVER_E2E_NAMESPACES` sets the number of groups (default 20, each in its own
//! namespace on both sides; about 40 s).

use crate::support;

use kube_failover_testbed::{Cluster, ClusterPair};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::*;

const COORDINATION: &str = "kube-failover";
const STARTED: &str = r#"kube_failover_promotions_total{group="env0",result="started"}"#;

fn group_count() -> usize {
    std::env::var("KUBE_FAILOVER_E2E_NAMESPACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
        .max(2)
}

/// `apiserver_request_total` of `c` by `(verb, resource)`.
async fn requests(c: &Cluster) -> BTreeMap<(String, String), f64> {
    apiserver_requests(c)
        .await
        .expect("the API server's metrics")
}

/// Requests per second by `(verb, resource)` over `window`.
async fn rates(c: &Cluster, window: Duration) -> BTreeMap<(String, String), f64> {
    let before = requests(c).await;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let after = requests(c).await;
    let secs = started.elapsed().as_secs_f64();
    after
        .into_iter()
        .map(|(k, n)| {
            let v = (n - before.get(&k).copied().unwrap_or(0.0)) / secs;
            (k, v)
        })
        .collect()
}

/// `rates` less `baseline`, kept where above 0.05 per second.
fn above(
    rates: &BTreeMap<(String, String), f64>,
    baseline: &BTreeMap<(String, String), f64>,
) -> BTreeMap<(String, String), f64> {
    rates
        .iter()
        .map(|(k, v)| (k.clone(), v - baseline.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.05)
        .collect()
}

fn sum_where(m: &BTreeMap<(String, String), f64>, f: impl Fn(&str, &str) -> bool) -> f64 {
    m.iter()
        .filter(|((verb, resource), _)| f(verb, resource))
        .map(|(_, v)| *v)
        .sum()
}

/// How many of `daemons` lead each of `groups`.
async fn leaders_per_group(daemons: &[&Daemon], groups: &[String]) -> Vec<usize> {
    let mut texts = Vec::new();
    for d in daemons {
        texts.push(d.metrics().await);
    }
    groups
        .iter()
        .map(|g| {
            let series = format!(r#"kube_failover_leader{{group="{g}"}}"#);
            texts
                .iter()
                .filter(|t| metric_value(t, &series) == Some(1.0))
                .count()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_instances_on_a_namespace_per_group_write_once_per_second_and_promote_at_quorum() {
    let pair: ClusterPair = pair().await;
    let n = group_count();
    let extra: Vec<String> = (1..n).map(|i| format!("agent-{i:03}")).collect();
    for chunk in extra.chunks(10) {
        let created = futures::future::join_all(chunk.iter().map(|ns| async {
            pair.primary.add_agent_namespace(ns).await?;
            pair.standby.add_agent_namespace(ns).await
        }))
        .await;
        for c in created {
            c.expect("create an agent namespace on both sides");
        }
    }
    pair.standby
        .add_coordination_namespace(COORDINATION)
        .await
        .expect("create the coordination namespace");
    let groups: Vec<String> = std::iter::once(GROUP.to_string())
        .chain(extra.iter().cloned())
        .collect();

    // The test bed's own traffic (the controller manager, the kwok node's heartbeat),
    // over a window before any daemon runs.
    let window = Duration::from_secs(10);
    let baseline = rates(&pair.standby, window).await;

    let opts = |identity: &str| DaemonOpts {
        identity: Some(identity.to_string()),
        observer_quorum: 2,
        observers_expected: Some(3),
        extra_groups: extra.clone(),
        own_namespaces: true,
        extra_toml: format!("[coordination]\nnamespace = \"{COORDINATION}\"\n"),
        ..DaemonOpts::default()
    };
    let (oa, ob, oc) = (opts("scale-a"), opts("scale-b"), opts("scale-c"));
    let (a, b, c) = tokio::join!(
        Daemon::start(&pair, &oa),
        Daemon::start(&pair, &ob),
        Daemon::start(&pair, &oc),
    );
    let started = Instant::now();
    let all = [&a, &b, &c];
    let led = wait_for(
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            leaders_per_group(&all, &groups)
                .await
                .iter()
                .all(|n| *n == 1)
        },
    )
    .await;
    let led_after = started.elapsed();
    assert!(
        led.is_some(),
        "not every group led exactly once: {:?}\n{}",
        leaders_per_group(&all, &groups).await,
        a.log_text()
    );
    measured(
        &format!("{n} groups in {n} namespaces, 3 instances: every group led after start"),
        led_after,
    );
    // Leadership spread (each instance at its fair share or below): the writes of a
    // hand-over (a release, a take) are over before the measurement.
    let share = n.div_ceil(3);
    let spread = wait_for(
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            let mut ok = true;
            for d in all {
                let m = d.metrics().await;
                let leading = groups
                    .iter()
                    .filter(|g| {
                        metric_value(&m, &format!(r#"kube_failover_leader{{group="{g}"}}"#))
                            == Some(1.0)
                    })
                    .count();
                ok &= leading <= share;
            }
            ok
        },
    )
    .await;
    assert!(spread.is_some(), "leadership not spread");
    measured("leadership spread after start", started.elapsed());
    // Every instance sees the env0 primary healthy before the measurement.
    for d in all {
        let ok = wait_for(
            Duration::from_secs(30),
            Duration::from_millis(250),
            || async { d.group().await.is_some_and(|g| g.state == "primary_active") },
        )
        .await;
        assert!(ok.is_some(), "{}", d.log_text());
    }

    let load = above(&rates(&pair.standby, window).await, &baseline);
    let lease_writes = sum_where(&load, |verb, resource| {
        resource == "leases" && matches!(verb, "PUT" | "POST" | "PATCH")
    });
    let lease_all = sum_where(&load, |_, resource| resource == "leases");
    let all_requests = sum_where(&load, |_, _| true);
    eprintln!(
        "measured: {n} groups in {n} namespaces, 3 instances, standby: {:.2} Lease writes/s \
         ({:.2} per instance), {lease_all:.2} Lease requests/s, {all_requests:.2} requests/s \
         above baseline: {load:?}",
        lease_writes,
        lease_writes / 3.0
    );
    // One renewal per instance and second; the slack covers a renewal retried on a
    // loaded machine. Before: one per instance, namespace and second (3 × n).
    assert!(lease_writes <= 3.0 * 1.5, "{load:?}");
    // Still every group led, kept by the renewals alone.
    assert!(
        leaders_per_group(&all, &groups)
            .await
            .iter()
            .all(|n| *n == 1)
    );
    for d in all {
        let status = d.group().await.expect("status");
        let coordination = status.coordination.expect("coordination status");
        assert_eq!(coordination.no_leader_seconds, None, "{coordination:?}");
    }

    // Quorum 2 of 3: the primary's API server stops; the promotion starts once two
    // instances say down, the second one counted when it is published.
    let stopped_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    let stopped = Instant::now();
    pair.primary
        .stop_apiserver()
        .await
        .expect("stop the primary's API server");
    let mut sum = 0.0;
    let promoted = wait_for(Duration::from_secs(30), Duration::from_millis(50), || {
        let all = &all;
        async move {
            let mut total = 0.0;
            for d in all {
                total += d.metric(STARTED).await.unwrap_or(0.0);
            }
            total >= 1.0
        }
    })
    .await;
    let seen = stopped.elapsed();
    assert!(
        promoted.is_some(),
        "no promotion of env0:\n{}",
        a.log_text()
    );
    // When the leader's tick started the promotion, by its own clock: the test's polling
    // of three /metrics on a loaded machine may see it later.
    let mut at = None;
    for d in all {
        if d.metric(STARTED).await == Some(1.0) {
            at = d
                .metric(r#"kube_failover_last_promotion_timestamp_seconds{group="env0"}"#)
                .await;
        }
    }
    let at = at.expect("the leader's promotion time");
    measured(
        &format!("{n} groups, quorum 2 of 3: primary stopped -> env0 promotion started"),
        Duration::from_secs_f64((at - stopped_unix).max(0.0)),
    );
    measured("  (seen by the test's polling of /metrics)", seen);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut peer_ticks = 0.0;
    for d in all {
        sum += d.metric(STARTED).await.unwrap_or(0.0);
        peer_ticks += d
            .metric(r#"kube_failover_event_ticks_total{cause="peer_verdict",group="env0"}"#)
            .await
            .unwrap_or(0.0);
    }
    eprintln!("measured: env0 ticks for a peer's down verdict, all instances: {peer_ticks}");
    assert_eq!(sum, 1.0, "exactly one promotion of env0");
}

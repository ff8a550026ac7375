//! End-to-end: several daemon instances on one group, with the restricted identity. One
//! leader writes; promotion needs a quorum of observers; a lost leader is replaced; two
//! processes with one identity are refused.

mod support;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube_failover::status::CoordStatus;
use kube_failover_testbed::{ClusterPair, FaultProxy, ProxyMode};
use std::time::{Duration, Instant};
use support::*;

const STARTED: &str = r#"kube_failover_promotions_total{group="env0",result="started"}"#;
const LEADER: &str = r#"kube_failover_leader{group="env0"}"#;
/// The default lease duration at a 1 s interval: max(3 × 1 s, 3 s).
const LEASE_DURATION: Duration = Duration::from_secs(3);

async fn pair() -> ClusterPair {
    ClusterPair::start()
        .await
        .expect("start the test-bed cluster pair")
}

fn opts(identity: &str, quorum: u32) -> DaemonOpts {
    DaemonOpts {
        identity: Some(identity.to_string()),
        observer_quorum: quorum,
        observers_expected: Some(3),
        ..DaemonOpts::default()
    }
}

async fn record_field(pair: &ClusterPair, key: &str) -> Option<String> {
    let api: Api<ConfigMap> = Api::namespaced(pair.standby.client(), pair.standby.namespace());
    api.get_opt(&format!("kube-failover-{GROUP}"))
        .await
        .expect("read the record")?
        .data?
        .get(key)
        .cloned()
}

async fn coord(d: &Daemon) -> Option<CoordStatus> {
    d.group().await?.coordination
}

async fn sum(daemons: &[&Daemon], series: &str) -> f64 {
    let mut total = 0.0;
    for d in daemons {
        total += d.metric(series).await.unwrap_or(0.0);
    }
    total
}

async fn leaders(daemons: &[&Daemon]) -> Vec<usize> {
    let mut leading = Vec::new();
    for (i, d) in daemons.iter().enumerate() {
        if d.metric(LEADER).await == Some(1.0) {
            leading.push(i);
        }
    }
    leading
}

/// Waits until every daemon is `primary_active` and exactly one leads; returns the
/// leader's index.
async fn settled(daemons: &[&Daemon]) -> usize {
    let ok = wait_for(
        Duration::from_secs(40),
        Duration::from_millis(200),
        || async {
            for d in daemons {
                match d.group().await {
                    Some(g) if g.state == "primary_active" => {}
                    _ => return false,
                }
            }
            leaders(daemons).await.len() == 1
        },
    )
    .await;
    let texts: Vec<String> = daemons.iter().map(|d| d.log_text()).collect();
    assert!(ok.is_some(), "no single leader:\n{}", texts.join("\n"));
    let leading = leaders(daemons).await;
    assert_eq!(leading.len(), 1, "{leading:?}");
    leading[0]
}

/// Three instances `obs-a`, `obs-b` and the one configured by `third`, started together.
async fn start_three(pair: &ClusterPair, third: DaemonOpts) -> (Daemon, Daemon, Daemon) {
    let (oa, ob) = (opts("obs-a", 2), opts("obs-b", 2));
    tokio::join!(
        Daemon::start(pair, &oa),
        Daemon::start(pair, &ob),
        Daemon::start(pair, &third),
    )
}

/// Done-when 1: three instances see the primary's API stopped → exactly one promotion.
#[tokio::test(flavor = "multi_thread")]
async fn three_instances_promote_exactly_once() {
    let pair = pair().await;
    let (a, b, c) = start_three(&pair, opts("obs-c", 2)).await;
    let all = [&a, &b, &c];
    let leader = settled(&all).await;
    // Every instance sees the same leader and all three observers, fresh.
    let leader_identity = format!("obs-{}", ["a", "b", "c"][leader]);
    for d in all {
        let s = wait_for(
            Duration::from_secs(10),
            Duration::from_millis(200),
            || async {
                coord(d).await.is_some_and(|c| {
                    c.leader.as_deref() == Some(leader_identity.as_str())
                        && c.observers.iter().filter(|o| o.fresh).count() == 3
                })
            },
        )
        .await;
        assert!(s.is_some(), "{:?}\n{}", coord(d).await, d.log_text());
    }

    let stopped = Instant::now();
    let stopping = async {
        pair.primary
            .stop_apiserver()
            .await
            .expect("stop primary apiserver");
    };
    let promoting = async {
        let started = wait_for(
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async { sum(&all, STARTED).await >= 1.0 },
        )
        .await
        .expect("a promotion started");
        let _ = started;
        let started = stopped.elapsed();
        wait_for(
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async { replicas(&pair.standby).await == 2 },
        )
        .await
        .expect("standby scaled up");
        (started, stopped.elapsed())
    };
    let ((), (started, scaled)) = tokio::join!(stopping, promoting);
    measured(
        "quorum 2 of 3: primary stopped -> promotion started",
        started,
    );
    measured("quorum 2 of 3: primary stopped -> standby scaled", scaled);

    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { record_field(&pair, "phase").await.as_deref() == Some("promoted") },
    )
    .await
    .expect("promotion recorded as complete");
    // Stay promoted for a while: nothing else happens.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(record_field(&pair, "epoch").await.as_deref(), Some("1"));
    assert_eq!(sum(&all, STARTED).await, 1.0, "exactly one promotion");
    assert_eq!(
        record_field(&pair, "holder").await.as_deref(),
        Some(leader_identity.as_str()),
        "written by the leader"
    );
    assert_eq!(replicas(&pair.standby).await, 2);
    // The followers counted nothing and ran no action.
    for (i, d) in all.iter().enumerate() {
        if i != leader {
            let m = d.metrics().await;
            let actions: f64 = m
                .lines()
                .filter(|l| l.starts_with("kube_failover_actions_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            assert_eq!(actions, 0.0, "a follower ran actions:\n{}", d.log_text());
            let would = r#"kube_failover_would_promote{group="env0"}"#;
            assert_eq!(d.metric(would).await, Some(0.0));
        }
    }
}

/// Done-when 2: one instance is cut off from the primary only; with quorum 2 nobody
/// promotes, and its `down` verdict is visible in the others' `/status`.
#[tokio::test(flavor = "multi_thread")]
async fn one_partitioned_instance_never_promotes_with_quorum_two() {
    let pair = pair().await;
    let proxy = FaultProxy::start(pair.primary.api_addr())
        .await
        .expect("start proxy");
    let via_proxy = DaemonOpts {
        primary_kubeconfig: Some(
            pair.primary
                .daemon_kubeconfig_via(proxy.addr())
                .expect("kubeconfig via proxy"),
        ),
        ..opts("obs-c", 2)
    };
    let (a, b, c) = start_three(&pair, via_proxy).await;
    let all = [&a, &b, &c];
    settled(&all).await;

    proxy.set_mode(ProxyMode::Blackhole);
    let seen = wait_for(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let mut both = true;
            for d in [&a, &b] {
                both &= coord(d).await.is_some_and(|s| {
                    s.observers
                        .iter()
                        .any(|o| o.identity == "obs-c" && o.fresh && o.verdict == "down")
                });
            }
            both
        },
    )
    .await;
    assert!(
        seen.is_some(),
        "obs-c's verdict not seen as down: {:?}\n{}",
        coord(&a).await,
        c.log_text()
    );
    measured(
        "partitioned instance -> its `down` seen by the others",
        seen.unwrap(),
    );

    // 20 ticks: no promotion, no record, the standby stays at 0.
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(20) {
        assert_eq!(sum(&all, STARTED).await, 0.0);
        assert_eq!(replicas(&pair.standby).await, 0);
        assert_eq!(record_field(&pair, "phase").await, None);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let c_status = c.group().await.expect("status of obs-c");
    assert!(c_status.primary_down, "obs-c itself sees the primary down");
    for d in [&a, &b] {
        assert_eq!(d.group().await.expect("status").state, "primary_active");
    }
    proxy.set_mode(ProxyMode::Pass);
}

/// Done-when 3: the leader is SIGKILLed → another instance takes the Lease within about
/// one lease duration (plus the tick that notices).
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_leader_is_replaced() {
    let pair = pair().await;
    let (a, b, c) = start_three(&pair, opts("obs-c", 2)).await;
    let mut daemons = vec![a, b, c];
    let leader = {
        let all: Vec<&Daemon> = daemons.iter().collect();
        settled(&all).await
    };
    let mut old = daemons.remove(leader);
    old.kill().await;
    let killed = Instant::now();
    let rest: Vec<&Daemon> = daemons.iter().collect();
    let took = wait_for(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { sum(&rest, LEADER).await == 1.0 },
    )
    .await;
    assert!(
        took.is_some(),
        "no new leader:\n{}\n{}",
        rest[0].log_text(),
        rest[1].log_text()
    );
    let took = killed.elapsed();
    measured("leader SIGKILLed -> another leads", took);
    // Functional bound: the Lease duration, plus a tick to notice and one to write.
    assert!(
        took < LEASE_DURATION + Duration::from_secs(3),
        "took {took:?} (lease duration {LEASE_DURATION:?})"
    );
    // The new leader still decides: the primary is up, nothing is promoted.
    for d in &rest {
        assert_eq!(d.group().await.expect("status").state, "primary_active");
    }
    assert_eq!(sum(&rest, STARTED).await, 0.0);
}

/// Done-when 6: two processes with one identity → the second refuses to start (exit 2),
/// naming the identity; the first goes on leading.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_process_with_the_same_identity_is_refused() {
    let pair = pair().await;
    let first = Daemon::start(&pair, &opts("twin", 1)).await;
    settled(&[&first]).await;
    let mut second = Daemon::spawn(&pair, &opts("twin", 1));
    let status = second
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the second process exits by itself");
    assert_eq!(status.code(), Some(2), "{}", second.log_text());
    let log = second.log_text();
    assert!(
        log.contains("daemon.identity \\\"twin\\\" is already in use")
            || log.contains("daemon.identity \"twin\" is already in use"),
        "{log}"
    );
    assert_eq!(first.metric(LEADER).await, Some(1.0));
    assert_eq!(first.group().await.expect("status").state, "primary_active");
}

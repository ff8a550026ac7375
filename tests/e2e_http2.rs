//! End-to-end: the daemon speaks HTTP/2 to the API servers (`[daemon] http2`, on by
//! default).
//!
//! - A watch connection that dies without a word (the proxy stalls every connection
//!   open at the cut while new ones pass, as a dropped NAT entry does) is PINGed after a
//!   probe interval of silence and closed after a probe timeout more; the watches on it
//!   are resumed on a new connection, and nothing of it is taken for down evidence: the
//!   group stays `primary_active` and nothing is promoted. Over HTTP/1.1 the same watch
//!   stays silent until its read timeout (80 s).
//! - Twenty groups, each in its own namespace: HTTP/2 carries every watch of a cluster
//!   on a handful of connections; `http2 = false` opens one per watch.
//!
//! The HTTP/1.1 fallback through a proxy that does not speak HTTP/2 (the test bed's
//! `HttpFaultProxy`, which terminates TLS without offering `h2`) is exercised by every
//! test that uses that proxy (tests/e2e_watch.rs, tests/e2e_safety.rs, ...).

use crate::support;

use kube_failover_testbed::{FaultProxy, ProxyMode};
use std::time::{Duration, Instant};
use support::*;

const WATCH_LOST: &str = "watch lost; starting it again";

/// How many times the daemon logged a watch of `store` lost.
fn watches_lost(d: &Daemon, store: &str) -> usize {
    d.full_log()
        .lines()
        .filter(|l| l.contains(WATCH_LOST) && l.contains(store))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watch_connection_dead_without_a_word_is_closed_by_a_ping_and_resumed_never_promoted() {
    let pair = pair().await;
    // Auto mode, one observer: a primary called down would be promoted.
    let opts = DaemonOpts::default();
    let (d, proxy) = Daemon::start_via_proxy::<FaultProxy>(&pair, Via::Primary, &opts).await;
    d.wait_leading(Duration::from_secs(20)).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        d.workloads_pass()
    })
    .await
    .expect("the workload signals pass from the caches");
    // Past the startup grace: a promotion would be allowed now.
    tokio::time::sleep(opts.startup_grace).await;
    // HTTP/2: the three watches of the namespace and the short calls share two
    // connections (one per client); over HTTP/1.1 each watch holds one of its own.
    let open = proxy.open_connections();
    assert!(open <= 3, "{open} connections through the proxy");
    let store = format!("Deployments in {}", pair.primary.namespace());
    let lost_before = watches_lost(&d, &store);
    let accepted_before = proxy.accepted();

    // Every connection open now stalls; new ones pass.
    let cut = Instant::now();
    proxy.set_mode(ProxyMode::BlackholeExisting);
    let noticed = wait_for(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || async { watches_lost(&d, &store) > lost_before },
    )
    .await;
    let took = cut.elapsed();
    assert!(
        noticed.is_some(),
        "no watch was lost after {took:?}: {:#?}\n{}",
        d.group().await,
        d.log_text()
    );
    measured("silent watch connection closed", took);
    // A PING after an interval of silence, the connection closed a probe timeout later;
    // with room for a loaded machine (the watch's own read timeout is 80 s).
    assert!(
        took < opts.interval + opts.timeout + Duration::from_secs(4),
        "noticed after {took:?}"
    );

    // Resumed: a new connection came through the proxy and the workload signals pass
    // again (they may still pass from before the loss for a tick, so both are needed).
    let resumed = wait_for(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async { proxy.accepted() > accepted_before && d.workloads_pass().await },
    )
    .await;
    assert!(
        resumed.is_some(),
        "the watches were not resumed: {:#?}\n{}",
        d.group().await,
        d.log_text()
    );
    measured("watches resumed on a new connection", cut.elapsed());

    // The stalled connections stay stalled: a while more, nothing is promoted. The short
    // calls' connection stalled too until its own PING closed it, so a `/readyz` may have
    // timed out meanwhile: `primary_suspect` for a tick is allowed, down never.
    let until = Instant::now() + opts.interval * 5;
    while Instant::now() < until {
        let g = d.group().await.expect("status");
        assert!(
            g.state == "primary_active" || g.state == "primary_suspect",
            "{g:#?}"
        );
        assert!(!g.primary_down, "a dead connection is not down: {g:#?}");
        assert_eq!(replicas(&pair.standby).await, 0, "standby scaled up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(d.metric(STARTED).await, Some(0.0), "nothing was promoted");
    assert_eq!(proxy.mode(), ProxyMode::BlackholeExisting);
    d.wait_state("primary_active", Duration::from_secs(10))
        .await;
}

/// The daemon's open connections to each API server once every group of twenty, each in
/// a namespace of its own, is `primary_active`.
async fn connections_with_twenty_namespaces(http2: bool) -> (usize, usize) {
    let pair = pair().await;
    let namespaces = add_agent_namespaces(&pair, 20).await;
    let opts = DaemonOpts {
        mode: "observe",
        http2: Some(http2),
        ..DaemonOpts::default()
    };
    let d = start_in_namespaces(&pair, &opts, &namespaces).await;
    let every_group_active = wait_for(
        Duration::from_secs(90),
        Duration::from_millis(250),
        || async {
            d.status().await.is_some_and(|s| {
                s.groups.len() == namespaces.len()
                    && s.groups.iter().all(|g| g.state == "primary_active")
            })
        },
    )
    .await;
    assert!(every_group_active.is_some(), "{:#?}", d.status().await);
    // Connections of requests that raced at the start are closed once HTTP/2 is
    // negotiated on one of them: counted after a few ticks.
    tokio::time::sleep(opts.interval * 3).await;
    let primary = d.connections_to(pair.primary.api_addr().port());
    let standby = d.connections_to(pair.standby.api_addr().port());
    eprintln!("measured: connections with http2 = {http2}: primary {primary}, standby {standby}");
    (primary, standby)
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_namespaces_take_a_handful_of_connections_over_http2_and_one_per_watch_without() {
    let (primary, standby) = connections_with_twenty_namespaces(true).await;
    // One connection for the short calls and one per pool of watches (60 and 80 of them
    // here: one pool each).
    assert!(primary <= 3, "{primary} connections to the primary");
    assert!(standby <= 3, "{standby} connections to the standby");

    // The fallback: one connection per watch (Deployments, Pods, ConfigMaps of each
    // namespace; Leases too on the standby).
    let (primary, standby) = connections_with_twenty_namespaces(false).await;
    assert!(primary >= 60, "{primary} connections to the primary");
    assert!(standby >= 60, "{standby} connections to the standby");
}

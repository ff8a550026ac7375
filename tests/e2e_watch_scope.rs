//! End-to-end: `[daemon] watch_scope = "cluster"` on real API servers. One watch per kind
//! across all namespaces serves groups in namespaces of their own (the API servers'
//! audit logs show no namespaced list or watch of those kinds), and a cluster without
//! the shipped ClusterRole (deploy/kubernetes/target-rbac/cluster-watch) refuses the
//! watches: every workload signal is unknown, never down, until the grant comes.

use crate::support;

use kube_failover_testbed::{AuditEvent, ClusterPair, DAEMON_USER};
use std::path::Path;
use std::time::Duration;
use support::*;

const CLUSTER_ROLE: &str = "cluster-watch/clusterrole.yaml";

fn fast() -> DaemonOpts {
    DaemonOpts {
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(400),
        watch_scope: Some("cluster"),
        ..DaemonOpts::default()
    }
}

/// The primary does not grant the shipped ClusterRole (the standby does): its
/// cluster-wide watches are refused with 403. For 30 ticks: no promotion, state
/// `primary_unobservable` with reason `primary_forbidden`, the detail naming the
/// cluster-wide watch, nothing called down; with the ClusterRole granted there too, the
/// group is `primary_active` again without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_cluster_wide_watch_is_unknown_never_down() {
    let pair = pair().await;
    pair.standby
        .grant_daemon_cluster_role(Path::new(CLUSTER_ROLE))
        .await
        .expect("grant the cluster role on the standby");
    let opts = fast();
    let d = Daemon::start(&pair, &opts).await;
    d.wait_state("primary_unobservable", Duration::from_secs(20))
        .await;
    let g = d.group().await.expect("status");
    assert_eq!(
        g.last_decision.reasons.first().map(ToString::to_string),
        Some("primary_forbidden".to_string()),
        "{g:#?}"
    );
    let until = std::time::Instant::now() + opts.interval * 30;
    while std::time::Instant::now() < until {
        assert_eq!(replicas(&pair.standby).await, 0, "standby scaled up");
        let g = d.group().await.expect("status");
        assert!(!g.primary_down, "unknown is not down: {g:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let g = d.group().await.expect("status");
    assert_eq!(g.state, "primary_unobservable");
    let details: Vec<&str> = g.signals.iter().map(|s| s.last_detail.as_str()).collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("(cluster-wide)") && d.contains("403")),
        "{details:?}"
    );
    assert_eq!(d.metric(STARTED).await, Some(0.0));
    assert_eq!(
        record_field(&pair, "phase").await,
        None,
        "no record written"
    );

    pair.primary
        .grant_daemon_cluster_role(Path::new(CLUSTER_ROLE))
        .await
        .expect("grant the cluster role on the primary");
    d.wait_state("primary_active", Duration::from_secs(30))
        .await;
    assert_eq!(d.metric(STARTED).await, Some(0.0));
}

/// Three groups, each in its namespace on both sides, the ClusterRole granted: every
/// group is `primary_active`, and the daemon listed and watched Deployments, Pods and
/// ConfigMaps only across all namespaces (one watch per kind and cluster), never in one.
/// Its Leases stay in their namespace.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_wide_watches_serve_groups_in_namespaces_of_their_own() {
    let pair = ClusterPair::start_audited()
        .await
        .expect("start the audited cluster pair");
    let extra: Vec<String> = (1..3).map(|i| format!("agent-{i:03}")).collect();
    for ns in &extra {
        pair.primary
            .add_agent_namespace(ns)
            .await
            .expect("primary ns");
        pair.standby
            .add_agent_namespace(ns)
            .await
            .expect("standby ns");
    }
    pair.standby
        .add_coordination_namespace("kube-failover")
        .await
        .expect("coordination namespace");
    for c in [&pair.primary, &pair.standby] {
        c.grant_daemon_cluster_role(Path::new(CLUSTER_ROLE))
            .await
            .expect("grant the cluster role");
    }
    let opts = DaemonOpts {
        extra_groups: extra.clone(),
        own_namespaces: true,
        extra_toml: "[coordination]\nnamespace = \"kube-failover\"\n".to_string(),
        ..fast()
    };
    let d = Daemon::start(&pair, &opts).await;
    let names: Vec<String> = std::iter::once(GROUP.to_string())
        .chain(extra.iter().cloned())
        .collect();
    let all_active = wait_for(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let Some(status) = d.status().await else {
                return false;
            };
            names.iter().all(|n| {
                status
                    .groups
                    .iter()
                    .any(|g| &g.name == n && g.state == "primary_active")
            })
        },
    )
    .await;
    assert!(
        all_active.is_some(),
        "not every group primary_active: {:#?}",
        d.status().await
    );

    let daemon = |events: Vec<AuditEvent>| -> Vec<AuditEvent> {
        events
            .into_iter()
            .filter(|e| e.user.username == DAEMON_USER && (e.verb == "list" || e.verb == "watch"))
            .collect()
    };
    for (side, c) in [("primary", &pair.primary), ("standby", &pair.standby)] {
        let events = daemon(c.audit_events().expect("audit log"));
        for resource in ["deployments", "pods", "configmaps"] {
            let of: Vec<&AuditEvent> = events
                .iter()
                .filter(|e| {
                    e.object_ref
                        .as_ref()
                        .is_some_and(|o| o.resource == resource)
                })
                .collect();
            assert!(
                of.iter().any(|e| e.verb == "watch"),
                "{side}: no watch of {resource}"
            );
            let namespaced: Vec<&str> = of
                .iter()
                .filter(|e| {
                    e.object_ref
                        .as_ref()
                        .is_some_and(|o| !o.namespace.is_empty())
                })
                .map(|e| e.request_uri.as_str())
                .collect();
            assert!(
                namespaced.is_empty(),
                "{side}: namespaced requests of {resource}: {namespaced:?}"
            );
        }
        if side == "standby" {
            assert!(
                events.iter().any(|e| e.verb == "watch"
                    && e.object_ref.as_ref().is_some_and(|o| {
                        o.resource == "leases" && o.namespace == "kube-failover"
                    })),
                "the Leases are watched in their namespace"
            );
        }
    }
}

//! A leader paused inside an action: the process stopped (SIGSTOP) after the runner's
//! leadership check and before the action's writes, for longer than the lease
//! duration. On resuming, its term has run out, and whatever it still meant to write
//! must not be sent. Checked from the standby's audit log with the fault campaign's check
//! of leader-only writes ([`crate::chaos_audit`]), where this was found (seed 32: a
//! deposed leader scaled the standby up after another instance had taken over and an
//! operator had failed back).

use crate::chaos_audit;
use crate::support;
use kube_failover::config::DaemonConfig;
use kube_failover::coord::leader_lease_name;
use kube_failover::coord::presence::observer_lease_name;
use kube_failover_testbed::{ClusterPair, HttpFaultProxy, HttpRule};
use std::time::Duration;
use support::*;

const IDENTITY: &str = "paused-1";

fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// The standby is scaled up by hand; the leader's correction reads the record first
/// (held 1.5 s in the HTTP fault proxy), and the process is stopped while that read is
/// held, for the lease duration and 2 s more. Resumed, it must not scale the standby
/// as the deposed leader it is: no leader-only write in the audit log more than the
/// lease duration after its last renewal. It then leads again (its Lease written anew)
/// and carries the correction out.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_paused_inside_an_action_writes_nothing_on_resuming() {
    let pair = ClusterPair::start_audited()
        .await
        .expect("start the audited cluster pair");
    let opts = DaemonOpts {
        identity: Some(IDENTITY.into()),
        ..DaemonOpts::default()
    };
    let timing = DaemonConfig {
        probe_interval: opts.interval,
        ..DaemonConfig::default()
    };
    let (lease_duration, renew_deadline) = (timing.lease_duration(), timing.renew_deadline());
    let (d, proxy) = Daemon::start_via_proxy::<HttpFaultProxy>(&pair, Via::Standby, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    d.wait_leading(Duration::from_secs(20)).await;

    // Only the actuator reads the record with a GET (the daemon's view comes from its
    // watches): the correction's freshness check.
    let record_path = format!(
        "/api/v1/namespaces/{}/configmaps/kube-failover-{GROUP}",
        pair.standby.namespace()
    );
    let held_before = proxy.faulted();
    proxy.add_rule(
        HttpRule::delay(&record_path, Duration::from_millis(1500))
            .method(http::Method::GET)
            .times(1),
    );
    let trigger = pair.standby.trigger_deployment();
    pair.standby
        .scale(&trigger, 1)
        .await
        .expect("scale the standby by hand");
    wait_for(
        Duration::from_secs(10),
        Duration::from_millis(10),
        || async { proxy.faulted() > held_before },
    )
    .await
    .expect("the correction's read of the record reached the proxy");
    let pid = d.pid().expect("the daemon's pid");
    signal(pid, "-STOP");
    tokio::time::sleep(lease_duration + Duration::from_secs(2)).await;
    signal(pid, "-CONT");

    // The term ran out while the process was stopped: it writes its leader Lease anew
    // to lead again (its first write made the Lease).
    let lease_writes = || {
        pair.standby
            .audit_events_where(|e| {
                e.is_successful_write()
                    && e.object_ref.as_ref().is_some_and(|o| {
                        o.resource == "leases" && o.name == leader_lease_name(GROUP)
                    })
            })
            .expect("audit log")
            .len()
    };
    wait_for(
        Duration::from_secs(15),
        Duration::from_millis(200),
        || async { lease_writes() >= 2 },
    )
    .await
    .unwrap_or_else(|| panic!("the leader Lease was not written anew:\n{}", d.log_text()));
    // It leads again and corrects the standby.
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { pair.standby.replicas(&trigger).await.ok() == Some(0) },
    )
    .await
    .unwrap_or_else(|| panic!("the standby was not corrected:\n{}", d.log_text()));

    let spec = chaos_audit::Spec {
        identities: vec![IDENTITY.to_string()],
        coordination_cluster: pair.standby.name().to_string(),
        namespace: pair.standby.namespace().to_string(),
        leader_lease: leader_lease_name(GROUP),
        observer_lease: observer_lease_name,
        lease_duration,
        renew_deadline,
    };
    let mut events = Vec::new();
    for cluster in [&pair.primary, &pair.standby] {
        let got = cluster
            .audit_events_where(|e| e.is_successful_write())
            .expect("audit log");
        events.extend(got.into_iter().map(|e| (cluster.name().to_string(), e)));
    }
    let found = chaos_audit::check(&spec, events);
    assert!(
        found.late.is_empty(),
        "writes of the deposed leader: {:#?}\n{}",
        found.late,
        d.log_text()
    );
    // The correction was checked: its scale.
    let mine = &found.instances[0].1;
    assert!(
        mine.writes.contains_key("deployments/scale on standby"),
        "{mine:?}"
    );
}

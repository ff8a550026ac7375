//! End-to-end operator commands on real API servers: `pause` holds a promotion during an
//! outage and `resume` lets it happen; `promote` is refused (exit 4, the check named) on
//! an unfit standby, and two operators promoting at once make one epoch; an interrupted
//! `failback` resumes when run again, with never both sides active at once; `fence` is
//! refused while the primary is active and fences a primary scaled back up after a
//! promotion.

use crate::support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;
use support::*;

/// Runs `kube-failover <args> --config <config> --group env0`.
async fn op(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-failover"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .args(["--group", GROUP]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the command ends within 120 s")
        .expect("run kube-failover");
    eprintln!(
        "$ kube-failover {}: {:?}\n{}{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fast() -> DaemonOpts {
    DaemonOpts {
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(400),
        ..DaemonOpts::default()
    }
}

#[tokio::test]
async fn pause_during_an_outage_never_promotes_and_resume_does() {
    let pair = pair().await;
    let d = Daemon::start(&pair, &fast()).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    let out = op(&d.config, &["pause", "--reason", "planned work"], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(record_field(&pair, "paused_by").await.is_some());
    d.wait_state("paused", Duration::from_secs(10)).await;

    pair.primary.stop_apiserver().await.expect("stop primary");
    let until = std::time::Instant::now() + Duration::from_secs(8);
    while std::time::Instant::now() < until {
        assert_eq!(replicas(&pair.standby).await, 0, "promoted while paused");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let g = d.group().await.expect("status");
    assert_eq!(g.state, "paused");
    assert_eq!(d.metric(STARTED).await, Some(0.0));

    let out = op(&d.config, &["resume"], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    d.wait_state("promoted", Duration::from_secs(30)).await;
    assert_eq!(record_field(&pair, "epoch").await.as_deref(), Some("1"));
    assert_eq!(record_field(&pair, "paused_by").await, None);
    assert!(events_with_reason(&pair.standby, "KubeFailoverPaused").await >= 1);
    let out = op(&d.config, &["history", "--json"], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    let history: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let whats: Vec<String> = history
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| {
            format!(
                "{} {}",
                t["phase"].as_str().unwrap(),
                t["what"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(whats.contains(&"primary paused".to_string()), "{whats:?}");
    assert!(
        whats.iter().any(|w| w.starts_with("promoting")),
        "{whats:?}"
    );
}

#[tokio::test]
async fn promote_is_refused_on_an_unfit_standby_naming_the_check() {
    let pair = pair().await;
    let d = Daemon::start(&pair, &fast()).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    let name = pair.standby.trigger_deployment();
    pair.standby.delete_deployment(&name).await.expect("delete");
    let out = op(&d.config, &["promote"], &[]).await;
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused by check standby_workload_missing"),
        "{err}"
    );
    assert_eq!(record_field(&pair, "phase").await, None, "nothing written");
    assert_eq!(replicas(&pair.primary).await, 2, "nothing fenced");
    // The dry run of a fit promotion says what it would do and changes nothing.
    let out = op(&d.config, &["promote", "--force", "--dry-run"], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[dry run]"));
    assert_eq!(record_field(&pair, "phase").await, None);
}

#[tokio::test]
async fn two_operators_promoting_at_once_make_one_epoch_then_failback_resumes() {
    let pair = pair().await;
    let opts = DaemonOpts {
        cooldown: Duration::from_secs(600),
        ..fast()
    };
    let d = Daemon::start(&pair, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    let (a, b) = tokio::join!(
        op(&d.config, &["promote", "--wait"], &[]),
        op(&d.config, &["promote", "--wait"], &[])
    );
    let codes = [a.status.code(), b.status.code()];
    assert!(codes.contains(&Some(0)), "{codes:?}");
    assert!(codes.contains(&Some(4)), "{codes:?}");
    assert_eq!(record_field(&pair, "epoch").await.as_deref(), Some("1"));
    assert_eq!(
        record_field(&pair, "phase").await.as_deref(),
        Some("promoted")
    );
    assert_eq!(replicas(&pair.primary).await, 0, "fenced");
    d.wait_state("promoted", Duration::from_secs(10)).await;

    // Both sides are sampled all along the failback: never both active.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let (p, s) = (pair.primary.client(), pair.standby.client());
        let (pn, sn) = (
            pair.primary.namespace().to_string(),
            pair.standby.namespace().to_string(),
        );
        tokio::spawn(async move {
            use k8s_openapi::api::apps::v1::Deployment;
            let (pa, sa) = (
                kube::Api::<Deployment>::namespaced(p, &pn),
                kube::Api::<Deployment>::namespaced(s, &sn),
            );
            let sum = |list: kube::core::ObjectList<Deployment>| -> i32 {
                list.items
                    .iter()
                    .filter_map(|d| d.spec.as_ref()?.replicas)
                    .sum()
            };
            let mut samples = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let lp = kube::api::ListParams::default();
                if let (Ok(p), Ok(s)) = (pa.list(&lp).await, sa.list(&lp).await) {
                    let (p, s) = (sum(p), sum(s));
                    assert!(
                        !(p > 0 && s > 0),
                        "both sides active: primary {p}, standby {s}"
                    );
                    samples += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        })
    };
    let out = op(
        &d.config,
        &["failback"],
        &[("KUBE_FAILOVER_FAILBACK_STOP_AFTER", "standby_down")],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "stopped after its first step");
    assert_eq!(
        record_field(&pair, "failback_step").await.as_deref(),
        Some("standby_down")
    );
    assert_eq!(
        record_field(&pair, "phase").await.as_deref(),
        Some("promoted")
    );
    d.wait_state("paused", Duration::from_secs(10)).await;
    // Interrupted: the daemon neither promotes again nor fences nor corrects.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replicas(&pair.standby).await, 0);
    assert_eq!(replicas(&pair.primary).await, 0);

    let out = op(&d.config, &["failback", "--wait"], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming the failback"));
    assert_eq!(
        record_field(&pair, "phase").await.as_deref(),
        Some("primary")
    );
    assert_eq!(record_field(&pair, "epoch").await.as_deref(), Some("1"));
    assert_eq!(record_field(&pair, "failback_step").await, None);
    assert!(record_field(&pair, "failback_at").await.is_some());
    assert_eq!(replicas(&pair.primary).await, 2);
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let samples = sampler.await.expect("never both sides active");
    assert!(samples > 10, "{samples} samples");
    assert_eq!(replicas(&pair.standby).await, 0);
}

/// `fence` is refused while the record says the primary is active (exit 4, the check
/// named); after a promotion it scales an old primary someone scaled back up to 0 at
/// once, with an Event, and `history` lists the promotion.
#[tokio::test]
async fn fence_is_refused_while_the_primary_is_active_and_fences_after_a_promotion() {
    let pair = pair().await;
    let d = Daemon::start(&pair, &fast()).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    let out = op(&d.config, &["fence"], &[]).await;
    assert_eq!(out.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refused by check"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(replicas(&pair.primary).await, 2, "nothing fenced");

    let out = op(&d.config, &["promote", "--wait"], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    // The daemon would fence a returning primary itself: stop it first, so the command
    // is what fences.
    let cfg = d.config.clone();
    drop(d);
    let fenced_before = events_with_reason(&pair.primary, "KubeFailoverFenced").await;
    for n in pair.primary.deployment_names() {
        pair.primary.scale(&n, 1).await.expect("scale primary up");
    }
    let out = op(&cfg, &["fence"], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(replicas(&pair.primary).await, 0, "fenced by the command");
    assert!(events_with_reason(&pair.primary, "KubeFailoverFenced").await > fenced_before);
    let out = op(&cfg, &["history", "--json"], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    let history = String::from_utf8_lossy(&out.stdout);
    assert!(history.contains("promoting"), "{history}");
}

/// Issue 17, item 2: every request of the daemon carries `kube-failover/<version>
/// (<identity>)` and every request of a CLI command `kube-failover-cli/<version>`, as
/// the API servers' audit logs record them: the daemon's watches, Lease writes and
/// the promotion's scale, the CLI's record write.
#[tokio::test]
async fn the_audit_log_names_the_daemon_and_the_cli() {
    use kube_failover_testbed::{AuditEvent, ClusterPair, DAEMON_USER};
    let pair = ClusterPair::start_audited()
        .await
        .expect("start the audited cluster pair");
    let opts = DaemonOpts {
        identity: Some("audited-1".into()),
        ..fast()
    };
    let d = Daemon::start(&pair, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    d.wait_leading(Duration::from_secs(20)).await;
    let out = op(&d.config, &["pause", "--reason", "audit"], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    let out = op(&d.config, &["resume"], &[]).await;
    assert_eq!(out.status.code(), Some(0));
    pair.primary.stop_apiserver().await.expect("stop primary");
    d.wait_state("promoted", Duration::from_secs(30)).await;

    let version = env!("CARGO_PKG_VERSION");
    let daemon_agent = format!("kube-failover/{version} (audited-1)");
    let cli_agent = format!("kube-failover-cli/{version}");
    let by_user = |events: Vec<AuditEvent>| -> Vec<AuditEvent> {
        events
            .into_iter()
            .filter(|e| e.user.username == DAEMON_USER)
            .collect()
    };
    let standby = by_user(pair.standby.audit_events().expect("standby audit log"));
    let primary = by_user(pair.primary.audit_events().expect("primary audit log"));
    // Every request of the daemon's user came from the daemon or the CLI, named.
    for e in standby.iter().chain(&primary) {
        assert!(
            e.user_agent == daemon_agent || e.user_agent == cli_agent,
            "{} {} with user agent {:?}",
            e.verb,
            e.request_uri,
            e.user_agent
        );
    }
    let seen = |events: &[AuditEvent], agent: &str, verb: &str, resource: &str, sub: &str| {
        events.iter().any(|e| {
            e.user_agent == agent
                && e.verb == verb
                && e.object_ref
                    .as_ref()
                    .is_some_and(|o| o.resource == resource && o.subresource == sub)
        })
    };
    for (verb, resource, sub) in [
        ("patch", "deployments", "scale"),
        ("watch", "deployments", ""),
        ("watch", "leases", ""),
        ("create", "leases", ""),
        ("update", "configmaps", ""),
    ] {
        assert!(
            seen(&standby, &daemon_agent, verb, resource, sub),
            "no {verb} {resource}/{sub} by the daemon on the standby"
        );
    }
    assert!(seen(&primary, &daemon_agent, "watch", "pods", ""));
    assert!(
        seen(&standby, &cli_agent, "update", "configmaps", "")
            || seen(&standby, &cli_agent, "patch", "configmaps", ""),
        "no record write by the CLI"
    );
    assert!(
        primary.iter().any(|e| e.request_uri.starts_with("/readyz")),
        "no /readyz in the primary's audit log"
    );
}

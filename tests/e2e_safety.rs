//! End-to-end safety scenarios on real API servers: faults that only prove the watcher
//! cannot tell (unknown) never promote, a lost record is restored and never read as a
//! failback, and the cooldown holds across a failback and a restart.

use crate::support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube_failover_testbed::{ClusterPair, HttpFaultProxy, HttpRule, TokenCredentials};
use std::time::Duration;
use support::*;

fn fast() -> DaemonOpts {
    DaemonOpts {
        interval: Duration::from_millis(500),
        timeout: Duration::from_millis(400),
        ..DaemonOpts::default()
    }
}

/// Samples the daemon for `how_long` and asserts nothing was promoted. Only a leader
/// writes, so the daemon must lead the group before and after the window: a follower
/// (leader election broken) would pass the check without proving anything.
async fn never_promotes(d: &Daemon, pair: &ClusterPair, how_long: Duration) {
    d.wait_leading(Duration::from_secs(20)).await;
    let until = std::time::Instant::now() + how_long;
    while std::time::Instant::now() < until {
        assert_eq!(replicas(&pair.standby).await, 0, "standby scaled up");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(d.metric(STARTED).await, Some(0.0));
    assert_eq!(record_field(pair, "phase").await, None, "no record written");
    let g = d.group().await.expect("status");
    assert_eq!(
        g.coordination.as_ref().map(|c| c.role.as_str()),
        Some("leader"),
        "the daemon stopped leading during the window: {g:#?}"
    );
}

/// The daemon's RoleBinding in the primary is deleted while the group is healthy and the
/// standby fit: every workload answer is a real 403. For 30 ticks: no promotion, state
/// `primary_unobservable` with reason `primary_forbidden`, the metric and an Event say
/// so; with the binding back, the group is `primary_active` again.
#[tokio::test(flavor = "multi_thread")]
async fn primary_rbac_revoked_is_unobservable_never_down() {
    let pair = pair().await;
    // The API server checks a watch's grant when it starts: the revoked binding shows
    // when the watches are resumed.
    let opts = DaemonOpts {
        watch_timeout: Some(Duration::from_secs(5)),
        ..fast()
    };
    let d = Daemon::start(&pair, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;

    let rb: Api<RoleBinding> = Api::namespaced(pair.primary.client(), pair.primary.namespace());
    let bindings = rb.list(&ListParams::default()).await.expect("list").items;
    assert!(!bindings.is_empty());
    for b in &bindings {
        rb.delete(b.metadata.name.as_deref().unwrap(), &Default::default())
            .await
            .expect("delete rolebinding");
    }
    d.wait_state("primary_unobservable", Duration::from_secs(10))
        .await;
    never_promotes(&d, &pair, opts.interval * 30).await;
    let g = d.group().await.expect("status");
    assert_eq!(g.state, "primary_unobservable");
    assert_eq!(
        g.last_decision.reasons.first().map(ToString::to_string),
        Some("primary_forbidden".to_string()),
        "{g:#?}"
    );
    assert!(!g.primary_down, "unknown is not down");
    let gauge = r#"kube_failover_group_state{group="env0",state="primary_unobservable"}"#;
    assert_eq!(d.metric(gauge).await, Some(1.0));
    assert_eq!(
        events_with_reason(&pair.standby, "KubeFailoverPrimaryUnobservable").await,
        1,
        "one Event for the episode"
    );

    for b in bindings {
        let fresh = RoleBinding {
            metadata: kube::api::ObjectMeta {
                name: b.metadata.name.clone(),
                labels: b.metadata.labels.clone(),
                ..Default::default()
            },
            ..b
        };
        rb.create(&PostParams::default(), &fresh)
            .await
            .expect("re-create rolebinding");
    }
    d.wait_state("primary_active", Duration::from_secs(15))
        .await;
    assert_eq!(d.metric(STARTED).await, Some(0.0));
}

/// A chart upgrade relabels the primary's trigger Deployment: the selector matches
/// nothing while the API answers. That is unknown (`primary_workload_missing`), never a
/// reason to promote.
#[tokio::test(flavor = "multi_thread")]
async fn relabelled_primary_deployment_never_promotes() {
    let pair = pair().await;
    let opts = fast();
    let d = Daemon::start(&pair, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    let api: Api<Deployment> = Api::namespaced(pair.primary.client(), pair.primary.namespace());
    let relabel = serde_json::json!({"metadata": {"labels": {"env0": "agent-trigger-v2"}}});
    api.patch(
        &pair.primary.trigger_deployment(),
        &PatchParams::default(),
        &Patch::Merge(&relabel),
    )
    .await
    .expect("relabel");
    d.wait_state("primary_unobservable", Duration::from_secs(10))
        .await;
    never_promotes(&d, &pair, opts.interval * 30).await;
    let g = d.group().await.expect("status");
    assert!(
        g.last_decision
            .reasons
            .iter()
            .any(|r| r == "primary_workload_missing"),
        "{g:#?}"
    );
}

/// The record is deleted while the standby is active, then the old primary is scaled up
/// by hand: no flip back, the record is written back with the same epoch (and
/// `restored_at`), and the primary is fenced again.
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_record_is_restored_and_the_primary_fenced_again() {
    let pair = pair().await;
    let d = Daemon::start(&pair, &DaemonOpts::default()).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    pair.primary.stop_apiserver().await.expect("stop primary");
    d.wait_state("promoted", Duration::from_secs(30)).await;
    pair.primary.start_apiserver().await.expect("start primary");
    wait_for(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async { replicas(&pair.primary).await == 0 },
    )
    .await
    .expect("primary fenced");
    let names: Vec<String> = pair.primary.deployment_names().to_vec();
    let recorded = record_field(&pair, "primary_deployments")
        .await
        .expect("recorded");
    for n in &names {
        assert!(recorded.contains(n.as_str()), "{recorded}");
    }

    records(&pair)
        .delete(&format!("kube-failover-{GROUP}"), &Default::default())
        .await
        .expect("delete the record");
    for n in &names {
        pair.primary.scale(n, 1).await.expect("scale primary up");
    }
    wait_for(
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async { record_field(&pair, "restored_at").await.is_some() },
    )
    .await
    .expect("record restored");
    assert_eq!(record_field(&pair, "epoch").await.as_deref(), Some("1"));
    assert_eq!(
        record_field(&pair, "phase").await.as_deref(),
        Some("promoted")
    );
    wait_for(
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async { replicas(&pair.primary).await == 0 },
    )
    .await
    .expect("primary fenced again");
    assert_eq!(replicas(&pair.standby).await, 2, "the standby stays active");
    assert_eq!(d.metric(STARTED).await, Some(1.0));
    let restores = r#"kube_failover_record_restores_total{group="env0"}"#;
    d.wait_metric(restores, Duration::from_secs(5), |v| v == 1.0)
        .await;
    assert!(events_with_reason(&pair.standby, "KubeFailoverRecordRestored").await >= 1);
    let g = d.group().await.expect("status");
    assert_eq!(g.state, "promoted");
}

/// The record's data as the default record an operator's command writes when there is
/// none (no phase, no epoch: `primary` at epoch 0), paused by `alice`.
fn recreated_paused_record() -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": format!("kube-failover-{GROUP}"),
            "labels": {"app.kubernetes.io/name": "kube-failover"}
        },
        "data": {"paused_by": "alice", "pause_reason": "maintenance"}
    }))
    .expect("a ConfigMap")
}

/// Found by the fault campaign: after a promotion the record is deleted, and before the
/// daemon writes it back something creates it again knowing nothing of the promotion (an
/// operator's `pause` did: it wrote the default record, `primary` at epoch 0). The epoch
/// went back: the daemon writes its last copy over it, the pause kept, and the standby
/// stays active. An operator's command now refuses to create the record while a
/// promotion is in force (`record_missing`), and a daemon started afresh finds the
/// promotion by the standby's epoch annotation and writes it over the same way.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_recreated_at_a_lower_epoch_is_written_over_and_the_pause_kept() {
    let pair = pair().await;
    let mut d = Daemon::start(&pair, &fast()).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    d.wait_leading(Duration::from_secs(20)).await;
    pair.primary.stop_apiserver().await.expect("stop primary");
    d.wait_state("promoted", Duration::from_secs(30)).await;
    assert_eq!(record_field(&pair, "epoch").await.as_deref(), Some("1"));
    let standby = replicas(&pair.standby).await;
    assert!(standby > 0);

    // Deleted and created again at once (the daemon may write it back in between: then
    // again).
    let name = format!("kube-failover-{GROUP}");
    let created = wait_for(
        Duration::from_secs(20),
        Duration::from_millis(10),
        || async {
            let _ = records(&pair).delete(&name, &Default::default()).await;
            records(&pair)
                .create(&PostParams::default(), &recreated_paused_record())
                .await
                .is_ok()
        },
    )
    .await;
    assert!(created.is_some(), "could not re-create the record");
    let written_over = wait_for(
        Duration::from_secs(15),
        Duration::from_millis(50),
        || async {
            record_field(&pair, "epoch").await.as_deref() == Some("1")
                && record_field(&pair, "restored_at").await.is_some()
        },
    )
    .await;
    assert!(written_over.is_some(), "{}", d.log_text());
    assert_eq!(
        record_field(&pair, "phase").await.as_deref(),
        Some("promoted")
    );
    assert_eq!(
        record_field(&pair, "paused_by").await.as_deref(),
        Some("alice"),
        "the pause is kept"
    );
    assert_eq!(
        replicas(&pair.standby).await,
        standby,
        "the standby stays active"
    );
    assert!(
        d.log_text().contains("record_regressed"),
        "{}",
        d.log_text()
    );

    // With no daemon running, an operator's command refuses to create the record.
    d.kill().await;
    records(&pair)
        .delete(&name, &Default::default())
        .await
        .expect("delete the record");
    let out = op(&d.config, &["pause", "--reason", "maintenance"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("record_missing"), "{stderr}");
    assert!(
        stderr.contains("want replicas under promotion epoch 1"),
        "{stderr}"
    );
    assert!(record(&pair).await.is_none(), "nothing written");

    // Created again by hand; a daemon started afresh (no copy of its own) writes the
    // promotion found on the standby's Deployments over it.
    records(&pair)
        .create(&PostParams::default(), &recreated_paused_record())
        .await
        .expect("create the record");
    let d = Daemon::start(&pair, &fast()).await;
    let written_over = wait_for(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async { record_field(&pair, "epoch").await.as_deref() == Some("1") },
    )
    .await;
    assert!(written_over.is_some(), "{}", d.log_text());
    assert_eq!(
        record_field(&pair, "paused_by").await.as_deref(),
        Some("alice")
    );
    assert_eq!(
        replicas(&pair.standby).await,
        standby,
        "the standby stays active"
    );
}

/// Runs an operator command with `config` on the group.
async fn op(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(daemon_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .args(["--group", GROUP])
        .output();
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the command ends within 60 s")
        .expect("run kube-failover")
}

/// A failback by hand, then the daemon restarts and the primary fails again inside the
/// cooldown: the cooldown is read from the record's `failback_at`, so no promotion.
#[tokio::test(flavor = "multi_thread")]
async fn the_cooldown_holds_across_a_failback_and_a_restart() {
    let pair = pair().await;
    let opts = DaemonOpts {
        cooldown: Duration::from_secs(300),
        ..DaemonOpts::default()
    };
    let mut d = Daemon::start(&pair, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    pair.primary.stop_apiserver().await.expect("stop primary");
    d.wait_state("promoted", Duration::from_secs(30)).await;
    pair.primary.start_apiserver().await.expect("start primary");
    wait_for(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async { replicas(&pair.primary).await == 0 },
    )
    .await
    .expect("primary fenced");

    // Failback as the README describes it: standby to 0, record to primary, primary up.
    for n in pair.standby.deployment_names() {
        pair.standby.scale(&n, 0).await.expect("standby down");
    }
    records(&pair)
        .patch(
            &format!("kube-failover-{GROUP}"),
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"phase": "primary"}})),
        )
        .await
        .expect("record to primary");
    for n in pair.primary.deployment_names() {
        pair.primary.scale(&n, 1).await.expect("primary up");
    }
    d.wait_state("primary_active", Duration::from_secs(30))
        .await;
    wait_for(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async { record_field(&pair, "failback_at_unix").await.is_some() },
    )
    .await
    .expect("failback time recorded");

    d.kill().await;
    let d2 = Daemon::start_with_config(&d.config, d.admin, pair.primary.dir()).await;
    d2.wait_state("primary_active", Duration::from_secs(20))
        .await;
    pair.primary
        .stop_apiserver()
        .await
        .expect("stop primary again");
    d2.wait_group("cooldown", Duration::from_secs(20), |g| {
        g.last_decision.reasons.iter().any(|r| r == "cooldown")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(d2.metric(STARTED).await, Some(0.0));
    assert_eq!(record_field(&pair, "epoch").await.as_deref(), Some("1"));
    assert_eq!(replicas(&pair.standby).await, 0);
}

/// The primary's API server fails `/readyz` (a rule in the HTTP fault proxy) while it
/// still serves every other request: promoted, and the old primary is fenced at once
/// (in the promotion itself, so within two intervals), never both sides active.
#[tokio::test(flavor = "multi_thread")]
async fn readyz_failing_while_serving_promotes_and_fences_at_once() {
    let pair = pair().await;
    let opts = DaemonOpts::default();
    let (d, proxy) = Daemon::start_via_proxy::<HttpFaultProxy>(&pair, Via::Primary, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    proxy.add_rule(HttpRule::readyz_failing());
    let failing = std::time::Instant::now();
    let both_active = std::cell::Cell::new(0);
    let scaled = wait_for(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let (p, s) = (replicas(&pair.primary).await, replicas(&pair.standby).await);
            if p > 0 && s > 0 {
                both_active.set(both_active.get() + 1);
            }
            s == 2
        },
    )
    .await
    .expect("standby scaled up");
    measured("/readyz failing -> standby scaled", scaled);
    let fenced = wait_for(
        Duration::from_secs(5),
        Duration::from_millis(50),
        || async { replicas(&pair.primary).await == 0 },
    )
    .await
    .expect("primary fenced");
    measured(
        "/readyz failing -> primary fenced",
        failing.elapsed().min(scaled + fenced),
    );
    assert!(
        fenced <= opts.interval * 2,
        "fenced {fenced:?} after the standby was scaled"
    );
    assert_eq!(both_active.get(), 0, "both sides were seen active");
    d.wait_state("promoted", Duration::from_secs(30)).await;
    assert_eq!(record_field(&pair, "epoch").await.as_deref(), Some("1"));
    assert!(
        wait_for(
            Duration::from_secs(10),
            Duration::from_millis(100),
            || async { record_field(&pair, "fenced_at").await.is_some() },
        )
        .await
        .is_some(),
        "fence recorded"
    );
    assert_eq!(
        d.metric(r#"kube_failover_dual_active_seconds_total{group="env0"}"#)
            .await,
        Some(0.0)
    );
}

/// The primary's credentials are revoked (a real 401 from the API server: the token's
/// ServiceAccount is deleted) while the group is healthy and the standby fit. For 30
/// ticks: no promotion, `primary_unobservable` with `primary_credentials_rejected`.
#[tokio::test(flavor = "multi_thread")]
async fn primary_credentials_revoked_never_promote() {
    let pair = pair().await;
    let creds = TokenCredentials::create(&pair.primary, "revoked")
        .await
        .expect("token identity");
    let opts = DaemonOpts {
        primary_kubeconfig: Some(creds.kubeconfig().to_path_buf()),
        ..fast()
    };
    let d = Daemon::start(&pair, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    creds.revoke().await.expect("revoke");
    d.wait_state("primary_unobservable", Duration::from_secs(20))
        .await;
    never_promotes(&d, &pair, opts.interval * 30).await;
    let g = d.group().await.expect("status");
    assert_eq!(g.state, "primary_unobservable");
    assert_eq!(
        g.last_decision.reasons.first().map(ToString::to_string),
        Some("primary_credentials_rejected".to_string()),
        "{g:#?}"
    );
    let gauge = r#"kube_failover_group_state{group="env0",state="primary_unobservable"}"#;
    assert_eq!(d.metric(gauge).await, Some(1.0));
}

/// A write that loses a race: the daemon's scale of the standby back to 0 is held in the
/// HTTP fault proxy while a person scales the same Deployment to 0 by hand, so the
/// daemon's write reaches the API server with a stale resourceVersion (a real 409). The
/// daemon reads the Deployment again, finds it where it wanted it, and counts no error;
/// a second race to another value is retried once on the fresh reading and wins.
#[tokio::test(flavor = "multi_thread")]
async fn a_scale_that_loses_a_race_is_read_again_not_failed() {
    let pair = pair().await;
    // The daemon's loop waits on the held write: a renew deadline beyond the hold keeps
    // it the leader meanwhile (a loop stalled past its deadline stops writing, a retry
    // included: e2e_leader_pause).
    let opts = DaemonOpts {
        extra_toml: "[daemon.leader]\nlease_duration = \"15s\"\nrenew_deadline = \"10s\"\n".into(),
        ..DaemonOpts::default()
    };
    let (d, proxy) = Daemon::start_via_proxy::<HttpFaultProxy>(&pair, Via::Standby, &opts).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    d.wait_leading(Duration::from_secs(20)).await;
    let trigger = pair.standby.trigger_deployment();
    let scale_path = format!(
        "/apis/apps/v1/namespaces/{}/deployments/{trigger}/scale",
        pair.standby.namespace()
    );
    let errors =
        r#"kube_failover_actions_total{action="scale_standby_down",group="env0",result="error"}"#;
    let successes = r#"kube_failover_standby_corrections_total{group="env0",result="success"}"#;
    // Long enough for the hand to win on a loaded machine.
    let hold = Duration::from_secs(4);

    for (round, by_hand) in [0, 3].into_iter().enumerate() {
        let held_before = proxy.faulted();
        proxy.add_rule(HttpRule::delay(&scale_path, hold).method(http::Method::PATCH));
        pair.standby
            .scale(&trigger, 1)
            .await
            .expect("scale standby");
        // The daemon's correction is held in the proxy...
        wait_for(
            Duration::from_secs(10),
            Duration::from_millis(20),
            || async { proxy.faulted() > held_before },
        )
        .await
        .expect("the daemon's scale reached the proxy");
        proxy.remove_rules(&scale_path);
        // ...while the Deployment changes under it.
        pair.standby
            .scale(&trigger, by_hand)
            .await
            .expect("scale by hand");
        d.wait_metric(successes, hold * 3, |v| v >= (round + 1) as f64)
            .await;
        assert_eq!(
            pair.standby.replicas(&trigger).await.expect("replicas"),
            0,
            "round {round}"
        );
        assert_eq!(d.metric(errors).await.unwrap_or(0.0), 0.0, "round {round}");
    }
    assert!(d.group().await.expect("status").last_action_error.is_none());
    // The write that lost to a hand at 0 wrote nothing; the one that lost to 3 wrote
    // once, on the fresh reading, and said so.
    assert_eq!(
        events_with_reason(&pair.standby, "KubeFailoverStandbyCorrected").await,
        1
    );
    let log = std::fs::read_to_string(&d.log).expect("daemon log");
    assert!(
        log.contains("another writer scaled the Deployment first; nothing to write"),
        "{}",
        d.log_text()
    );
    assert_eq!(d.metric(STARTED).await, Some(0.0));
}

/// Issue 17, item 5: the daemon's path to the primary accepts connections and never
/// answers (the fault proxy in blackhole mode, which sees a client close even while it
/// holds the connection). Sampled every 5 s for 60 s (`KUBE_FAILOVER_BLACKHOLE_SECS`
/// for a longer measurement): the connections the daemon holds to the primary, and
/// those open at the proxy, stay at a handful (each request that times out closes its
/// connection), and new ones come at a steady rate: one `/readyz` per probe interval
/// (the watches start nothing while `/readyz` says the API cannot be reached).
#[tokio::test(flavor = "multi_thread")]
async fn connections_stay_bounded_behind_a_black_hole() {
    /// Requests the daemon may have in flight to one cluster at once here: `/readyz`,
    /// the two watches (Deployments, Pods), a fence; with room to spare.
    const BOUND: usize = 8;
    let secs: u64 = std::env::var("KUBE_FAILOVER_BLACKHOLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let pair = pair().await;
    let (d, proxy): (Daemon, kube_failover_testbed::FaultProxy) =
        Daemon::start_via_proxy(&pair, Via::Primary, &DaemonOpts::default()).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    let port = proxy.addr().port();
    let before = proxy.accepted();
    assert!(
        d.connections_to(port) >= 1,
        "the daemon reaches the primary through the proxy"
    );

    proxy.set_mode(kube_failover_testbed::ProxyMode::Blackhole);
    let cut = std::time::Instant::now();
    let (mut most_held, mut most_open) = (0, 0);
    let mut halfway = None;
    while cut.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (held, open) = (d.connections_to(port), proxy.open_connections());
        let opened = proxy.accepted() - before;
        eprintln!(
            "{:>4} s into the black hole: {opened} connections opened, {held} held by the \
             daemon, {open} open at the proxy",
            cut.elapsed().as_secs()
        );
        most_held = most_held.max(held);
        most_open = most_open.max(open);
        if halfway.is_none() && cut.elapsed() >= Duration::from_secs(secs / 2) {
            halfway = Some((cut.elapsed(), opened));
        }
        assert!(
            held <= BOUND && open as usize <= BOUND,
            "{held} held by the daemon, {open} open at the proxy"
        );
    }
    // The fault was in force: the daemon saw the primary's API time out.
    let g = d.group().await.expect("status");
    let api = g.signals.iter().find(|s| s.name == "api");
    assert!(api.is_some_and(|s| !s.up), "{g:?}");
    let opened = proxy.accepted() - before;
    eprintln!(
        "black hole for {secs} s: {opened} connections opened, at most {most_held} held by \
         the daemon and {most_open} open at the proxy"
    );
    // Steady state (the second half): one `/readyz` per interval and the two watches'
    // retries; at most two per interval.
    let (at, opened_then) = halfway.expect("sampled past halfway");
    let rate = (opened - opened_then) as f64 / (cut.elapsed() - at).as_secs_f64();
    eprintln!("new connections in the second half: {rate:.2} per second");
    assert!(rate <= 2.0, "{rate:.2} new connections per second");
}

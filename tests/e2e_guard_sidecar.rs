//! The guard in its sidecar form (`form = "sidecar"`), on real API servers: it starts
//! no agent and serves its verdict at `GET /agent` for the agent container's liveness
//! probe (`kube-failover guard check`). kwok Pods run no containers, so the test asks
//! the verdict as the probe would, with the same binary's `guard check`, and checks that
//! the daemon reads the sidecar's heartbeat without ever counting it as a fence.

use crate::support;

use kube_failover_testbed::ClusterPair;
use std::path::Path;
use std::time::Duration;
use support::guard::*;
use support::*;

/// A sidecar guard process (killed when the test ends).
struct Sidecar(Guard);

impl Sidecar {
    fn start(pair: &ClusterPair, dir: &Path) -> Sidecar {
        let opts = GuardOpts {
            sidecar: true,
            ..GuardOpts::default()
        };
        Sidecar(Guard::start_with(pair, "primary", dir, &opts))
    }

    fn log_text(&self) -> String {
        self.0.log_text()
    }

    /// `GET /agent`: the status and the body, or `None` when it does not answer.
    async fn verdict(&self) -> Option<(u16, String)> {
        let r = admin_client()
            .get(format!("http://{}/agent", self.0.admin))
            .send()
            .await
            .ok()?;
        Some((r.status().as_u16(), r.text().await.unwrap_or_default()))
    }

    /// Waits until `GET /agent` answers `status`; how long it took.
    async fn wait_verdict(&self, status: u16, timeout: Duration) -> Duration {
        wait_for(timeout, Duration::from_millis(20), || async {
            self.verdict().await.is_some_and(|(s, _)| s == status)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "GET /agent answers {status} within {timeout:?}\n{}",
                self.log_text()
            )
        })
    }

    /// What the agent's liveness probe runs: `guard check --url …/agent -- <probe>`;
    /// its exit code and output.
    async fn check(&self, probe: &[&str]) -> (Option<i32>, String) {
        let out = tokio::process::Command::new(daemon_bin())
            .args(["guard", "check", "--url"])
            .arg(format!("http://{}/agent", self.0.admin))
            .arg("--")
            .args(probe)
            .output()
            .await
            .expect("run guard check");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    }

    async fn metrics(&self) -> String {
        self.0.metrics().await
    }
}

/// The sidecar's heartbeat Lease: its state, standby epoch and form annotations.
async fn heartbeat(pair: &ClusterPair) -> Option<(String, Option<String>, Option<String>)> {
    let a = heartbeat_annotations(pair, "primary").await?;
    Some((
        a.get("kube-failover/guard-state")?.clone(),
        a.get("kube-failover/guard-standby-epoch").cloned(),
        a.get("kube-failover/guard-form").cloned(),
    ))
}

/// The primary's API server dies: the daemon promotes, and the sidecar guard, reading
/// the record from the standby, refuses the agent (503) within an interval of the
/// `promoting` record; its heartbeat says `refusing`, which the daemon reads and never
/// counts as a fence while that API server stays dead. It is back, the daemon fences
/// by scaling, an operator fails back, and the sidecar allows the agent again.
#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_guard_refuses_the_old_agent_on_the_record_and_never_fences() {
    let pair = pair().await;
    grant_guard_role(&pair).await;
    let d = Daemon::start(&pair, &guarded_daemon(1, 0)).await;
    d.wait_leading(Duration::from_secs(20)).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    let sidecar = Sidecar::start(&pair, pair.primary.dir());
    sidecar.wait_verdict(200, Duration::from_secs(15)).await;
    let (_, body) = sidecar.verdict().await.expect("an answer");
    assert!(body.starts_with("allowed: no_record_yet"), "{body}");
    let (code, out) = sidecar.check(&["true"]).await;
    assert_eq!(code, Some(0), "allowed: the probe passes\n{out}");
    // The agent's own probe still decides once the guard allows the agent.
    let (code, out) = sidecar.check(&["false"]).await;
    assert_ne!(code, Some(0), "the agent's own probe failed\n{out}");
    assert!(out.contains("its probe command"), "{out}");
    wait_for(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            heartbeat(&pair).await == Some(("running".into(), None, Some("sidecar".into())))
        },
    )
    .await
    .unwrap_or_else(|| panic!("heartbeat: running, sidecar\n{}", sidecar.log_text()));
    let running =
        format!(r#"kube_failover_guards{{group="{GROUP}",side="primary",state="running"}}"#);
    d.wait_metric(&running, Duration::from_secs(10), |v| v == 1.0)
        .await;

    pair.primary.kill_apiserver().await.expect("kill primary");
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { record_field(&pair, "phase").await.is_some() },
    )
    .await
    .expect("promotion recorded");
    let recorded_at = unix_now();
    sidecar.wait_verdict(503, Duration::from_secs(10)).await;
    let refused_after = unix_now() - recorded_at;
    eprintln!(
        "measured: GET /agent 503 {refused_after:.2}s after the promoting record was seen (guard interval {GUARD_INTERVAL:?})"
    );
    // One interval (500 ms) and a read (400 ms at most), with room for a busy host.
    assert!(
        refused_after < 2.0,
        "{refused_after:.2}s\n{}",
        sidecar.log_text()
    );
    let (_, body) = sidecar.verdict().await.expect("an answer");
    assert!(body.starts_with("refused: other_side_active: "), "{body}");
    let (code, out) = sidecar.check(&["true"]).await;
    assert_ne!(code, Some(0), "refused: the probe fails\n{out}");
    assert!(
        out.contains("the sidecar guard refuses the agent (HTTP 503): refused: other_side_active"),
        "{out}"
    );
    wait_for(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || async {
            heartbeat(&pair).await
                == Some(("refusing".into(), Some("1".into()), Some("sidecar".into())))
        },
    )
    .await
    .unwrap_or_else(|| panic!("heartbeat: refusing at epoch 1\n{}", sidecar.log_text()));
    // The daemon reads it (fresh, refusing, a sidecar) with the primary's API still dead
    // and the promotion done, over several of its ticks, and records no fence.
    d.wait_state("promoted", Duration::from_secs(30)).await;
    let seen = daemon_sees_heartbeat(&d, Duration::from_secs(10), |b| {
        b.state == "refusing" && b.form == "sidecar" && b.standby_epoch == Some(1) && b.fresh
    })
    .await;
    assert!(seen, "/status: the sidecar refusing\n{}", d.log_text());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !pair.primary.apiserver_running(),
        "the primary's API server is still down"
    );
    assert_eq!(
        record_field(&pair, "fenced_at").await,
        None,
        "{}",
        d.log_text()
    );
    assert_eq!(record_field(&pair, "fenced_by").await, None);
    assert_eq!(
        events_with_reason(&pair.standby, "KubeFailoverFencedByGuard").await,
        0
    );
    let m = sidecar.metrics().await;
    let refusals = m.lines().find(|l| {
        l.starts_with("kube_failover_guard_agent_changes_total{")
            && l.contains(r#"action="refuse""#)
            && l.contains(r#"reason="other_side_active""#)
    });
    assert!(refusals.is_some_and(|l| l.ends_with(" 1")), "{m}");
    assert!(
        m.lines()
            .any(|l| l.starts_with("kube_failover_guard_agent_allowed{") && l.ends_with(" 0")),
        "{m}"
    );

    // The primary returns: the fence is the scale to 0. An operator fails back.
    pair.primary.start_apiserver().await.expect("start primary");
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { record_field(&pair, "fenced_by").await.is_some() },
    )
    .await
    .expect("primary fenced");
    assert_eq!(
        record_field(&pair, "fenced_by").await.as_deref(),
        Some("scale")
    );
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { replicas(&pair.primary).await == 0 },
    )
    .await
    .expect("primary scaled to 0");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(operator(&d.config, &["failback", "--wait"]).await, Some(0));
    sidecar.wait_verdict(200, Duration::from_secs(10)).await;
    let (_, body) = sidecar.verdict().await.expect("an answer");
    assert!(body.starts_with("allowed: side_active"), "{body}");
    let (code, out) = sidecar.check(&[]).await;
    assert_eq!(code, Some(0), "{out}");
}

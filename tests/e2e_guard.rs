//! The guard beside the agent, on real API servers: the agent is a process on this host
//! (kwok Pods run no containers) that appends a timestamp line every 100 ms, so the test
//! reads when it ran. The guard reads the record from the standby directly.

use crate::support;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube_failover_testbed::ClusterPair;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::*;

/// A guard process and the agent it runs.
struct Guard {
    /// Killed when the test ends.
    _child: tokio::process::Child,
    beats: PathBuf,
    log: PathBuf,
    admin: SocketAddr,
}

const GUARD_INTERVAL: Duration = Duration::from_millis(500);

impl Guard {
    /// Starts `kube-failover guard` for `side`, reading the standby with the daemon's
    /// kubeconfig, around an agent that writes a line every 100 ms.
    fn start(pair: &ClusterPair, side: &str, dir: &Path) -> Guard {
        let admin = support::free_port();
        let config = dir.join(format!("guard-{side}-{}.toml", admin.port()));
        let beats = dir.join(format!("agent-{side}-{}.beats", admin.port()));
        let log = dir.join(format!("guard-{side}-{}.log", admin.port()));
        let toml = format!(
            r#"group = "{GROUP}"
side = "{side}"
identity = "{side}-agent-0"
interval = "{interval}ms"
timeout = "400ms"
stop_grace = "2s"
heartbeat_every = "1s"
listen = "{admin}"

[standby]
kubeconfig = "{kubeconfig}"
context = "{context}"
namespace = "{namespace}"
"#,
            interval = GUARD_INTERVAL.as_millis(),
            kubeconfig = pair.standby.daemon_kubeconfig().display(),
            context = pair.standby.context(),
            namespace = pair.standby.namespace(),
        );
        std::fs::write(&config, toml).expect("write guard config");
        let out = std::fs::File::create(&log).expect("guard log");
        let err = out.try_clone().expect("clone");
        let script = format!(
            "while :; do date +%s.%N >> '{}'; sleep 0.1; done",
            beats.display()
        );
        let child = tokio::process::Command::new(daemon_bin())
            .args(["guard", "--config"])
            .arg(&config)
            .args(["--", "/bin/sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn guard");
        Guard {
            _child: child,
            beats,
            log,
            admin,
        }
    }

    /// The agent's lines, as Unix seconds.
    fn lines(&self) -> Vec<f64> {
        std::fs::read_to_string(&self.beats)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// The agent wrote a line within the last `within`.
    fn running(&self, within: Duration) -> bool {
        self.lines()
            .last()
            .is_some_and(|t| unix_now() - t < within.as_secs_f64())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.admin);
        match admin_client().get(url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

async fn wait_running(g: &Guard, yes: bool, timeout: Duration) -> Duration {
    wait_for(timeout, Duration::from_millis(50), || async {
        g.running(Duration::from_millis(400)) == yes
    })
    .await
    .unwrap_or_else(|| panic!("agent running = {yes} within {timeout:?}\n{}", g.log_text()))
}

/// The guard's Role (deploy/kubernetes/target-rbac/guard-role.yaml) in the standby, for
/// the identity the guards here use.
async fn grant_guard_role(pair: &ClusterPair) {
    let file = kube_failover_testbed::target_rbac_file("guard-role.yaml");
    pair.standby
        .grant_daemon_role(&file, "kube-failover-guard")
        .await
        .expect("grant the guard's Role in the standby");
}

/// The guard's heartbeat Lease in the standby, by its annotations.
async fn heartbeat(pair: &ClusterPair, side: &str) -> Option<(String, Option<String>)> {
    let api: Api<Lease> = Api::namespaced(pair.standby.client(), pair.standby.namespace());
    let lease = api
        .get_opt(&format!(
            "kube-failover-guard-{GROUP}-{side}-{side}-agent-0"
        ))
        .await
        .ok()??;
    let a = lease.metadata.annotations?;
    Some((
        a.get("kube-failover/guard-state")?.clone(),
        a.get("kube-failover/guard-standby-epoch").cloned(),
    ))
}

/// The primary's API server dies: the daemon promotes, and the guard, reading the
/// record from the standby, stops the primary's agent within an interval of the
/// `promoting` record, long before that API server returns. Then the primary is back
/// and fenced, an operator fails back, and the guard starts the agent again.
#[tokio::test(flavor = "multi_thread")]
async fn the_guard_stops_the_old_agent_while_the_primary_api_is_dead_and_restarts_it_on_failback() {
    let pair = pair().await;
    let opts = DaemonOpts {
        cooldown: Duration::from_secs(1),
        group_toml: "\n[groups.guards]\nprimary = 1\nstandby = 1\n".into(),
        ..DaemonOpts::default()
    };
    grant_guard_role(&pair).await;
    let d = Daemon::start(&pair, &opts).await;
    d.wait_leading(Duration::from_secs(20)).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    // No guard runs yet: the daemon says the primary's one is missing.
    let missing = format!(r#"kube_failover_guards_missing{{group="{GROUP}",side="primary"}}"#);
    d.wait_metric(&missing, Duration::from_secs(10), |v| v == 1.0)
        .await;
    let dir = pair.primary.dir().to_path_buf();
    let primary = Guard::start(&pair, "primary", &dir);
    let standby = Guard::start(&pair, "standby", &dir);
    wait_running(&primary, true, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !standby.running(Duration::from_secs(2)),
        "the record says primary"
    );
    assert!(standby.lines().is_empty());
    wait_for(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            heartbeat(&pair, "primary")
                .await
                .is_some_and(|(s, _)| s == "running")
        },
    )
    .await
    .unwrap_or_else(|| {
        panic!(
            "the primary guard's heartbeat says running\n{}",
            primary.log_text()
        )
    });
    // The daemon sees it: nothing missing, one running beside the primary.
    d.wait_metric(&missing, Duration::from_secs(10), |v| v == 0.0)
        .await;
    let running =
        format!(r#"kube_failover_guards{{group="{GROUP}",side="primary",state="running"}}"#);
    d.wait_metric(&running, Duration::from_secs(10), |v| v == 1.0)
        .await;

    pair.primary.kill_apiserver().await.expect("kill primary");
    let promoting = wait_for(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { record_field(&pair, "phase").await.is_some() },
    )
    .await
    .expect("promotion recorded");
    let recorded_at = unix_now();
    pair.standby
        .wait_deployment_ready(&pair.standby.trigger_deployment(), Duration::from_secs(30))
        .await
        .expect("standby Ready");
    let standby_ready_at = unix_now();
    wait_running(&primary, false, Duration::from_secs(10)).await;
    let last = primary.lines().last().copied().expect("the agent ran");
    let stopped_after_record = last - recorded_at;
    let dual_active = (last - standby_ready_at).max(0.0);
    eprintln!(
        "measured: primary API killed -> promoting recorded {:.2}s; primary agent's last line {:.2}s after the record; dual-active (standby Ready and the old agent running) {:.2}s",
        promoting.as_secs_f64(),
        stopped_after_record,
        dual_active
    );
    // The guard reads every 500 ms; the agent exits on SIGTERM at once.
    assert!(
        stopped_after_record < 2.0,
        "{stopped_after_record:.2}s\n{}",
        primary.log_text()
    );
    assert!(dual_active < 1.0, "{dual_active:.2}s");
    // Fenced without the primary's API: the heartbeat says so at the promotion's epoch.
    wait_for(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || async {
            heartbeat(&pair, "primary").await
                == Some(("stopped".to_string(), Some("1".to_string())))
        },
    )
    .await
    .expect("heartbeat: stopped at epoch 1");
    // The daemon records the fence from the guard's heartbeat, the primary's API still
    // dead: fenced_by = guard, in the record, /status and an Event.
    wait_for(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async { record_field(&pair, "fenced_by").await.as_deref() == Some("guard") },
    )
    .await
    .unwrap_or_else(|| panic!("fenced by the guard\n{}", d.log_text()));
    eprintln!(
        "measured: fenced_by = guard recorded {:.2}s after the promoting record, the primary's API server still down",
        unix_now() - recorded_at
    );
    assert!(record_field(&pair, "fenced_at").await.is_some());
    // /status shows the record as read by the tick after the write.
    let fenced_in_status = |s: &kube_failover::status::StatusReport| {
        s.groups[0]
            .record
            .as_ref()
            .and_then(|r| r.fenced_by.as_deref())
            == Some("guard")
    };
    wait_for(
        Duration::from_secs(5),
        Duration::from_millis(100),
        || async { d.status().await.is_some_and(|s| fenced_in_status(&s)) },
    )
    .await
    .expect("/status: fenced by guard");
    let status = d.status().await.expect("status");
    let g = &status.groups[0];
    let guards = g.guards.as_ref().expect("guards in /status");
    assert!(
        guards
            .heartbeats
            .iter()
            .any(|b| b.identity == "primary-agent-0" && b.state == "stopped" && b.fresh),
        "{guards:?}"
    );
    assert_eq!(
        events_with_reason(&pair.standby, "KubeFailoverFencedByGuard").await,
        1,
        "the guard-fence Event"
    );
    // The standby's agent runs now; the primary's stays stopped.
    wait_running(&standby, true, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!primary.running(Duration::from_secs(2)));
    let m = primary.metrics().await;
    let stops = m.lines().find(|l| {
        l.starts_with("kube_failover_guard_agent_changes_total{")
            && l.contains(r#"action="stop""#)
            && l.contains(r#"reason="other_side_active""#)
    });
    assert!(stops.is_some_and(|l| l.ends_with(" 1")), "{m}");

    // The primary returns and is fenced; an operator fails back.
    pair.primary.start_apiserver().await.expect("start primary");
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { replicas(&pair.primary).await == 0 },
    )
    .await
    .expect("primary fenced");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(operator(&d.config, &["failback", "--wait"]).await, Some(0));
    wait_running(&primary, true, Duration::from_secs(10)).await;
    wait_running(&standby, false, Duration::from_secs(10)).await;
    assert_eq!(
        heartbeat(&pair, "primary").await.map(|(s, _)| s),
        Some("running".to_string())
    );
}

/// The standby's API server is down while the primary is healthy: nobody can promote,
/// and the guard, unable to read the record, never stops the primary's agent.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_standby_never_stops_the_primary_agent() {
    let pair = pair().await;
    grant_guard_role(&pair).await;
    let dir = pair.primary.dir().to_path_buf();
    let primary = Guard::start(&pair, "primary", &dir);
    wait_running(&primary, true, Duration::from_secs(15)).await;
    pair.standby.stop_apiserver().await.expect("stop standby");
    let down = std::time::Instant::now();
    // A stop would show in the guard's own accounting (the running gauge at 0, a stop
    // counted) whatever the load on the machine; the longest pause between the agent's
    // lines is reported, not asserted (a starved host delays a 100 ms `sleep` too).
    let mut gaps = 0.0f64;
    while down.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let m = primary.metrics().await;
        assert_eq!(
            metric_value(
                &m,
                r#"kube_failover_guard_agent_running{group="env0",side="primary"}"#
            ),
            Some(1.0),
            "the agent was stopped\n{}",
            primary.log_text()
        );
        if let Some(last) = primary.lines().last() {
            gaps = gaps.max(unix_now() - last);
        }
    }
    let m = primary.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("kube_failover_guard_record_reads_total")
                && !l.contains(r#"result="ok""#)
                && !l.ends_with(" 0")),
        "the fault was in force: failed reads counted\n{m}"
    );
    let stops: Vec<&str> = m
        .lines()
        .filter(|l| {
            l.starts_with("kube_failover_guard_agent_changes_total")
                && l.contains(r#"action="stop""#)
                && !l.ends_with(" 0")
        })
        .collect();
    assert!(
        stops.is_empty(),
        "stops counted: {stops:?}\n{}",
        primary.log_text()
    );
    measured(
        "standby API down 20 s: longest pause between the agent's lines",
        Duration::from_secs_f64(gaps),
    );
    pair.standby.start_apiserver().await.expect("start standby");
    wait_running(&primary, true, Duration::from_secs(10)).await;
}

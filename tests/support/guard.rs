//! `kube-failover guard` on the test bed, for the guard's end-to-end tests and the
//! report's guard part: the agent is a process on this host (kwok Pods run no
//! containers) that appends a timestamp line every 100 ms, so a caller reads when it
//! ran. The guard reads the record from the standby directly.

use super::{Daemon, DaemonOpts, GROUP, admin_client, daemon_bin, free_port, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube_failover_testbed::ClusterPair;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The guards' `interval` unless [`GuardOpts::interval`] says otherwise.
pub const GUARD_INTERVAL: Duration = Duration::from_millis(500);

/// A guard process and the agent it runs.
pub struct Guard {
    /// Killed when the caller drops the guard, with the agent it last started.
    child: tokio::process::Child,
    pub beats: PathBuf,
    pub log: PathBuf,
    pub admin: SocketAddr,
}

/// How a caller wants a guard configured beyond the defaults of [`Guard::start`].
#[derive(Default)]
pub struct GuardOpts {
    /// The identity (default `<side>-agent-0`).
    pub identity: Option<String>,
    /// The standby kubeconfig (default the daemon's).
    pub kubeconfig: Option<PathBuf>,
    /// `interval` (default [`GUARD_INTERVAL`]; the timeout stays 400 ms).
    pub interval: Option<Duration>,
    /// Top-level keys added to the config (e.g. `on_isolation`).
    pub toml: String,
    /// The sidecar form: no agent, the verdict served at `GET /agent`.
    pub sidecar: bool,
}

/// `on_isolation = "stop"` with `isolation_ttl` and the daemon at `admin` as the only one
/// asked.
pub fn stop_mode(ttl: Duration, daemon: SocketAddr) -> String {
    format!(
        "on_isolation = \"stop\"\nisolation_ttl = \"{}ms\"\ndaemons = [\"http://{daemon}\"]\n",
        ttl.as_millis()
    )
}

/// The daemon's options for a group that expects `primary` guards beside the primary's
/// agents and `standby` beside the standby's, with a 1 s cooldown (so a promotion may
/// follow a failback at once).
pub fn guarded_daemon(primary: u32, standby: u32) -> DaemonOpts {
    DaemonOpts {
        cooldown: Duration::from_secs(1),
        group_toml: format!("\n[groups.guards]\nprimary = {primary}\nstandby = {standby}\n"),
        ..DaemonOpts::default()
    }
}

impl Guard {
    /// Starts `kube-failover guard` for `side`, reading the standby with the daemon's
    /// kubeconfig, around an agent that writes a line every 100 ms.
    pub fn start(pair: &ClusterPair, side: &str, dir: &Path) -> Guard {
        Guard::start_with(pair, side, dir, &GuardOpts::default())
    }

    /// As [`Guard::start`], configured by `opts`.
    pub fn start_with(pair: &ClusterPair, side: &str, dir: &Path, opts: &GuardOpts) -> Guard {
        let admin = free_port();
        let config = dir.join(format!("guard-{side}-{}.toml", admin.port()));
        let beats = dir.join(format!("agent-{side}-{}.beats", admin.port()));
        let log = dir.join(format!("guard-{side}-{}.log", admin.port()));
        let toml = format!(
            r#"{form}{extra}group = "{GROUP}"
side = "{side}"
identity = "{identity}"
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
            form = if opts.sidecar {
                "form = \"sidecar\"\n"
            } else {
                ""
            },
            extra = opts.toml,
            identity = opts
                .identity
                .clone()
                .unwrap_or_else(|| format!("{side}-agent-0")),
            interval = opts.interval.unwrap_or(GUARD_INTERVAL).as_millis(),
            kubeconfig = opts
                .kubeconfig
                .as_deref()
                .unwrap_or(pair.standby.daemon_kubeconfig())
                .display(),
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
        let mut command = tokio::process::Command::new(daemon_bin());
        command.args(["guard", "--config"]).arg(&config);
        if !opts.sidecar {
            command.args(["--", "/bin/sh", "-c", &script]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn guard");
        Guard {
            child,
            beats,
            log,
            admin,
        }
    }

    /// The guard's own process id (`None` once it has been waited for).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The guard's exit status once it has ended by itself (`None` while it runs).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The agent's lines, as Unix seconds.
    pub fn lines(&self) -> Vec<f64> {
        std::fs::read_to_string(&self.beats)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// The agent wrote a line within the last `within`.
    pub fn running(&self, within: Duration) -> bool {
        self.lines()
            .last()
            .is_some_and(|t| unix_now() - t < within.as_secs_f64())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id of the agent the guard last started, from its log line.
    pub fn agent_pid(&self) -> Option<i32> {
        self.log_text()
            .lines()
            .rev()
            .filter(|l| l.contains("agent started"))
            .find_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("pid=")?.parse().ok())
            })
    }

    /// SIGKILLs the guard (not its agent) and waits until it is gone.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("SIGKILL the guard");
    }

    /// The guard's `/metrics` (empty when it does not answer).
    pub async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.admin);
        match admin_client().get(url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The guard's own metric `name` with the labels `group="env0"`, `side="primary"` and
    /// `labels` ([`guard_series`]).
    pub async fn metric(&self, name: &str, labels: &[&str]) -> Option<f64> {
        guard_series(&self.metrics().await, name, labels)
    }
}

/// A test that SIGKILLs its guard leaves the agent running (that is what it checks), and
/// `kill_on_drop` kills the guard only: the agent it last started goes with it here, so
/// no agent outlives its test.
impl Drop for Guard {
    fn drop(&mut self) {
        let Some(pid) = self.agent_pid() else {
            return;
        };
        // Only while that process is still this guard's agent (its command line names
        // this guard's beats file), never a process that got its id since.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = String::from_utf8_lossy(&cmdline).contains(&*self.beats.to_string_lossy());
        if ours {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A guard's metric `name` in its exposition `text`, with the labels `group="env0"`,
/// `side="primary"` and `labels`, in any order: the guard's registry adds its `group` and
/// `side` labels in an order that changes from one process to the next.
pub fn guard_series(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{'))
                && [r#"group="env0""#, r#"side="primary""#]
                    .iter()
                    .chain(labels)
                    .all(|label| l.contains(label))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Waits until the agent writes lines (`yes`) or has stopped writing them for 400 ms.
pub async fn wait_running(g: &Guard, yes: bool, timeout: Duration) -> Duration {
    wait_for(timeout, Duration::from_millis(50), || async {
        g.running(Duration::from_millis(400)) == yes
    })
    .await
    .unwrap_or_else(|| panic!("agent running = {yes} within {timeout:?}\n{}", g.log_text()))
}

/// The guard's Role (deploy/kubernetes/target-rbac/guard-role.yaml) in the standby, for
/// the identity the guards here use.
pub async fn grant_guard_role(pair: &ClusterPair) {
    let file = kube_failover_testbed::target_rbac_file("guard-role.yaml");
    pair.standby
        .grant_daemon_role(&file, "kube-failover-guard")
        .await
        .expect("grant the guard's Role in the standby");
}

/// The annotations of `<side>-agent-0`'s guard's heartbeat Lease in the standby.
pub async fn heartbeat_annotations(
    pair: &ClusterPair,
    side: &str,
) -> Option<std::collections::BTreeMap<String, String>> {
    let api: Api<Lease> = Api::namespaced(pair.standby.client(), pair.standby.namespace());
    let lease = api
        .get_opt(&format!(
            "kube-failover-guard-{GROUP}-{side}-{side}-agent-0"
        ))
        .await
        .ok()??;
    lease.metadata.annotations
}

/// The heartbeat Lease of `<side>-agent-0`'s guard in the standby, by its annotations:
/// state and standby epoch.
pub async fn heartbeat(pair: &ClusterPair, side: &str) -> Option<(String, Option<String>)> {
    let a = heartbeat_annotations(pair, side).await?;
    Some((
        a.get("kube-failover/guard-state")?.clone(),
        a.get("kube-failover/guard-standby-epoch").cloned(),
    ))
}

/// Whether the daemon's `/status` shows, within `timeout`, a heartbeat of
/// `primary-agent-0`'s guard that satisfies `pred`.
pub async fn daemon_sees_heartbeat(
    d: &Daemon,
    timeout: Duration,
    pred: impl Fn(&kube_failover::status::GuardHeartbeatStatus) -> bool,
) -> bool {
    wait_for(timeout, Duration::from_millis(100), || async {
        d.status().await.is_some_and(|s| {
            s.groups[0].guards.as_ref().is_some_and(|g| {
                g.heartbeats
                    .iter()
                    .any(|b| b.identity == "primary-agent-0" && pred(b))
            })
        })
    })
    .await
    .is_some()
}

/// Waits until the daemon's `/status` shows the primary guard in stop mode (so the
/// engine knows to wait for it).
pub async fn wait_stop_mode_seen(d: &Daemon) {
    let seen = daemon_sees_heartbeat(d, Duration::from_secs(15), |b| {
        b.state == "running" && b.isolation_bound_seconds.is_some()
    })
    .await;
    assert!(
        seen,
        "the daemon sees the stop-mode guard\n{}",
        d.log_text()
    );
}

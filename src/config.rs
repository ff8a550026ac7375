//! Typed configuration: the TOML file plus `KUBE_FAILOVER__…` environment overrides,
//! defaults, and validation that names the offending key before any cluster is touched.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// One or more failover groups (`[[groups]]` in TOML).
    pub groups: Vec<GroupConfig>,
}

/// Whether the daemon may write to the clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Decide and report, never write.
    Observe,
    /// Decide and act.
    Auto,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Observe => "observe",
            Mode::Auto => "auto",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[daemon]`: process-wide settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// How often every group is probed and decided.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// Hard bound on each probe; must be below `probe_interval`.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// Admin server (`/metrics`, `/healthz`, `/readyz`, `/status`).
    pub listen: SocketAddr,
    pub log_format: LogFormat,
    pub mode: Mode,
    /// Identity written into the failover record and Events; defaults to the host name.
    pub identity: Option<String>,
    /// Bound on finishing in-flight actions after the first SIGTERM/SIGINT.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            log_format: LogFormat::Text,
            mode: Mode::Auto,
            identity: None,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// `[[groups]]`: one primary/standby pair of workloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub name: String,
    pub primary: ClusterConfig,
    pub standby: ClusterConfig,
    /// The Deployments that make up the workload (the same selection in both clusters).
    pub workloads: Vec<WorkloadConfig>,
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Extra HTTP checks against the primary's workload.
    #[serde(default)]
    pub http_checks: Vec<HttpCheckConfig>,
    /// ConfigMap name of the failover record in the standby namespace;
    /// default `kube-failover-<group name>`.
    #[serde(default)]
    pub record_name: Option<String>,
}

impl GroupConfig {
    pub fn record_name(&self) -> String {
        self.record_name
            .clone()
            .unwrap_or_else(|| format!("kube-failover-{}", self.name))
    }
}

/// How to reach one cluster: a kubeconfig (path + optional context), or in-cluster
/// credentials when neither `kubeconfig` nor `context` is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: String,
}

/// One selected workload: a Deployment by name, or every Deployment matching a label
/// selector. Exactly one of `name` and `selector`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    pub name: Option<String>,
    /// A Kubernetes label selector, e.g. `env0=agent-trigger`.
    pub selector: Option<String>,
    /// Replicas each selected Deployment gets when the standby is promoted.
    #[serde(default = "default_replicas")]
    pub replicas: i32,
}

fn default_replicas() -> i32 {
    1
}

impl WorkloadConfig {
    /// The signal name of this workload: `workload:<name>` or `workload:<selector>`.
    pub fn signal_name(&self) -> String {
        match (&self.name, &self.selector) {
            (Some(n), _) => format!("workload:{n}"),
            (None, Some(s)) => format!("workload:{s}"),
            (None, None) => "workload:?".to_string(),
        }
    }
}

/// `[groups.policy]`: when the primary counts as down, and what may happen then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Consecutive failed probes before a signal goes down.
    pub failure_threshold: u32,
    /// Consecutive passed probes before a signal goes up again.
    pub success_threshold: u32,
    /// How many of the primary's signals must be down for the primary to be down.
    pub quorum: u32,
    /// Minimum time between two promotions of this group.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// After start, no promotion until this long has passed (and enough ticks were seen).
    #[serde(with = "humantime_serde")]
    pub startup_grace: Duration,
    /// How long the standby may take to become Ready before the promotion is `failed`.
    #[serde(with = "humantime_serde")]
    pub promotion_timeout: Duration,
    /// How long promotion stays frozen after the watcher distrusted its own view.
    #[serde(with = "humantime_serde")]
    pub freeze_for: Duration,
    /// Scale standby workloads back to 0 when replicas appear there while the primary
    /// is active (auto mode only; always reported).
    pub correct_standby: bool,
    /// Scale the old primary's workloads to 0 once its API answers after a promotion.
    pub fence: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            failure_threshold: 3,
            success_threshold: 1,
            quorum: 1,
            cooldown: Duration::from_secs(600),
            startup_grace: Duration::from_secs(30),
            promotion_timeout: Duration::from_secs(120),
            freeze_for: Duration::from_secs(60),
            correct_standby: true,
            fence: true,
        }
    }
}

/// `[[groups.http_checks]]`: an HTTP endpoint that must answer with `expected_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheckConfig {
    pub name: String,
    pub url: String,
    #[serde(default = "default_status")]
    pub expected_status: u16,
    /// Defaults to the daemon's probe timeout.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

fn default_status() -> u16 {
    200
}

impl HttpCheckConfig {
    pub fn signal_name(&self) -> String {
        format!("http:{}", self.name)
    }
}

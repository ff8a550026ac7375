//! The configuration's types: what `config.toml` holds, the defaults of each key, and
//! the error that names the key or file a problem is about. Loading (file and
//! `KUBE_FAILOVER__…` overrides) is in `load`, the checks in `validate`, the Kubernetes
//! name grammar in `names`, and the quoting of the user's text in messages in `quote`.

mod env0;
mod load;
mod mirror;
mod names;
mod notify;
mod quote;
mod state;
mod validate;

pub use env0::{
    DEFAULT_ENV0_API_URL, Env0Config, MAX_ENV0_LOOKUP_TIMEOUT, MAX_ENV0_TIMEOUT, RedeployMode,
    is_env0_id, read_env0_key,
};
pub use kube_failover_core::policy::{Mode, PolicyConfig};
use kube_failover_core::text::choose;
pub use load::{ENV_PREFIX, ENV_SEPARATOR, MAX_FILE_BYTES};
pub use mirror::{DEFAULT_MIRROR_SELECTOR, MirrorConfig};
pub use names::{check_label_selector, is_dns_label, is_dns_subdomain};
pub use notify::{
    MAX_NOTICE_QUEUE, MAX_NOTICE_TIMEOUT, NoticeEvent, NoticeFormat, NotifyConfig, SecretFileError,
    WebhookConfig, read_secret_file,
};
pub use quote::printable;
use serde::{Deserialize, Serialize};
pub use state::{
    BackendConfig, DEFAULT_STATE_CLAIM, DriftConfig, DriftGate, FreshnessConfig, Gate,
    MAX_FRESHNESS_AGE, StateConfig, VOLUME_CHECK, VolumeConfig,
};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use validate::{
    MAX_COOLDOWN, MAX_FREEZE_FOR, MAX_IDENTITY_CHARS, MAX_LEASE_DURATION, MAX_PROBE_INTERVAL,
    MAX_PROMOTION_TIMEOUT, MAX_SHUTDOWN_TIMEOUT, MAX_STARTUP_GRACE, MAX_TRACE_BYTES,
    MIN_TRACE_BYTES,
};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    /// `[daemon]`: process-wide settings.
    pub daemon: DaemonConfig,
    /// `[notify]`: webhooks told about promotions, failures and failbacks.
    #[serde(default)]
    pub notify: NotifyConfig,
    /// `[env0]`: which env0 deployments a promotion stranded, and redeploying them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env0: Option<Env0Config>,
    /// `[coordination]`: where several instances keep their Leases.
    #[serde(default)]
    pub coordination: CoordinationConfig,
    /// One or more failover groups (`[[groups]]` in TOML).
    pub groups: Vec<GroupConfig>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, fields flattened.
    Json,
}

impl LogFormat {
    /// Every format, in the order the documentation lists them.
    pub const ALL: [LogFormat; 2] = [LogFormat::Text, LogFormat::Json];

    /// The config value: `text` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        choose(&value, &LogFormat::ALL, |f| f.as_str())
    }
}

/// How the Deployments, Pods and ConfigMaps of the groups' namespaces are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum WatchScope {
    /// One watch per kind and namespace: a namespaced Role is enough.
    #[default]
    Namespaces,
    /// One watch per kind and cluster, across all namespaces, filtered to the groups'
    /// namespaces here: fewer connections and requests, but a ClusterRole.
    Cluster,
}

impl WatchScope {
    /// Every scope, in the order the documentation lists them.
    pub const ALL: [WatchScope; 2] = [WatchScope::Namespaces, WatchScope::Cluster];

    /// The config value: `namespaces` or `cluster`.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchScope::Namespaces => "namespaces",
            WatchScope::Cluster => "cluster",
        }
    }
}

impl TryFrom<String> for WatchScope {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        choose(&value, &WatchScope::ALL, |f| f.as_str())
    }
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
    /// How long each watch request lasts before the API server ends it and it is resumed
    /// (each draws between this and a fifth more). Unset: [`DEFAULT_WATCH_TIMEOUT`] on a
    /// connection that speaks HTTP/2 (PINGed, so a dead one is noticed whatever the
    /// watch's length), [`DEFAULT_WATCH_TIMEOUT_HTTP1`] over HTTP/1.1. Longer costs the
    /// clusters less; a revoked grant shows when a watch is resumed.
    #[serde(with = "humantime_serde")]
    pub watch_timeout: Option<Duration>,
    /// `namespaces` (default) or `cluster`: see [`WatchScope`].
    pub watch_scope: WatchScope,
    /// Offer HTTP/2 to the API servers (default): one connection carries many watches,
    /// and each connection is PINGed every `probe_interval` it is silent, so one that
    /// dies without a word is closed after `probe_timeout` more. `false`: HTTP/1.1
    /// only, one connection per watch (for a load balancer that breaks HTTP/2).
    pub http2: bool,
    /// Admin server (`/metrics`, `/healthz`, `/readyz`, `/status`).
    pub listen: SocketAddr,
    /// `text` or `json`; the level comes from `RUST_LOG` (default `info`).
    pub log_format: LogFormat,
    /// `observe` (never write) or `auto` (act).
    pub mode: Mode,
    /// Identity written into the failover record and Events; defaults to the host name.
    pub identity: Option<String>,
    /// Bound on finishing in-flight actions after the first SIGTERM/SIGINT.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// `[daemon.leader]`: the leader Lease of every group.
    pub leader: LeaderConfig,
    /// Where to write the trace: one JSON line per group tick with the observation the
    /// engine got, for `kube-failover simulate --trace`. `None`: no trace.
    pub trace_file: Option<PathBuf>,
    /// Size bound of the trace file; when a line would pass it, the file is rotated to
    /// `<trace_file>.1` (replacing the older one) and a new one started.
    pub trace_max_bytes: u64,
}

/// Default of `daemon.watch_timeout` for a watch whose connection speaks HTTP/2: 30
/// minutes (kube-apiserver's own default for a watch that names no timeout is
/// `--min-request-timeout`, 30 minutes, to twice that).
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Default of `daemon.watch_timeout` for a watch whose connection speaks HTTP/1.1 (no
/// PING vouches for it): 4 minutes.
pub const DEFAULT_WATCH_TIMEOUT_HTTP1: Duration = Duration::from_secs(240);

/// `[coordination]`: the namespace of every standby cluster where the instances keep
/// their Leases (one leader Lease per group, one observer Lease per instance).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinationConfig {
    /// The namespace; default the groups' standby namespace, which must then be the same
    /// for every group.
    pub namespace: Option<String>,
}

impl Config {
    /// The namespace of `group`'s standby cluster where its Leases live:
    /// `coordination.namespace`, else the group's standby namespace.
    pub fn coordination_namespace<'a>(&'a self, group: &'a GroupConfig) -> &'a str {
        self.coordination
            .namespace
            .as_deref()
            .unwrap_or(&group.standby.namespace)
    }
}

/// Default of `daemon.trace_max_bytes`: 10 MiB.
pub const DEFAULT_TRACE_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// `[daemon.leader]`: one leader per group on a Lease in the standby namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaderConfig {
    /// A leader Lease not renewed for this long may be taken over; default
    /// `max(3 × probe_interval, 3s)`.
    #[serde(with = "humantime_serde")]
    pub lease_duration: Option<Duration>,
    /// The leader stops writing this long after its last successful renewal; must be
    /// below `lease_duration`; default two thirds of it.
    #[serde(with = "humantime_serde")]
    pub renew_deadline: Option<Duration>,
}

impl DaemonConfig {
    /// The leader Lease duration, default applied.
    pub fn lease_duration(&self) -> Duration {
        self.leader.lease_duration.unwrap_or_else(|| {
            self.probe_interval
                .saturating_mul(3)
                .max(Duration::from_secs(3))
        })
    }

    /// The leader's renew deadline, default applied.
    pub fn renew_deadline(&self) -> Duration {
        self.leader
            .renew_deadline
            .unwrap_or_else(|| self.lease_duration().mul_f64(2.0 / 3.0))
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            watch_timeout: None,
            watch_scope: WatchScope::Namespaces,
            http2: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            log_format: LogFormat::Text,
            mode: Mode::Auto,
            identity: None,
            shutdown_timeout: Duration::from_secs(10),
            leader: LeaderConfig::default(),
            trace_file: None,
            trace_max_bytes: DEFAULT_TRACE_MAX_BYTES,
        }
    }
}

/// `[[groups]]`: one primary/standby pair of workloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// A DNS label: names the record ConfigMap and labels metrics.
    pub name: String,
    /// Where the workload normally runs.
    pub primary: ClusterConfig,
    /// Where it is scaled to 0 until a promotion; also holds the failover record.
    pub standby: ClusterConfig,
    /// The Deployments that make up the workload (the same selection in both clusters).
    pub workloads: Vec<WorkloadConfig>,
    /// When the primary counts as down and what may happen then.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Extra HTTP checks against the primary's workload.
    #[serde(default)]
    pub http_checks: Vec<HttpCheckConfig>,
    /// ConfigMap name of the failover record in the standby namespace;
    /// default `kube-failover-<group name>`.
    #[serde(default)]
    pub record_name: Option<String>,
    /// `[groups.state]`: checks that the Terraform state is there for the standby.
    #[serde(default)]
    pub state: StateConfig,
    /// `[groups.drift]`: the standby's Deployments against their primary twins.
    #[serde(default)]
    pub drift: DriftConfig,
    /// `[groups.guards]`: the guards expected beside the agents (`kube-failover guard`).
    #[serde(default)]
    pub guards: GuardsConfig,
}

/// `[groups.guards]`: how many `kube-failover guard` processes run beside each side's
/// agents (one per agent Pod). Their heartbeat Leases are read from the standby
/// namespace; with none expected (the default) nothing is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardsConfig {
    /// Guards beside the primary's agents: all must say `stopped` at a promotion's
    /// epoch to fence the old primary without its API.
    pub primary: u32,
    /// Guards beside the standby's agents (while the standby is active).
    pub standby: u32,
}

impl GuardsConfig {
    /// At most this many per side.
    pub const MAX: u32 = 100;

    /// Whether any guard is expected.
    pub fn any(&self) -> bool {
        self.primary > 0 || self.standby > 0
    }
}

impl GroupConfig {
    /// A group `name` from `primary_ns` to `standby_ns` of the in-cluster
    /// configuration, with no workloads and every other key at its default: the start
    /// of unit tests' groups.
    #[cfg(test)]
    pub(crate) fn for_test(name: &str, primary_ns: &str, standby_ns: &str) -> GroupConfig {
        let side = |ns: &str| ClusterConfig {
            kubeconfig: None,
            context: None,
            namespace: ns.into(),
        };
        GroupConfig {
            name: name.into(),
            primary: side(primary_ns),
            standby: side(standby_ns),
            workloads: vec![],
            policy: Default::default(),
            http_checks: vec![],
            record_name: None,
            state: Default::default(),
            drift: Default::default(),
            guards: Default::default(),
        }
    }

    /// The failover record's ConfigMap name, default applied.
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
    /// Kubeconfig file. With only `context` set, `$KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig; default its current-context.
    pub context: Option<String>,
    /// Namespace of the workload's Deployments (and, in the standby, of the record).
    pub namespace: String,
}

/// One selected workload: a Deployment by name, or every Deployment matching a label
/// selector. Exactly one of `name` and `selector`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadConfig {
    /// One Deployment by name.
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

/// `[[groups.http_checks]]`: an HTTP endpoint that must answer with `expected_status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheckConfig {
    /// Unique within the group; the signal is `http:<name>`.
    pub name: String,
    /// Absolute http(s) URL.
    pub url: String,
    /// The status that counts as a pass (default 200).
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
    /// The signal name of this check: `http:<name>`.
    pub fn signal_name(&self) -> String {
        format!("http:{}", self.name)
    }
}

/// Why the configuration could not be used. Every variant names the key path (for
/// example `groups[env0].policy.failure_threshold`) or the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read, is not text, or is not TOML.
    #[error("{}: {message}", shown_path(.file))]
    File {
        /// The configuration file, as given.
        file: PathBuf,
        /// What is wrong with it; quotes from the file are escaped and cut.
        message: String,
    },
    /// A `KUBE_FAILOVER__…` variable does not name a place in the configuration.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable, upper-cased as it is usually written.
        var: String,
        /// What is wrong with it.
        message: String,
    },
    /// A value could not be read into its typed field: unknown key, wrong type, malformed
    /// duration, missing required key.
    #[error("{}: {key}{}: {message}", shown_path(.file), env_note(.env_var))]
    Value {
        /// The configuration file.
        file: PathBuf,
        /// The key path, with group names in brackets when known.
        key: String,
        /// The override that supplied the value, when it came from the environment.
        env_var: Option<String>,
        /// What is wrong with the value.
        message: String,
        #[source]
        /// What the config crate reported.
        source: Box<config::ConfigError>,
    },
    /// The configuration is well-formed but not acceptable; every problem is listed.
    #[error("{}invalid configuration ({} problem{}):{}", file_prefix(.file), .problems.len(),
        if .problems.len() == 1 { "" } else { "s" }, list_problems(.problems))]
    Invalid {
        /// The configuration file, when known.
        file: Option<PathBuf>,
        /// Every problem found, in key order of the file.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Attaches the file to an [`ConfigError::Invalid`] that lacks one.
    pub fn with_file(self, path: &Path) -> Self {
        match self {
            ConfigError::Invalid {
                file: None,
                problems,
            } => ConfigError::Invalid {
                file: Some(path.to_path_buf()),
                problems,
            },
            other => other,
        }
    }

    /// The problems of an [`ConfigError::Invalid`]; empty for the other variants.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

fn env_note(var: &Option<String>) -> String {
    var.as_ref()
        .map(|v| format!(" (set by environment variable {v})"))
        .unwrap_or_default()
}

fn file_prefix(file: &Option<PathBuf>) -> String {
    file.as_ref()
        .map(|f| format!("{}: ", shown_path(f)))
        .unwrap_or_default()
}

/// The path as the user gave it, control characters escaped.
fn shown_path(path: &Path) -> String {
    printable(&path.to_string_lossy(), usize::MAX)
}

fn list_problems(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n  {p}")).collect()
}

/// One validation problem: the key path it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `groups[env0].policy.quorum`.
    pub key: String,
    /// What is wrong, naming the file and context for kubeconfig problems.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl Config {
    /// The configuration with every implicit default written out: each group's
    /// `record_name` and each HTTP check's `timeout`. What `check-config` prints.
    pub fn resolved(&self) -> Config {
        let mut resolved = self.clone();
        for group in &mut resolved.groups {
            group.record_name = Some(group.record_name());
            for check in &mut group.http_checks {
                check.timeout.get_or_insert(self.daemon.probe_timeout);
            }
            for backend in &mut group.state.backends {
                backend.timeout.get_or_insert(self.daemon.probe_timeout);
            }
        }
        resolved
    }

    /// The configuration as TOML, durations in humantime form (`5s`, `10m`).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}

/// The configuration texts `tests/cli.rs` and the end-to-end tests use too.
#[cfg(test)]
#[path = "../../tests/fixtures/mod.rs"]
mod fixtures;

#[cfg(test)]
mod tests {
    //! What the tests of every file of this module share: a valid configuration and
    //! a kubeconfig to point it at.

    use super::*;
    use std::io::Write;
    use std::sync::LazyLock;

    pub(super) use super::fixtures::KUBECONFIG;

    /// A valid env0 group in TOML; `{kc}` is [`KUBECONFIG`], with contexts `primary` and
    /// `standby`.
    pub(super) static GOOD: LazyLock<String> = LazyLock::new(|| {
        format!(
            r#"[daemon]
probe_interval = "2s"
probe_timeout = "1s"

{}quorum = 2

[[groups.http_checks]]
name = "proxy"
url = "http://agent-proxy.example:8080/healthz"
"#,
            super::fixtures::group_in_kubeconfig(2)
        )
    });

    pub(super) struct Fixture {
        pub(super) dir: tempfile::TempDir,
        pub(super) kubeconfig: PathBuf,
    }

    impl Fixture {
        pub(super) fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let kubeconfig = dir.path().join("clusters.kubeconfig");
            std::fs::write(&kubeconfig, KUBECONFIG).expect("write kubeconfig");
            Fixture { dir, kubeconfig }
        }

        /// Writes `text` (with `{kc}` replaced) as the config file.
        pub(super) fn file(&self, text: &str) -> PathBuf {
            let path = self.dir.path().join("config.toml");
            let text = text.replace("{kc}", &self.kubeconfig.display().to_string());
            std::fs::File::create(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .expect("write config");
            path
        }

        pub(super) fn load(&self, text: &str) -> Result<Config, ConfigError> {
            self.load_env(text, &[])
        }

        pub(super) fn load_env(
            &self,
            text: &str,
            env: &[(&str, &str)],
        ) -> Result<Config, ConfigError> {
            Config::load_with_env(&self.file(text), env.iter().copied())
        }

        pub(super) fn good(&self) -> Config {
            self.load(&GOOD).expect("GOOD loads")
        }
    }

    pub(super) fn load_error(f: &Fixture, text: &str) -> String {
        f.load(text).expect_err("must not load").to_string()
    }

    /// The problems of `cfg`, each as `key: message`.
    pub(super) fn problems(cfg: &Config) -> Vec<String> {
        match cfg.validate() {
            Ok(()) => Vec::new(),
            Err(e) => e.problems().iter().map(|p| p.to_string()).collect(),
        }
    }

    /// Asserts that exactly one problem is reported, on `key`, and returns its message.
    #[track_caller]
    pub(super) fn only_problem(cfg: &Config, key: &str) -> String {
        let all = cfg.validate().expect_err("must be invalid");
        let problems = all.problems();
        assert_eq!(problems.len(), 1, "{all}");
        assert_eq!(problems[0].key, key, "{all}");
        problems[0].message.clone()
    }

    #[test]
    fn example_config_parses_and_validates_with_its_kubeconfigs_in_place() {
        let f = Fixture::new();
        let example = include_str!("../../config.example.toml");
        // Point the example's kubeconfig paths at a real file with its contexts.
        let kc = f.dir.path().join("example.kubeconfig");
        let cfg = Config::load_with_env(&f.file(example), [("X", "y")]).expect("example loads");
        let mut contexts = Vec::new();
        for g in &cfg.groups {
            contexts.push(g.primary.context.clone().expect("primary context"));
            contexts.push(g.standby.context.clone().expect("standby context"));
        }
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n{}contexts:\n{}users:\n- name: u\n  user: {{token: t}}\n",
            contexts
                .iter()
                .enumerate()
                .map(|(i, _)| format!(
                    "- name: c{i}\n  cluster: {{server: 'https://127.0.0.{}:6443'}}\n",
                    i + 1
                ))
                .collect::<String>(),
            contexts
                .iter()
                .enumerate()
                .map(|(i, c)| format!("- name: {c}\n  context: {{cluster: c{i}, user: u}}\n"))
                .collect::<String>(),
        );
        std::fs::write(&kc, yaml).unwrap();
        let mut text = example.to_string();
        for g in &cfg.groups {
            for k in [&g.primary.kubeconfig, &g.standby.kubeconfig]
                .into_iter()
                .flatten()
            {
                text = text.replace(
                    &format!("\"{}\"", k.display()),
                    &format!("\"{}\"", kc.display()),
                );
            }
        }
        let cfg =
            Config::load_with_env(&f.file(&text), [("X", "y")]).expect("rewritten example loads");
        assert_eq!(problems(&cfg), Vec::<String>::new());
        assert_eq!(cfg.groups.len(), 1);
        assert_eq!(cfg.groups[0].name, "env0");
        let selectors: Vec<_> = cfg.groups[0]
            .workloads
            .iter()
            .filter_map(|w| w.selector.as_deref())
            .collect();
        assert_eq!(selectors, ["env0=agent-trigger", "env0=agent-proxy"]);
        // Every key shown in the example has its default value: the example loaded
        // equals the defaults for everything it does not have to set.
        assert_eq!(cfg.daemon, DaemonConfig::default());
        assert_eq!(cfg.groups[0].policy, PolicyConfig::default());
        assert_eq!(cfg.notify, NotifyConfig::default());
        assert_eq!(cfg.groups[0].state, StateConfig::default());
    }
}

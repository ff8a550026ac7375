//! End-to-end support: runs the real `kube-failover` binary against a test-bed cluster
//! pair, with the restricted identity from deploy/kubernetes/target-rbac, and reads what
//! it reports through its admin port.

#![allow(dead_code)]

#[path = "../fixtures/mod.rs"]
pub mod fixtures;
pub mod guard;
pub mod receiver;

use fixtures::Side;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, ListParams};
use kube_failover::status::{GroupStatus, StatusReport};
use kube_failover_testbed::{Cluster, ClusterPair, FaultProxy, HttpFaultProxy};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

static DAEMON_BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes [`daemon_bin`] answer `bin` from now on (a benchmark measuring the release
/// build). The first call wins.
pub fn use_daemon_bin(bin: PathBuf) {
    let _ = DAEMON_BIN.set(bin);
}

/// The daemon binary that tests and benchmarks run: the one given to [`use_daemon_bin`],
/// else `KUBE_FAILOVER_BENCH_BIN` (another build, an older release), else the one this
/// tree builds for its tests.
pub fn daemon_bin() -> PathBuf {
    if let Some(bin) = DAEMON_BIN.get() {
        return bin.clone();
    }
    std::env::var_os("KUBE_FAILOVER_BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_kube-failover").into())
}

/// The group name every scenario uses.
pub use fixtures::GROUP;

/// The counter of promotions the daemon started for [`GROUP`].
pub const STARTED: &str = r#"kube_failover_promotions_total{group="env0",result="started"}"#;

/// Starts the test-bed pair: the agent at 1 replica in the primary, 0 in the standby.
pub async fn pair() -> ClusterPair {
    ClusterPair::start()
        .await
        .expect("start the test-bed cluster pair")
}

/// How a scenario wants the daemon configured.
#[derive(Debug, Clone)]
pub struct DaemonOpts {
    pub mode: &'static str,
    pub interval: Duration,
    pub timeout: Duration,
    /// `daemon.watch_timeout`, when not the default (30 minutes over HTTP/2, 4 over
    /// HTTP/1.1): a test that revokes a grant sees it when a watch is resumed.
    pub watch_timeout: Option<Duration>,
    /// `daemon.watch_scope`, when not the default (`namespaces`).
    pub watch_scope: Option<&'static str>,
    /// `daemon.http2`, when not the default (`true`).
    pub http2: Option<bool>,
    pub failure_threshold: u32,
    pub startup_grace: Duration,
    pub promotion_timeout: Duration,
    pub freeze_for: Duration,
    pub cooldown: Duration,
    pub correct_standby: bool,
    /// Kubeconfig for the primary; default: the cluster's restricted one.
    pub primary_kubeconfig: Option<PathBuf>,
    /// Kubeconfig for the standby; default: the cluster's restricted one.
    pub standby_kubeconfig: Option<PathBuf>,
    /// `daemon.identity`; default `e2e`.
    pub identity: Option<String>,
    /// `policy.observers.quorum` (1: a single daemon decides).
    pub observer_quorum: u32,
    /// `policy.observers.expected`.
    pub observers_expected: Option<u32>,
    /// Further groups besides [`GROUP`], configured like it on the same clusters and
    /// Deployments, each with its own name (so its own record and Leases).
    pub extra_groups: Vec<String>,
    /// Each extra group in its own namespace on both sides, named like the group (the
    /// test creates them: `Cluster::add_agent_namespace`).
    pub own_namespaces: bool,
    /// TOML appended to every group (after its `[groups.policy.observers]`), e.g.
    /// `[groups.state]`.
    pub group_toml: String,
    /// TOML appended at the end (top-level tables, e.g. `[notify]`).
    pub extra_toml: String,
}

impl Default for DaemonOpts {
    fn default() -> Self {
        DaemonOpts {
            mode: "auto",
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(800),
            watch_timeout: None,
            watch_scope: None,
            http2: None,
            failure_threshold: 3,
            startup_grace: Duration::from_secs(2),
            promotion_timeout: Duration::from_secs(60),
            freeze_for: Duration::from_secs(10),
            cooldown: Duration::from_secs(600),
            correct_standby: true,
            primary_kubeconfig: None,
            standby_kubeconfig: None,
            identity: None,
            observer_quorum: 1,
            observers_expected: None,
            extra_groups: Vec::new(),
            own_namespaces: false,
            group_toml: String::new(),
            extra_toml: String::new(),
        }
    }
}

/// A running daemon process; killed on drop, its log printed if the test panicked.
pub struct Daemon {
    child: tokio::process::Child,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub log: PathBuf,
    http: reqwest::Client,
}

pub fn free_port() -> SocketAddr {
    // Outside the ephemeral range: a port from it can be taken by any outgoing
    // connection of the many tests of this process before the listener binds it.
    let port = kube_failover_testbed::free_loopback_port("a test's listener")
        .expect("a free port on 127.0.0.1");
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// The daemon's config for a cluster pair.
pub fn config_toml(pair: &ClusterPair, opts: &DaemonOpts, admin: SocketAddr) -> String {
    let primary = opts
        .primary_kubeconfig
        .clone()
        .unwrap_or_else(|| pair.primary.daemon_kubeconfig().to_path_buf());
    let standby = opts
        .standby_kubeconfig
        .clone()
        .unwrap_or_else(|| pair.standby.daemon_kubeconfig().to_path_buf());
    let (primary, standby) = (primary.display().to_string(), standby.display().to_string());
    let group = fixtures::group(
        &Side {
            kubeconfig: &primary,
            context: pair.primary.context(),
            namespace: pair.primary.namespace(),
        },
        &Side {
            kubeconfig: &standby,
            context: pair.standby.context(),
            namespace: pair.standby.namespace(),
        },
        1,
        opts.failure_threshold,
    );
    let daemon = format!(
        r#"[daemon]
probe_interval = "{interval}"
probe_timeout = "{timeout}"
listen = "{admin}"
mode = "{mode}"
identity = "{identity}"
shutdown_timeout = "5s"
{watch_timeout}{watch_scope}{http2}
"#,
        watch_timeout = opts
            .watch_timeout
            .map(|t| format!("watch_timeout = \"{}\"\n", dur(t)))
            .unwrap_or_default(),
        watch_scope = opts
            .watch_scope
            .map(|s| format!("watch_scope = \"{s}\"\n"))
            .unwrap_or_default(),
        http2 = opts
            .http2
            .map(|h| format!("http2 = {h}\n"))
            .unwrap_or_default(),
        interval = dur(opts.interval),
        timeout = dur(opts.timeout),
        mode = opts.mode,
        identity = opts.identity.as_deref().unwrap_or("e2e"),
    );
    let block = format!(
        r#"{group}success_threshold = 1
quorum = 1
cooldown = "{cooldown}"
startup_grace = "{grace}"
promotion_timeout = "{pt}"
freeze_for = "{freeze}"
correct_standby = {correct}
fence = true

[groups.policy.observers]
quorum = {oquorum}
{oexpected}
"#,
        cooldown = dur(opts.cooldown),
        grace = dur(opts.startup_grace),
        pt = dur(opts.promotion_timeout),
        freeze = dur(opts.freeze_for),
        correct = opts.correct_standby,
        oquorum = opts.observer_quorum,
        oexpected = opts
            .observers_expected
            .map(|e| format!("expected = {e}"))
            .unwrap_or_default(),
    ) + &opts.group_toml;
    let mut toml = daemon + &block;
    for name in &opts.extra_groups {
        toml += "\n";
        let mut extra = block.replacen(
            &format!("name = \"{GROUP}\""),
            &format!("name = \"{name}\""),
            1,
        );
        if opts.own_namespaces {
            for ns in [pair.primary.namespace(), pair.standby.namespace()] {
                extra = extra.replace(
                    &format!("namespace = \"{ns}\""),
                    &format!("namespace = \"{name}\""),
                );
            }
        }
        toml += &extra;
    }
    toml + "\n" + &opts.extra_toml
}

impl Daemon {
    /// Writes the config into the primary's folder and starts the daemon.
    pub async fn start(pair: &ClusterPair, opts: &DaemonOpts) -> Daemon {
        let admin = free_port();
        let dir = pair.primary.dir().to_path_buf();
        let config = dir.join(format!("kube-failover-{}.toml", admin.port()));
        std::fs::write(&config, config_toml(pair, opts, admin)).expect("write daemon config");
        Daemon::start_with_config(&config, admin, &dir).await
    }

    /// Starts a `P` fault proxy in front of one cluster's API server (`via`), then the
    /// daemon as `opts` says, except that it reaches that cluster only through the proxy.
    pub async fn start_via_proxy<P: ApiProxy>(
        pair: &ClusterPair,
        via: Via,
        opts: &DaemonOpts,
    ) -> (Daemon, P) {
        let mut opts = opts.clone();
        let proxy = match via {
            Via::Primary => in_front_of(&pair.primary, &mut opts.primary_kubeconfig).await,
            Via::Standby => in_front_of(&pair.standby, &mut opts.standby_kubeconfig).await,
        };
        (Daemon::start(pair, &opts).await, proxy)
    }

    /// As [`Daemon::start_via_proxy`] with a proxy in front of each cluster, so that the
    /// daemon's whole path can be cut: (daemon, primary's proxy, standby's proxy).
    pub async fn start_via_proxies<P: ApiProxy>(
        pair: &ClusterPair,
        opts: &DaemonOpts,
    ) -> (Daemon, P, P) {
        let mut opts = opts.clone();
        let primary = in_front_of(&pair.primary, &mut opts.primary_kubeconfig).await;
        let standby = in_front_of(&pair.standby, &mut opts.standby_kubeconfig).await;
        (Daemon::start(pair, &opts).await, primary, standby)
    }

    /// Starts the daemon with an existing config file (a restart, for example).
    pub async fn start_with_config(config: &Path, admin: SocketAddr, dir: &Path) -> Daemon {
        let d = Daemon::spawn_with_config(config, admin, dir);
        d.wait_ready(Duration::from_secs(30)).await;
        d
    }

    /// Writes the config and starts the daemon without waiting for it to be ready.
    pub fn spawn(pair: &ClusterPair, opts: &DaemonOpts) -> Daemon {
        let admin = free_port();
        let dir = pair.primary.dir().to_path_buf();
        let config = dir.join(format!("kube-failover-{}.toml", admin.port()));
        std::fs::write(&config, config_toml(pair, opts, admin)).expect("write daemon config");
        Daemon::spawn_with_config(&config, admin, &dir)
    }

    /// Starts the daemon process, not waiting for it.
    pub fn spawn_with_config(config: &Path, admin: SocketAddr, dir: &Path) -> Daemon {
        Daemon::spawn_with_config_env(config, admin, dir, &[])
    }

    /// As [`Daemon::spawn_with_config`], with these environment variables added.
    pub fn spawn_with_config_env(
        config: &Path,
        admin: SocketAddr,
        dir: &Path,
        env: &[(&str, String)],
    ) -> Daemon {
        let log = dir.join(format!(
            "kube-failover-{}-{}.log",
            admin.port(),
            now_millis()
        ));
        let out = std::fs::File::create(&log).expect("create daemon log");
        let err = out.try_clone().expect("clone log handle");
        let child = tokio::process::Command::new(daemon_bin())
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info,kube_failover=debug")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn kube-failover");
        Daemon {
            child,
            admin,
            config: config.to_path_buf(),
            log,
            http: admin_client(),
        }
    }

    /// Waits for the process to exit on its own; `None` if it still runs after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .map(|r| r.expect("wait for daemon"))
    }

    async fn wait_ready(&self, timeout: Duration) {
        let url = format!("http://{}/readyz", self.admin);
        let ok = wait_for(timeout, Duration::from_millis(100), || async {
            matches!(self.http.get(&url).send().await, Ok(r) if r.status() == 200)
        })
        .await;
        assert!(
            ok.is_some(),
            "daemon not ready in {timeout:?}\n{}",
            self.log_text()
        );
    }

    /// The daemon's process id (`None` once it exited and was reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// How many TCP connections to `port` on 127.0.0.1 the daemon holds open: sockets it
    /// has a file descriptor of (a socket it closed is not counted, whatever the kernel
    /// still does with it).
    pub fn connections_to(&self, port: u16) -> usize {
        let Some(pid) = self.pid() else { return 0 };
        let inodes: std::collections::HashSet<String> =
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|dir| {
                    dir.flatten()
                        .filter_map(|e| std::fs::read_link(e.path()).ok())
                        .filter_map(|l| {
                            let l = l.to_string_lossy().into_owned();
                            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                        })
                        .collect()
                })
                .unwrap_or_default();
        let remote = format!(":{port:04X}");
        ["tcp", "tcp6"]
            .iter()
            .filter_map(|t| std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).ok())
            .map(|table| {
                table
                    .lines()
                    .skip(1)
                    .filter(|line| {
                        let cols: Vec<&str> = line.split_whitespace().collect();
                        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
                        cols.len() > 9 && cols[2].ends_with(&remote) && inodes.contains(cols[9])
                    })
                    .count()
            })
            .sum()
    }

    pub async fn status(&self) -> Option<StatusReport> {
        let r = self
            .http
            .get(format!("http://{}/status", self.admin))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    pub async fn group(&self) -> Option<GroupStatus> {
        self.group_named(GROUP).await
    }

    /// The status of the group `name`.
    pub async fn group_named(&self, name: &str) -> Option<GroupStatus> {
        self.status()
            .await?
            .groups
            .into_iter()
            .find(|g| g.name == name)
    }

    pub async fn metrics(&self) -> String {
        match self
            .http
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// The value of one sample, e.g. `kube_failover_promotions_total{group="env0",result="started"}`.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics().await, series)
    }

    /// Waits until the sample's value satisfies `pred` and returns it. A counter of an
    /// action is raised when the action's last write has returned, after the cluster
    /// already shows the change: a test that saw the change must wait for the count.
    /// Panics with the last value and the daemon's log after `timeout`.
    pub async fn wait_metric(
        &self,
        series: &str,
        timeout: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> f64 {
        let seen = wait_for(timeout, Duration::from_millis(50), || async {
            self.metric(series).await.is_some_and(&pred)
        })
        .await;
        let last = self.metric(series).await;
        match (seen, last) {
            (Some(_), Some(v)) if pred(v) => v,
            _ => panic!(
                "{series}: not as expected in {timeout:?}; last value {last:?}\n{}",
                self.log_text()
            ),
        }
    }

    /// Waits until the group's status satisfies `pred`; returns how long that took.
    /// Panics with the last status and the daemon's log after `timeout`.
    pub async fn wait_group(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&GroupStatus) -> bool,
    ) -> Duration {
        let took = wait_for(timeout, Duration::from_millis(100), || async {
            self.group().await.is_some_and(|g| pred(&g))
        })
        .await;
        match took {
            Some(t) => t,
            None => panic!(
                "{what}: not seen in {timeout:?}; last status: {:#?}\n{}",
                self.group().await,
                self.log_text()
            ),
        }
    }

    /// The group's workload signals all passed at its last tick.
    pub async fn workloads_pass(&self) -> bool {
        self.group().await.is_some_and(|g| {
            let workloads: Vec<_> = g
                .signals
                .iter()
                .filter(|s| s.name.to_string().starts_with("workload"))
                .collect();
            !workloads.is_empty()
                && workloads
                    .iter()
                    .all(|s| s.last_reason.as_ref().is_some_and(|r| *r == "ok"))
        })
    }

    /// Waits until the group is in `state`; returns how long that took.
    pub async fn wait_state(&self, state: &str, timeout: Duration) -> Duration {
        self.wait_group(&format!("state {state}"), timeout, |g| g.state == state)
            .await
    }

    /// Waits until this instance leads the group (only the leader acts, and counts a
    /// would-be promotion in observe mode); returns how long it took.
    pub async fn wait_leading(&self, timeout: Duration) -> Duration {
        self.wait_group("leading the group", timeout, |g| {
            g.coordination.as_ref().is_some_and(|c| c.role == "leader")
        })
        .await
    }

    /// SIGKILL, as a crash would.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill daemon");
    }

    /// SIGTERM and wait for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("daemon still running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("daemon exits within 20s of SIGTERM")
            .expect("wait for daemon")
    }

    /// The daemon's whole log so far.
    pub fn full_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(60);
        format!(
            "--- daemon log ({}) ---\n{}",
            self.log.display(),
            lines[start..].join("\n")
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_text());
        }
    }
}

fn now_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// An HTTP client for the daemon's admin port. It keeps an idle connection for 2 s
/// only: the admin server closes a connection that sends no request within its read
/// timeout (5 s), and a request sent on such a connection just as it closes fails.
pub fn admin_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("http client")
}

/// Polls `cond` every `every` until it holds (returns the time it took) or `timeout`.
pub async fn wait_for<F, Fut>(timeout: Duration, every: Duration, mut cond: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if cond().await {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// Parses one sample out of the text exposition format. The series must be written with
/// its labels in the order the exporter prints them (alphabetical).
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Sum of desired replicas of the env0 Deployments in a cluster.
pub async fn replicas(cluster: &kube_failover_testbed::Cluster) -> i32 {
    let mut sum = 0;
    for name in cluster.deployment_names() {
        sum += cluster.replicas(&name).await.expect("read replicas");
    }
    sum
}

/// How long a promotion took, each from the moment SIGTERM was sent to the primary's API
/// server.
#[derive(Debug, Clone, Copy)]
pub struct PromotionTimes {
    /// The API server exited.
    pub exited: Duration,
    /// Both of the standby's Deployments were scaled up.
    pub scaled: Duration,
    /// Both of them were Ready.
    pub ready: Duration,
}

/// Stops the primary's API server and, while it is still shutting down (it refuses the
/// daemon at once, but its exit can take seconds), polls the standby every `every` until
/// it is scaled up (30 s at most), then waits until it is Ready.
pub async fn stop_primary_api_and_time_promotion(
    pair: &ClusterPair,
    every: Duration,
) -> PromotionTimes {
    let stopped = Instant::now();
    let stopping = async {
        pair.primary
            .stop_apiserver()
            .await
            .expect("stop primary apiserver");
        stopped.elapsed()
    };
    let promoting = async {
        wait_for(Duration::from_secs(30), every, || async {
            replicas(&pair.standby).await == 2
        })
        .await
        .expect("standby scaled up");
        let scaled = stopped.elapsed();
        for name in pair.standby.deployment_names() {
            pair.standby
                .wait_deployment_ready(&name, Duration::from_secs(30))
                .await
                .expect("standby deployment Ready");
        }
        (scaled, stopped.elapsed())
    };
    let (exited, (scaled, ready)) = tokio::join!(stopping, promoting);
    PromotionTimes {
        exited,
        scaled,
        ready,
    }
}

/// Prints a measurement in a form that is easy to grep out of the test output.
pub fn measured(what: &str, d: Duration) {
    eprintln!("measured: {what}: {:.2}s", d.as_secs_f64());
}

/// The cluster a daemon reaches through a fault proxy ([`Daemon::start_via_proxy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Primary,
    Standby,
}

/// Starts a `P` proxy in front of `cluster` and sets `kubeconfig` (the daemon's for that
/// side) to one that reaches the cluster through it.
async fn in_front_of<P: ApiProxy>(cluster: &Cluster, kubeconfig: &mut Option<PathBuf>) -> P {
    let proxy = P::start_for(cluster).await;
    *kubeconfig = Some(proxy.daemon_kubeconfig_for(cluster));
    proxy
}

/// A fault proxy in front of one cluster's API server, through which the daemon can be
/// pointed ([`Daemon::start_via_proxy`]).
pub trait ApiProxy: Sized {
    /// Starts the proxy in front of `cluster`'s API server.
    fn start_for(cluster: &Cluster) -> impl Future<Output = Self> + Send;
    /// The daemon's restricted kubeconfig for `cluster`, with the server at this proxy.
    fn daemon_kubeconfig_for(&self, cluster: &Cluster) -> PathBuf;
}

impl ApiProxy for FaultProxy {
    async fn start_for(cluster: &Cluster) -> Self {
        FaultProxy::start(cluster.api_addr())
            .await
            .expect("start proxy")
    }

    fn daemon_kubeconfig_for(&self, cluster: &Cluster) -> PathBuf {
        cluster
            .daemon_kubeconfig_via(self.addr())
            .expect("kubeconfig via proxy")
    }
}

impl ApiProxy for HttpFaultProxy {
    async fn start_for(cluster: &Cluster) -> Self {
        HttpFaultProxy::start(cluster)
            .await
            .expect("HTTP fault proxy")
    }

    fn daemon_kubeconfig_for(&self, _cluster: &Cluster) -> PathBuf {
        self.daemon_kubeconfig().to_path_buf()
    }
}

/// The ConfigMaps of the standby's agent namespace, where the daemon keeps the group's
/// failover record.
pub fn records(pair: &ClusterPair) -> Api<ConfigMap> {
    Api::namespaced(pair.standby.client(), pair.standby.namespace())
}

/// The group's failover record, if there is one.
pub async fn record(pair: &ClusterPair) -> Option<ConfigMap> {
    records(pair)
        .get_opt(&format!("kube-failover-{GROUP}"))
        .await
        .expect("read the record")
}

/// One key of a failover record already read.
pub fn field_of(cm: &ConfigMap, key: &str) -> Option<String> {
    cm.data.as_ref()?.get(key).cloned()
}

/// One key of the group's failover record, read now.
pub async fn record_field(pair: &ClusterPair, key: &str) -> Option<String> {
    field_of(&record(pair).await?, key)
}

/// How many Events in the cluster's agent namespace have `reason`.
pub async fn events_with_reason(cluster: &Cluster, reason: &str) -> usize {
    let api: Api<Event> = Api::namespaced(cluster.client(), cluster.namespace());
    api.list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .count()
}

/// Binds the state mirror's Roles (deploy/kubernetes/target-rbac/mirror-role.yaml) to the
/// daemon's identity: read in the primary, write in the standby, and with `prune` the
/// standby's delete Role too.
pub async fn grant_mirror_roles(pair: &ClusterPair, prune: bool) {
    let file = kube_failover_testbed::target_rbac_file("mirror-role.yaml");
    pair.primary
        .grant_daemon_role(&file, "kube-failover-mirror-read")
        .await
        .expect("grant the read Role in the primary");
    pair.standby
        .grant_daemon_role(&file, "kube-failover-mirror-write")
        .await
        .expect("grant the write Role in the standby");
    if prune {
        pair.standby
            .grant_daemon_role(&file, "kube-failover-mirror-prune")
            .await
            .expect("grant the prune Role in the standby");
    }
}

/// Creates `count` more agent namespaces on both clusters (`agent-000`, `agent-001`, …),
/// the shape users run: one Helm release of the agent per namespace, its Deployments
/// with each cluster's replicas. Returns their names. Does not wait for the Pods.
pub async fn add_agent_namespaces(pair: &ClusterPair, count: usize) -> Vec<String> {
    let names: Vec<String> = (0..count).map(|i| format!("agent-{i:03}")).collect();
    for ns in &names {
        pair.primary
            .add_agent_namespace(ns)
            .await
            .expect("primary agent namespace");
        pair.standby
            .add_agent_namespace(ns)
            .await
            .expect("standby agent namespace");
    }
    names
}

/// The daemon's config as [`config_toml`] writes it, with one group per namespace of
/// `namespaces` (the group named after it, its record in it) instead of the pair's one
/// group; the instances coordinate in the standby's agent namespace
/// (`[coordination] namespace`).
pub fn config_in_namespaces(
    pair: &ClusterPair,
    opts: &DaemonOpts,
    admin: SocketAddr,
    namespaces: &[String],
) -> String {
    let one = config_toml(
        pair,
        &DaemonOpts {
            extra_toml: String::new(),
            ..opts.clone()
        },
        admin,
    );
    let at = one.find("[[groups]]").expect("a group in the config");
    let (head, block) = one.split_at(at);
    let mut text = head.to_string();
    for ns in namespaces {
        text.push_str(
            &block
                .replacen(
                    &format!("name = \"{GROUP}\""),
                    &format!("name = \"{ns}\""),
                    1,
                )
                .replace(
                    &format!("namespace = \"{}\"", pair.primary.namespace()),
                    &format!("namespace = \"{ns}\""),
                )
                .replace(
                    &format!("namespace = \"{}\"", pair.standby.namespace()),
                    &format!("namespace = \"{ns}\""),
                ),
        );
        text.push('\n');
    }
    text.push_str(&opts.extra_toml);
    if !opts.extra_toml.contains("[coordination]") {
        text.push_str(&format!(
            "\n[coordination]\nnamespace = \"{}\"\n",
            pair.standby.namespace()
        ));
    }
    text
}

/// Starts the daemon with [`config_in_namespaces`].
pub async fn start_in_namespaces(
    pair: &ClusterPair,
    opts: &DaemonOpts,
    namespaces: &[String],
) -> Daemon {
    let admin = free_port();
    let dir = pair.primary.dir().to_path_buf();
    let config = dir.join(format!("kube-failover-{}.toml", admin.port()));
    std::fs::write(&config, config_in_namespaces(pair, opts, admin, namespaces))
        .expect("write daemon config");
    Daemon::start_with_config(&config, admin, &dir).await
}

/// Runs `kube-failover <args> --config <config> --group env0` as an operator would,
/// echoes its stderr into the test's output, and returns its exit code.
pub async fn operator(config: &Path, args: &[&str]) -> Option<i32> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-failover"))
        .args(args)
        .arg("--config")
        .arg(config)
        .args(["--group", GROUP])
        .output()
        .await
        .expect("run kube-failover");
    eprintln!(
        "$ kube-failover {}: {:?}\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.code()
}

/// The API server's `apiserver_request_total`, summed by `(verb, resource)` (the
/// resource is empty for requests outside one, such as `/readyz`); `None` when its
/// metrics cannot be read.
pub async fn apiserver_requests(c: &Cluster) -> Option<BTreeMap<(String, String), f64>> {
    let req = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let text = c.client().request_text(req).await.ok()?;
    let mut by = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        *by.entry((label("verb"), label("resource"))).or_insert(0.0) +=
            value.parse::<f64>().unwrap_or(0.0);
    }
    Some(by)
}

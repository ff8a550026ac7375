//! The campaign's world: the cluster pair, three daemon instances each behind a fault
//! proxy per side with a token identity of its own per side, the operator's config, and
//! the history of every fault injected.

use crate::Plan;
use crate::check::{self, Checker};
use crate::faults::{self, Effect, Kind};
use crate::report;
use crate::support::guard::{Guard, GuardOpts};
use crate::support::{self, Daemon, DaemonOpts, GROUP};
use kube_failover::status::StatusReport;
use kube_failover_testbed::{ClusterPair, FaultProxy, TokenCredentials};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Instances, as `observers.expected`.
pub const INSTANCES: usize = 3;
/// `policy.observers.quorum`.
pub const QUORUM: usize = 2;
/// `policy.cooldown`: short, so that a campaign sees several promotions.
pub const COOLDOWN: Duration = Duration::from_secs(20);
/// `policy.startup_grace`.
pub const STARTUP_GRACE: Duration = Duration::from_secs(2);
/// `daemon.probe_interval`.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// `policy.failure_threshold`.
pub const FAILURE_THRESHOLD: u32 = 3;
/// The primary guard's `isolation_ttl` (`on_isolation = "stop"`).
pub const GUARD_ISOLATION_TTL: Duration = Duration::from_secs(4);

/// Which side of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    Primary,
    Standby,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Primary => "primary",
            Side::Standby => "standby",
        }
    }
}

/// An instance's token identity on one side, and where the requests made with a token
/// just rotated begin in that side's audit log.
pub struct Token {
    pub creds: TokenCredentials,
    /// While a rotation waits for the instance's first accepted request with the new
    /// token: a byte offset of the side's audit log taken before it was written.
    pub rotated_from: Option<u64>,
}

/// One daemon instance: its identity, its two proxies, its token identities and its
/// current process.
pub struct Instance {
    pub identity: String,
    pub admin: SocketAddr,
    pub config: PathBuf,
    pub primary_proxy: FaultProxy,
    pub standby_proxy: FaultProxy,
    /// Its token identities, primary then standby; its kubeconfigs name its proxies.
    pub tokens: [tokio::sync::Mutex<Token>; 2],
    pub process: tokio::sync::Mutex<Option<Daemon>>,
    /// Every log file of this instance (one per process).
    pub logs: Mutex<Vec<PathBuf>>,
    /// The pid of the running process, for RSS samples and signals.
    pub pid: Mutex<Option<u32>>,
    /// Set while the campaign itself stops or kills the process.
    pub exit_expected: Mutex<bool>,
}

impl Instance {
    pub fn proxy(&self, side: Side) -> &FaultProxy {
        match side {
            Side::Primary => &self.primary_proxy,
            Side::Standby => &self.standby_proxy,
        }
    }

    pub fn token(&self, side: Side) -> &tokio::sync::Mutex<Token> {
        match side {
            Side::Primary => &self.tokens[0],
            Side::Standby => &self.tokens[1],
        }
    }

    /// Starts a process on this instance's config (a restart after a kill or a crash).
    pub async fn spawn(&self, dir: &std::path::Path) {
        let d = Daemon::spawn_with_config(&self.config, self.admin, dir);
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(d.log.clone());
        *self.pid.lock().unwrap_or_else(|p| p.into_inner()) = d.pid();
        *self.process.lock().await = Some(d);
    }

    /// Replaces the process by a new one on the same config with `env` added (a clock
    /// fault's start and end): the old one is SIGKILLed first.
    pub async fn restart(&self, dir: &std::path::Path, env: &[(&str, String)]) {
        *self.exit_expected.lock().unwrap_or_else(|p| p.into_inner()) = true;
        if let Some(mut daemon) = self.process.lock().await.take() {
            daemon.kill().await;
        }
        let d = Daemon::spawn_with_config_env(&self.config, self.admin, dir, env);
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(d.log.clone());
        *self.pid.lock().unwrap_or_else(|p| p.into_inner()) = d.pid();
        *self.process.lock().await = Some(d);
        *self.exit_expected.lock().unwrap_or_else(|p| p.into_inner()) = false;
    }

    /// This instance's `/status`, if it answers.
    pub async fn status(&self, http: &reqwest::Client) -> Option<StatusReport> {
        let r = http
            .get(format!("http://{}/status", self.admin))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// Whether this instance says it leads the group.
    pub async fn leads(&self, http: &reqwest::Client) -> bool {
        self.status(http).await.is_some_and(|s| {
            s.groups.iter().any(|g| {
                g.name == GROUP && g.coordination.as_ref().is_some_and(|c| c.role == "leader")
            })
        })
    }
}

/// A guard beside one side's agent (`kube-failover guard`, wrapper form, its agent a
/// process on this host), reading the record from the standby through a fault proxy of
/// its own. Restarted with the same identity (and so the same heartbeat Lease) after a
/// kill.
pub struct GuardProc {
    pub side: Side,
    pub proxy: FaultProxy,
    opts: GuardOpts,
    pub current: tokio::sync::Mutex<Option<Guard>>,
    /// The guard's pid while it runs: the checker reads its agent from `/proc`.
    pub pid: Mutex<Option<u32>>,
    /// Every log of this guard (one per process).
    pub logs: Mutex<Vec<PathBuf>>,
}

impl GuardProc {
    /// Starts a guard process (at the start, and again after a kill).
    pub async fn spawn(&self, pair: &ClusterPair) {
        let g = Guard::start_with(pair, self.side.name(), pair.primary.dir(), &self.opts);
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(g.log.clone());
        *self.pid.lock().unwrap_or_else(|p| p.into_inner()) = g.pid();
        *self.current.lock().await = Some(g);
    }

    /// SIGKILLs the guard and its agent's process group, as a container's end takes both.
    pub async fn kill(&self) {
        *self.pid.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if let Some(mut g) = self.current.lock().await.take() {
            let agent = g.agent_pid();
            g.kill().await;
            if let Some(agent) = agent {
                // Gone already when the guard had stopped it.
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", "--", &format!("-{agent}")])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }

    /// Whether the guard's agent runs: a child of the guard's process that is neither a
    /// zombie nor gone.
    pub fn agent_alive(&self) -> bool {
        let Some(pid) = *self.pid.lock().unwrap_or_else(|p| p.into_inner()) else {
            return false;
        };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
            .flat_map(|c| {
                c.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
            .any(|child| {
                std::fs::read_to_string(format!("/proc/{child}/stat"))
                    .ok()
                    .and_then(|stat| {
                        // The state follows the command's closing parenthesis.
                        let after = stat.rsplit_once(')')?.1;
                        after.split_whitespace().next().map(str::to_string)
                    })
                    .is_some_and(|state| state != "Z" && state != "X")
            })
    }
}

/// One fault as injected: what, on whom, from when to when (since the campaign's start).
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub id: usize,
    pub kind: Kind,
    pub detail: String,
    pub start: Duration,
    /// When it was undone (`None`: still in force).
    pub end: Option<Duration>,
    /// False when the injection itself failed (the fault never was in force).
    pub injected: bool,
    pub effects: Vec<Effect>,
    /// Kinds of the faults in force when this one started.
    pub overlapping: Vec<Kind>,
}

impl FaultRecord {
    pub fn in_force_at(&self, t: Duration) -> bool {
        self.injected && self.start <= t && self.end.is_none_or(|e| e >= t)
    }

    pub fn overlaps(&self, from: Duration, to: Duration) -> bool {
        self.injected && self.start <= to && self.end.is_none_or(|e| e >= from)
    }
}

pub struct World {
    pub pair: ClusterPair,
    pub plan: Plan,
    pub started: Instant,
    pub wall_started: SystemTime,
    pub instances: Vec<Instance>,
    /// The primary's guard, then the standby's.
    pub guards: Vec<GuardProc>,
    pub history: Mutex<Vec<FaultRecord>>,
    pub operator_config: PathBuf,
    pub http: reqwest::Client,
}

impl World {
    /// Time since the campaign started.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// The wall-clock time of a campaign instant.
    pub fn wall(&self, t: Duration) -> SystemTime {
        self.wall_started + t
    }

    /// The effects in force at `t`, with the id of their fault.
    pub fn effects_at(&self, t: Duration) -> Vec<Effect> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|f| f.in_force_at(t))
            .flat_map(|f| f.effects.iter().copied())
            .collect()
    }

    /// Whether an effect matching `pred` was in force at some time in `[from, to]`.
    pub fn any_effect_between(
        &self,
        from: Duration,
        to: Duration,
        pred: impl Fn(&Effect) -> bool,
    ) -> bool {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|f| f.overlaps(from, to))
            .any(|f| f.effects.iter().any(&pred))
    }

    /// When instance `i` last came up (its latest restart, or the campaign's start): the
    /// end of a kill, the start and the end of a clock fault (each a restart).
    pub fn running_since(&self, i: usize, t: Duration) -> Duration {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|f| f.injected)
            .flat_map(|f| {
                if f.effects.contains(&Effect::DaemonDown(i)) {
                    vec![f.end]
                } else if f.effects.contains(&Effect::ClockRate(i)) {
                    vec![Some(f.start), f.end]
                } else {
                    Vec::new()
                }
            })
            .flatten()
            .filter(|e| *e <= t)
            .max()
            .unwrap_or_default()
    }

    /// Every process's logs with the name the report gives them: each instance's
    /// identity, then `guard-<side>`.
    pub fn log_sets(&self) -> Vec<(String, &Mutex<Vec<PathBuf>>)> {
        self.instances
            .iter()
            .map(|i| (i.identity.clone(), &i.logs))
            .chain(
                self.guards
                    .iter()
                    .map(|g| (format!("guard-{}", g.side.name()), &g.logs)),
            )
            .collect()
    }

    pub fn faults(&self) -> Vec<FaultRecord> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// libfaketime, for the clock-rate fault: `KUBE_FAILOVER_FAKETIME_LIB`, else where
/// Debian's `faketime` package puts it.
pub fn faketime_lib() -> Option<PathBuf> {
    if let Some(lib) = std::env::var_os("KUBE_FAILOVER_FAKETIME_LIB") {
        return Some(PathBuf::from(lib)).filter(|p| p.is_file());
    }
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
        "/usr/local/lib/faketime/libfaketimeMT.so.1",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

fn daemon_opts(identity: &str) -> DaemonOpts {
    DaemonOpts {
        identity: Some(identity.to_string()),
        interval: INTERVAL,
        timeout: Duration::from_millis(800),
        failure_threshold: FAILURE_THRESHOLD,
        startup_grace: STARTUP_GRACE,
        promotion_timeout: Duration::from_secs(30),
        freeze_for: Duration::from_secs(10),
        cooldown: COOLDOWN,
        correct_standby: true,
        observer_quorum: QUORUM as u32,
        observers_expected: Some(INSTANCES as u32),
        // A revoked grant shows when a watch is resumed.
        watch_timeout: Some(Duration::from_secs(30)),
        // One guard beside each side's agent: the primary's stops its agent before the
        // promotion scales the standby up (`on_isolation = "stop"`).
        group_toml: "\n[groups.guards]\nprimary = 1\nstandby = 1\n".into(),
        ..DaemonOpts::default()
    }
}

/// The guards' heartbeat Leases in the standby (the daemon counts them).
async fn heartbeats(world: &World) -> usize {
    let api: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(world.pair.standby.client(), world.pair.standby.namespace());
    let selector = format!("kube-failover/guard={GROUP}");
    api.list(&kube::api::ListParams::default().labels(&selector))
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

/// What a campaign found, for the exit code.
pub struct Outcome {
    pub violations: usize,
}

/// Starts the world, runs the plan's faults and the checker side by side, heals, settles,
/// and reports.
pub async fn run(plan: Plan) -> Outcome {
    kube_failover::tls::install_provider();
    println!(
        "chaos: seed {} duration {} faults {}",
        plan.seed,
        humantime::format_duration(plan.duration),
        plan.kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(",")
    );
    // Audit logs on: the check of leader-only writes reads them, and they show when an
    // instance's first request with a rotated token was accepted.
    let pair = ClusterPair::start_audited()
        .await
        .expect("start the audited cluster pair");
    let dir = pair.primary.dir().to_path_buf();
    let mut instances = Vec::new();
    for name in ["chaos-a", "chaos-b", "chaos-c"] {
        let mut opts = daemon_opts(name);
        let primary_proxy = FaultProxy::start(pair.primary.api_addr())
            .await
            .expect("start a proxy to the primary");
        let standby_proxy = FaultProxy::start(pair.standby.api_addr())
            .await
            .expect("start a proxy to the standby");
        // A ServiceAccount token per side, the daemon's Role(s) bound to it, in a
        // kubeconfig that names this instance's proxy: `credentials-rotate` rotates it.
        let (primary_creds, standby_creds) = tokio::try_join!(
            TokenCredentials::create_via(&pair.primary, name, primary_proxy.addr()),
            TokenCredentials::create_via(&pair.standby, name, standby_proxy.addr()),
        )
        .expect("token identities via the proxies");
        opts.primary_kubeconfig = Some(primary_creds.kubeconfig().to_path_buf());
        opts.standby_kubeconfig = Some(standby_creds.kubeconfig().to_path_buf());
        let admin = support::free_port();
        let config = dir.join(format!("chaos-{name}.toml"));
        std::fs::write(&config, support::config_toml(&pair, &opts, admin))
            .expect("write a daemon config");
        instances.push(Instance {
            identity: name.to_string(),
            admin,
            config,
            primary_proxy,
            standby_proxy,
            tokens: [primary_creds, standby_creds].map(|creds| {
                tokio::sync::Mutex::new(Token {
                    creds,
                    rotated_from: None,
                })
            }),
            process: tokio::sync::Mutex::new(None),
            logs: Mutex::new(Vec::new()),
            pid: Mutex::new(None),
            exit_expected: Mutex::new(false),
        });
    }
    // The guards: the primary's in stop mode, asking the three instances when it cannot
    // read the record; the standby's keeps its agent as it is then (the default).
    let daemons = instances
        .iter()
        .map(|i| format!("\"http://{}\"", i.admin))
        .collect::<Vec<_>>()
        .join(", ");
    let mut guards = Vec::new();
    for side in [Side::Primary, Side::Standby] {
        let proxy = FaultProxy::start(pair.standby.api_addr())
            .await
            .expect("start a guard's proxy to the standby");
        let toml = match side {
            Side::Primary => format!(
                "on_isolation = \"stop\"\nisolation_ttl = \"{}ms\"\ndaemons = [{daemons}]\n",
                GUARD_ISOLATION_TTL.as_millis()
            ),
            Side::Standby => String::new(),
        };
        let opts = GuardOpts {
            kubeconfig: Some(
                pair.standby
                    .daemon_kubeconfig_via(proxy.addr())
                    .expect("guard kubeconfig via proxy"),
            ),
            toml,
            ..GuardOpts::default()
        };
        guards.push(GuardProc {
            side,
            proxy,
            opts,
            current: tokio::sync::Mutex::new(None),
            pid: Mutex::new(None),
            logs: Mutex::new(Vec::new()),
        });
    }
    // The operator acts with the clusters' own restricted kubeconfigs, not through the
    // instances' proxies.
    let operator_config = dir.join("chaos-operator.toml");
    std::fs::write(
        &operator_config,
        support::config_toml(&pair, &daemon_opts("chaos-operator"), support::free_port()),
    )
    .expect("write the operator's config");

    let world = Arc::new(World {
        pair,
        plan: plan.clone(),
        started: Instant::now(),
        wall_started: SystemTime::now(),
        instances,
        guards,
        history: Mutex::new(Vec::new()),
        operator_config,
        http: support::admin_client(),
    });
    for inst in &world.instances {
        inst.spawn(&dir).await;
    }
    // The guards' identity (the daemon's user here) needs the guard's Role in the
    // standby to write its heartbeats: without them the daemon cannot tell a stopped
    // agent from a running one, and never waits for a guard it has not seen.
    support::guard::grant_guard_role(&world.pair).await;
    for g in &world.guards {
        g.spawn(&world.pair).await;
    }
    // Settled: every instance sees the primary active and one of them leads, the primary's
    // guard runs its agent and the standby's does not.
    let settled = support::wait_for(Duration::from_secs(90), Duration::from_millis(500), || {
        let world = world.clone();
        async move {
            let mut leaders = 0;
            for inst in &world.instances {
                match inst.status(&world.http).await {
                    Some(s)
                        if s.groups
                            .iter()
                            .any(|g| g.name == GROUP && g.state == "primary_active") => {}
                    _ => return false,
                }
                leaders += usize::from(inst.leads(&world.http).await);
            }
            leaders == 1
                && world.guards[0].agent_alive()
                && !world.guards[1].agent_alive()
                && heartbeats(&world).await == 2
        }
    })
    .await;
    if settled.is_none() {
        eprintln!(
            "chaos: the three instances and the two guards (their heartbeats written) did not settle in 90 s; see their logs:"
        );
        for (_, logs) in world.log_sets() {
            for log in logs.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                eprintln!("  {}", log.display());
            }
        }
        std::process::exit(2);
    }
    println!(
        "chaos: settled after {:.1}s; campaign of {} starts",
        world.now().as_secs_f64(),
        humantime::format_duration(plan.duration)
    );
    let begin = world.now();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let checker = tokio::spawn(check::run(world.clone(), stop_rx.clone()));
    faults::campaign(world.clone(), begin + plan.duration).await;
    // Every fault is undone by now; the system settles under the checker's eyes.
    let settle = Duration::from_secs(30);
    println!(
        "chaos: faults over at {:.0}s; settling for {}s",
        world.now().as_secs_f64(),
        settle.as_secs()
    );
    tokio::time::sleep(settle).await;
    let _ = stop_tx.send(true);
    let checker: Checker = checker.await.expect("the checker task");
    let mut checker = checker;
    check::scan_logs(&world, &mut checker);
    check::scan_audit(&world, &mut checker);
    let outcome = Outcome {
        violations: checker.violations.len(),
    };
    report::write(&world, &checker, begin);
    // Stop the instances before the clusters go.
    for inst in &world.instances {
        *inst.exit_expected.lock().unwrap_or_else(|p| p.into_inner()) = true;
        if let Some(pid) = *inst.pid.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
        if let Some(mut d) = inst.process.lock().await.take() {
            d.kill().await;
        }
    }
    for g in &world.guards {
        g.kill().await;
    }
    outcome
}

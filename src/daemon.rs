//! The loop that ties it together: one task per group (so a slow cluster never delays
//! another group's tick), the admin server, systemd notifications, and drain-based
//! shutdown (first SIGTERM/SIGINT: stop new ticks, let in-flight actions finish within
//! `daemon.shutdown_timeout`; a second signal aborts).

use crate::actuate::Actuator;
use crate::admin::{self, AdminError, AdminState};
use crate::cluster::{self, ClusterError};
use crate::config::{Config, GroupConfig, Mode};
use crate::engine::{Decision, Engine, EngineSettings, GroupState};
use crate::metrics::{Metrics, Side};
use crate::model::{Action, FailoverRecord, Observation, ProbeOutcome};
use crate::notify;
use crate::probe;
use crate::status::{
    DecisionStatus, GroupStatus, Named, RecordStatus, SignalStatus, StandbyStatus, StatusReport,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

/// Errors that stop the daemon from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot set up metrics")]
    Metrics(#[source] prometheus::Error),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("group {group}: {source}")]
    Cluster {
        group: String,
        #[source]
        source: ClusterError,
    },
    #[error("cannot build the HTTP client for checks")]
    HttpClient(#[source] reqwest::Error),
    #[error("cannot install the {0} signal handler")]
    Signal(&'static str, #[source] std::io::Error),
    #[error("aborted by a second signal while in-flight actions were still running")]
    Aborted,
    #[error(transparent)]
    IdentityClash(#[from] crate::coord::IdentityClash),
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let listener = admin::bind(config.daemon.listen).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    run_with_listener(config, listener, stop_tx, stop_rx).await
}

fn identity(config: &Config) -> String {
    config.daemon.identity.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "kube-failover".to_string())
    })
}

async fn run_with_listener(
    config: Config,
    listener: tokio::net::TcpListener,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    let identity = identity(&config);
    let metrics = Metrics::new().map_err(DaemonError::Metrics)?;
    let daemon = &config.daemon;
    let admin = Arc::new(AdminState::new(
        metrics.clone(),
        daemon.probe_interval,
        config.groups.len(),
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_string(),
            mode: daemon.mode.as_str().to_string(),
            identity: identity.clone(),
            ready: false,
            last_tick_unix: None,
            groups: Vec::new(),
        },
    ));
    let http = probe::http::client(daemon.probe_timeout).map_err(DaemonError::HttpClient)?;

    // Credentials are waited for less than the shortest call bound, so a missing one is
    // reported as `unauthorized`, never as a `timeout`.
    let client_options = cluster::ClientOptions::for_call_timeout(daemon.probe_timeout);
    let mut runners = Vec::new();
    for group in &config.groups {
        let primary = cluster::client_for_with(&group.primary, "primary", client_options)
            .await
            .map_err(|source| DaemonError::Cluster {
                group: group.name.clone(),
                source,
            })?;
        let standby = cluster::client_for_with(&group.standby, "standby", client_options)
            .await
            .map_err(|source| DaemonError::Cluster {
                group: group.name.clone(),
                source,
            })?;
        runners.push(GroupRunner::new(
            group.clone(),
            &config,
            primary,
            standby,
            http.clone(),
            identity.clone(),
            metrics.clone(),
            admin.clone(),
        ));
    }

    // Several instances (src/coord): refuse an identity another live process uses.
    for runner in &runners {
        runner
            .coord
            .check_identity(daemon.probe_interval / 2)
            .await?;
    }

    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(listener, admin.clone(), admin_stop_rx));
    info!(
        listen = %daemon.listen,
        mode = daemon.mode.as_str(),
        groups = config.groups.len(),
        identity = %identity,
        interval = %humantime::format_duration(daemon.probe_interval),
        "kube-failover started"
    );

    let mut tasks = JoinSet::new();
    for runner in runners {
        tasks.spawn(runner.run(stop_rx.clone()));
    }
    let supervisor = tokio::spawn(supervise(
        admin.clone(),
        daemon.probe_interval,
        stop_rx.clone(),
    ));

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| DaemonError::Signal("SIGTERM", e))?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| DaemonError::Signal("SIGINT", e))?;
    let mut stop_watch = stop_rx.clone();
    tokio::select! {
        _ = sigterm.recv() => info!("SIGTERM: finishing in-flight work"),
        _ = sigint.recv() => info!("SIGINT: finishing in-flight work"),
        _ = stop_watch.wait_for(|s| *s) => info!("stop requested: finishing in-flight work"),
    }
    admin.begin_shutdown();
    notify::stopping();
    let _ = stop_tx.send(true);

    let drain = async { while tasks.join_next().await.is_some() {} };
    let result = tokio::select! {
        _ = drain => Ok(()),
        _ = tokio::time::sleep(daemon.shutdown_timeout) => {
            warn!(timeout = %humantime::format_duration(daemon.shutdown_timeout),
                "shutdown timeout: abandoning in-flight work");
            Ok(())
        }
        _ = sigterm.recv() => Err(DaemonError::Aborted),
        _ = sigint.recv() => Err(DaemonError::Aborted),
    };
    supervisor.abort();
    let _ = admin_stop_tx.send(true);
    let _ = admin_task.await;
    info!("kube-failover stopped");
    result
}

/// systemd: READY=1 once every group has ticked, WATCHDOG=1 while ticks keep coming.
async fn supervise(admin: Arc<AdminState>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let period = notify::watchdog_interval()
        .map(|w| (w / 3).min(interval))
        .unwrap_or(interval)
        .max(Duration::from_millis(100));
    let mut notified_ready = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if !notified_ready && admin.is_ready() {
            notify::ready();
            notified_ready = true;
        }
        if admin.is_healthy() {
            notify::watchdog();
        }
    }
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One group: its clients, engine and actuator.
struct GroupRunner {
    cfg: GroupConfig,
    mode: Mode,
    interval: Duration,
    timeout: Duration,
    primary: kube::Client,
    standby: kube::Client,
    http: reqwest::Client,
    engine: Engine,
    actuator: Actuator,
    metrics: Metrics,
    admin: Arc<AdminState>,
    state: GroupState,
    since_unix: f64,
    last_action_error: Option<String>,
    /// Actions failing now: the error and how many times in a row.
    failing: HashMap<&'static str, (String, u64)>,
    /// When the previous tick started, for time-based totals.
    previous_tick: Option<Instant>,
    /// Leader Lease and observer verdicts (src/coord).
    coord: crate::coord::GroupCoord,
}

impl GroupRunner {
    #[allow(clippy::too_many_arguments)]
    fn new(
        cfg: GroupConfig,
        config: &Config,
        primary: kube::Client,
        standby: kube::Client,
        http: reqwest::Client,
        identity: String,
        metrics: Metrics,
        admin: Arc<AdminState>,
    ) -> Self {
        let signals = probe::signal_ids(&cfg);
        metrics.init_group(&cfg.name, &signals);
        // Every Kubernetes call of this group that ends is progress (src/liveness.rs).
        let primary = crate::liveness::beating_client(primary, admin.heartbeat(&cfg.name));
        let standby = crate::liveness::beating_client(standby, admin.heartbeat(&cfg.name));
        let engine = Engine::new(
            EngineSettings {
                interval: config.daemon.probe_interval,
                policy: cfg.policy.clone(),
                mode: config.daemon.mode,
                signals,
            },
            Instant::now(),
        );
        let coord = crate::coord::GroupCoord::new(
            &cfg,
            config,
            standby.clone(),
            identity.clone(),
            metrics.coord.clone(),
        );
        let actuator = Actuator::new(&cfg, primary.clone(), standby.clone(), identity);
        GroupRunner {
            coord,
            mode: config.daemon.mode,
            interval: config.daemon.probe_interval,
            timeout: config.daemon.probe_timeout,
            primary,
            standby,
            http,
            engine,
            actuator,
            metrics,
            admin,
            state: GroupState::Starting,
            since_unix: now_unix(),
            last_action_error: None,
            failing: HashMap::new(),
            previous_tick: None,
            cfg,
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            // Not raced against `stop`: a tick that started finishes its actions.
            self.tick().await;
        }
    }

    async fn observe(&self, wall_unix: f64) -> Observation {
        let recorded = self.engine.recorded_primary_names();
        let (primary, standby) = tokio::join!(
            probe::probe_primary(
                &self.primary,
                &self.cfg,
                &self.http,
                self.timeout,
                &recorded,
            ),
            probe::probe_standby(&self.standby, &self.cfg, self.timeout),
        );
        Observation {
            wall_unix,
            primary,
            standby,
            observers: Vec::new(),
        }
    }

    async fn tick(&mut self) {
        let started = Instant::now();
        let wall = now_unix();
        self.admin.progress(&self.cfg.name);
        // The group's Leases are read (and the leader Lease renewed) beside the probes.
        let (mut obs, observers) = tokio::join!(self.observe(wall), self.coord.sync(started, wall));
        obs.observers = observers;
        self.admin.progress(&self.cfg.name);
        self.report_probes(&obs);

        // Only the leader acts; any other instance decides as in observe mode.
        let leading = self.coord.may_write(Instant::now());
        self.engine
            .set_mode(if leading { self.mode } else { Mode::Observe });
        let decision = self.engine.step(started, &obs);
        self.coord.publish(&decision, wall).await;
        let group_name = self.cfg.name.clone();
        let group = group_name.as_str();
        if decision.state_changed {
            let reasons: Vec<&str> = decision.reasons.iter().map(|r| r.as_str()).collect();
            let from = self.state.as_str();
            let to = decision.state.as_str();
            match decision.state {
                GroupState::PrimaryActive | GroupState::Starting | GroupState::Promoted => {
                    info!(group, from, to, ?reasons, "state changed")
                }
                _ => warn!(group, from, to, ?reasons, "state changed"),
            }
            self.state = decision.state;
            self.since_unix = wall;
        }
        if self.mode == Mode::Auto && leading {
            self.execute(&decision, &obs, started).await;
        } else if decision.would_promote() && decision.state_changed && leading {
            warn!(group, "observe mode: would promote the standby now");
        }

        // A non-leader's would-be promotion is the leader's to count.
        let would_promote = decision.would_promote() && leading;
        self.metrics
            .observe_decision(group, &decision, would_promote);
        let since_previous = self
            .previous_tick
            .replace(started)
            .map_or(self.interval, |p| started.saturating_duration_since(p));
        if decision.dual_active {
            self.metrics
                .dual_active_for(group, since_previous.as_secs_f64());
        }
        if let Ok(rec) = &obs.standby.record {
            let active = if rec.effective_phase().standby_active() {
                Side::Standby
            } else {
                Side::Primary
            };
            self.metrics.set_active(group, active);
        }
        self.metrics
            .set_replicas(group, Side::Primary, obs.primary.deployments.as_deref());
        self.metrics
            .set_replicas(group, Side::Standby, obs.standby.deployments.as_deref());
        let status = self.status(&decision, &obs, wall);
        self.admin.tick_done(status, now_unix());
        self.metrics
            .tick_done(group, started.elapsed().as_secs_f64(), now_unix());
    }

    fn report_probes(&self, obs: &Observation) {
        let g = self.cfg.name.as_str();
        let m = &self.metrics;
        m.observe_probe(g, Side::Primary, "api", &obs.primary.api);
        for (id, o) in obs.primary.workloads.iter().chain(&obs.primary.http) {
            m.observe_probe(g, Side::Primary, &id.to_string(), o);
        }
        m.observe_probe(g, Side::Standby, "api", &obs.standby.api);
        m.observe_probe(g, Side::Standby, "workloads", &obs.standby.workloads);
        let record = match &obs.standby.record {
            Ok(_) => ProbeOutcome::ok(Duration::ZERO),
            Err(o) => o.clone(),
        };
        m.observe_probe(g, Side::Standby, "record", &record);
    }

    /// Runs the decision's actions in order and feeds each result back to the engine.
    /// A failed `promoting` record write stops the rest: nothing is scaled up without a
    /// record (invariant 2). A failure is logged when it starts or changes, not every
    /// tick; repeats are counted in `kube_failover_actions_total`.
    async fn execute(&mut self, decision: &Decision, obs: &Observation, now: Instant) {
        let group = self.cfg.name.clone();
        let group = group.as_str();
        let reasons: Vec<&str> = decision.reasons.iter().map(|r| r.as_str()).collect();
        let mut failed = None;
        for action in &decision.actions {
            let kind = action.kind();
            if !self.coord.may_write(Instant::now()) {
                warn!(
                    group,
                    action = kind,
                    "no longer the leader: remaining actions not run"
                );
                break;
            }
            let result = self.actuator.execute(action, obs).await;
            self.admin.progress(group);
            match result {
                Ok(report) => {
                    self.engine.handle_result(now, action, true);
                    self.metrics.observe_action(group, kind, true);
                    if report.changed() {
                        info!(group, action = kind, ?reasons, changes = %report, "action done");
                    }
                    if let Some((_, n)) = self.failing.remove(kind) {
                        info!(group, action = kind, failures = n, "action succeeded again");
                    }
                    self.after_success(action, obs);
                }
                Err(e) => {
                    self.engine.handle_result(now, action, false);
                    self.metrics.observe_action(group, kind, false);
                    let label = e.reason();
                    let message = e.to_string();
                    let repeats = match self.failing.get_mut(kind) {
                        Some((last, n)) if *last == message => {
                            *n += 1;
                            *n
                        }
                        _ => {
                            self.failing.insert(kind, (message.clone(), 1));
                            1
                        }
                    };
                    if repeats == 1 {
                        error!(group, action = kind, reason = label, error = %e, ?reasons, "action failed");
                    }
                    failed = Some(format!("{kind}: {message}"));
                    if matches!(action, Action::RecordPromoting { .. }) {
                        break;
                    }
                }
            }
        }
        self.last_action_error = failed;
    }

    fn after_success(&mut self, action: &Action, obs: &Observation) {
        let group = self.cfg.name.as_str();
        let wall = now_unix();
        match action {
            Action::RecordPromoting { epoch, reason, .. } => {
                self.metrics.promotion_started(group, wall);
                warn!(group, epoch, reason = %reason, "promotion started: standby is being scaled up");
            }
            Action::RecordPromoted { epoch } => {
                let started = obs
                    .standby
                    .record
                    .as_ref()
                    .ok()
                    .and_then(|r| r.promoted_at_unix);
                let seconds = started.map(|t| wall - t as f64);
                self.metrics.promotion_finished(group, true, seconds);
                info!(
                    group,
                    epoch, seconds, "promotion complete: the standby is active and Ready"
                );
            }
            Action::RecordFailed { epoch, reason } => {
                self.metrics.promotion_finished(group, false, None);
                error!(group, epoch, reason = %reason, "promotion failed: the standby is not Ready; retrying");
            }
            Action::FencePrimary { .. } => {
                warn!(group, "old primary fenced: its workloads are scaled to 0");
            }
            Action::RestoreRecord { .. } => self.metrics.record_restored(group),
            Action::Announce { reason } => {
                warn!(group, reason = %reason, "condition began; Event recorded");
            }
            _ => {}
        }
    }

    fn status(&self, d: &Decision, obs: &Observation, wall: f64) -> GroupStatus {
        let signals = d
            .signals
            .iter()
            .map(|s| {
                let outcome = obs.primary.outcome(&s.id);
                SignalStatus {
                    name: s.id.clone().into(),
                    up: s.up,
                    consecutive_failures: s.consecutive_failures,
                    consecutive_successes: s.consecutive_successes,
                    consecutive_unknown: s.consecutive_unknown,
                    last_reason: s.last_reason.map(Named::from),
                    last_latency_seconds: outcome.map(|o| o.latency.as_secs_f64()),
                    last_detail: outcome.map(|o| o.detail.clone()).unwrap_or_default(),
                }
            })
            .collect();
        let record = obs.standby.record.as_ref().ok().map(record_status);
        let active_cluster = match obs.standby.record.as_ref().map(|r| r.effective_phase()) {
            Ok(p) if p.standby_active() => Named::Known(Side::Standby),
            Ok(_) => Named::Known(Side::Primary),
            Err(_) => Named::Other("unknown".to_string()),
        };
        let detail = [
            &obs.standby.api.detail,
            &obs.standby.workloads.detail,
            &obs.standby
                .record
                .as_ref()
                .err()
                .map(|o| o.detail.clone())
                .unwrap_or_default(),
        ]
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("; ");
        GroupStatus {
            name: self.cfg.name.clone(),
            state: d.state.into(),
            since_unix: self.since_unix,
            primary_down: d.primary_down,
            standby_fit: d.standby_fit,
            active_cluster,
            signals,
            standby: StandbyStatus {
                api_reason: obs.standby.api.reason.into(),
                workloads_reason: obs.standby.workloads.reason.into(),
                detail,
            },
            record,
            last_decision: DecisionStatus {
                at_unix: wall,
                reasons: d.reasons.iter().copied().map(Named::from).collect(),
                actions: d.actions.iter().map(|a| a.kind().to_string()).collect(),
                would_promote: d.would_promote(),
            },
            unexpected_standby_replicas: d.unexpected_standby_replicas,
            dual_active: d.dual_active,
            no_active_side: d.no_active_side,
            last_action_error: self.last_action_error.clone(),
            coordination: Some(self.coord.status(Instant::now())),
        }
    }
}

fn record_status(r: &FailoverRecord) -> RecordStatus {
    RecordStatus {
        phase: r.effective_phase().into(),
        epoch: r.epoch,
        reason: r.reason.clone(),
        promoted_at: r.promoted_at.clone(),
        completed_at: r.completed_at.clone(),
        fenced_at: r.fenced_at.clone(),
        holder: r.holder.clone(),
        primary_deployments: r
            .primary_deployments
            .iter()
            .map(|d| d.name.clone())
            .collect(),
        failback_at: r.failback_at.clone(),
        restored_at: r.restored_at.clone(),
    }
}

//! One group's loop: every tick probes both clusters, steps the engine, carries out
//! its actions (in `auto` mode) and publishes metrics and `/status`.

use super::status::group_status;
use crate::actuate::Actuator;
use crate::admin::AdminState;
use crate::clusters::ClusterHandle;
use crate::config::{Config, GroupConfig, Mode};
use crate::engine::{Decision, Engine, EngineSettings, GroupState};
use crate::metrics::{Metrics, Side};
use crate::model::{Action, Observation, ProbeOutcome};
use crate::probe;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use tracing::{error, info, warn};

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One group: its clients, engine and actuator.
pub(super) struct GroupRunner {
    cfg: GroupConfig,
    mode: Mode,
    interval: Duration,
    timeout: Duration,
    primary: Arc<ClusterHandle>,
    standby: Arc<ClusterHandle>,
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
    pub(super) coord: Arc<crate::coord::GroupCoord>,
    /// The Terraform state mirror (src/mirror), when configured; its task, until `run`
    /// starts it.
    mirror: Option<(crate::mirror::MirrorHandle, Option<crate::mirror::Mirror>)>,
    /// `daemon.trace_file`: every tick's observation, for `kube-failover simulate`.
    pub(super) trace: Option<crate::trace::TraceSink>,
    /// Standby state checks and drift (src/state).
    state_checks: crate::state::StateChecks,
}

impl GroupRunner {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        cfg: GroupConfig,
        config: &Config,
        primary: Arc<ClusterHandle>,
        standby: Arc<ClusterHandle>,
        http: reqwest::Client,
        identity: String,
        metrics: Metrics,
        admin: Arc<AdminState>,
    ) -> Self {
        let signals = probe::signal_ids(&cfg);
        metrics.init_group(&cfg.name, &signals);
        // Every Kubernetes call of this group that ends is progress (src/liveness.rs).
        // Writes and Leases go through the cluster's shared client, wrapped so that
        // every call of this group that ends is progress (src/liveness.rs).
        let primary_client =
            crate::liveness::beating_client(primary.client().clone(), admin.heartbeat(&cfg.name));
        let standby_client =
            crate::liveness::beating_client(standby.client().clone(), admin.heartbeat(&cfg.name));
        let engine = Engine::new(
            EngineSettings {
                interval: config.daemon.probe_interval,
                policy: cfg.policy.clone(),
                mode: config.daemon.mode,
                signals,
            },
            Instant::now(),
        );
        let coord = Arc::new(crate::coord::GroupCoord::new(
            &cfg,
            config,
            &standby,
            standby_client.clone(),
            identity.clone(),
            metrics.coord.clone(),
        ));
        // The Terraform state mirror runs on its own task (started by `run`); the
        // actuator stops it before a promotion's record is written.
        let mirror = cfg.state.mirror.as_ref().map(|m| {
            let handle = crate::mirror::MirrorHandle::new(&cfg, m);
            let task = m.enabled.then(|| {
                let leader = coord.clone();
                // Observe mode never writes: the mirror only compares and reports.
                let auto = config.daemon.mode == Mode::Auto;
                crate::mirror::Mirror::new(
                    &handle,
                    &cfg,
                    &primary,
                    &standby,
                    standby_client.clone(),
                    Actuator::new(
                        &cfg,
                        primary_client.clone(),
                        standby_client.clone(),
                        identity.clone(),
                    ),
                    Arc::new(move || auto && leader.may_write(Instant::now())),
                    metrics.mirror.clone(),
                )
            });
            (handle, task)
        });
        let mut actuator = Actuator::new(&cfg, primary_client, standby_client, identity);
        if let Some((handle, Some(_))) = &mirror {
            actuator = actuator.with_before_promotion(Arc::new(handle.clone()));
        }
        let state_checks = crate::state::StateChecks::new(
            &cfg,
            config.daemon.probe_interval,
            config.daemon.probe_timeout,
            &primary,
            &standby,
        );
        GroupRunner {
            state_checks,
            coord,
            mirror,
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
            trace: None,
            cfg,
        }
    }

    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        // Each group ticks at its own stable phase within the interval, so groups
        // spread their work instead of all probing at the same instant (and start-up is
        // staggered the same way). The time between a group's own ticks stays the
        // interval.
        let first = tokio::time::Instant::now() + phase(&self.cfg.name, self.interval);
        let mut ticker = tokio::time::interval_at(first, self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mirror = self
            .mirror
            .as_mut()
            .and_then(|(_, task)| task.take())
            .map(|task| tokio::spawn(task.run(stop.clone())));
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            // Not raced against `stop`: a tick that started finishes its actions.
            self.tick().await;
        }
        // The mirror's pass in flight finishes its write (each one is bounded).
        if let Some(task) = mirror
            && tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
        {
            warn!(group = %self.cfg.name, "state mirror did not stop within 5s");
        }
        // Another instance takes over at once instead of after a lease duration.
        self.coord.release().await;
    }

    async fn observe(&self, wall_unix: f64) -> Observation {
        let recorded = self.engine.recorded_primary_names();
        let (primary, mut standby, state_checks) = tokio::join!(
            probe::cached::probe_primary(
                &self.primary,
                &self.cfg,
                &self.http,
                self.timeout,
                &recorded,
            ),
            probe::cached::probe_standby(&self.standby, &self.cfg, self.timeout),
            self.state_checks.gather(&self.http),
        );
        standby.state_checks = state_checks;
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
        self.state_checks.evaluate(&mut obs, wall);
        if let Some(trace) = &self.trace {
            trace.record(&self.cfg.name, started, &obs);
        }
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
        let mut status = group_status(
            &self.cfg.name,
            self.since_unix,
            self.last_action_error.clone(),
            &decision,
            &obs,
            wall,
        );
        status.coordination = Some(self.coord.status(Instant::now()));
        status.drift = self.state_checks.drift_status();
        self.state_checks.report(&self.metrics.state, group, &obs);
        if let Some((mirror, _)) = &self.mirror {
            mirror.on_tick(&decision, leading);
            status.mirror = Some(mirror.status(now_unix()));
        }
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
                    if matches!(action, Action::RecordPromoting { .. })
                        && let Some(message) =
                            crate::state::promotion_notice(group, &obs.standby.state_checks)
                    {
                        warn!(group, %message, "promotion started while state checks fail");
                        let reason = crate::state::STATE_EVENT_REASON;
                        self.actuator.record_event(reason, message).await;
                    }
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
}

/// A stable offset within `interval` for the group named `name` (FNV-1a of the name):
/// the same on every start, spread evenly over many groups.
pub(super) fn phase(name: &str, interval: Duration) -> Duration {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let nanos = u64::try_from(interval.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_nanos(hash % nanos)
}

#[cfg(test)]
mod tests {
    use super::phase;
    use std::time::Duration;

    #[test]
    fn phases_are_stable_bounded_and_spread() {
        let interval = Duration::from_secs(1);
        assert_eq!(phase("env0", interval), phase("env0", interval));
        let phases: Vec<Duration> = (0..200)
            .map(|i| phase(&format!("group-{i}"), interval))
            .collect();
        assert!(phases.iter().all(|p| *p < interval));
        // Spread: every tenth of the interval holds some of the 200 groups, none most.
        let mut buckets = [0usize; 10];
        for p in &phases {
            buckets[(p.as_millis() / 100) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (5..=40).contains(&n)),
            "{buckets:?}"
        );
    }
}

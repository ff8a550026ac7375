//! One group's loop: every tick probes both clusters, steps the engine, carries out
//! its actions (in `auto` mode) and publishes metrics and `/status`.

use super::group_status::group_status;
use super::wake::{Cause, Schedule, Wakes, Woken};
use crate::actuate::Actuator;
use crate::admin::AdminState;
use crate::config::{Config, GroupConfig, Mode};
use crate::engine::{Decision, Engine, EngineSettings, GroupState, Leadership};
use crate::error_chain::chain;
use crate::kube::cluster::ClusterHandle;
use crate::metrics::{Metrics, Side};
use crate::model::{Action, Observation, ProbeOutcome, ProbeReason};
use crate::probe;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

/// One group: its clients, engine and actuator.
pub(super) struct GroupRunner {
    cfg: GroupConfig,
    /// Where the tick reads the time: the coordination's clock (the system's, or tokio's
    /// paused one in the tick's unit tests).
    clock: crate::coord::Clock,
    interval: Duration,
    timeout: Duration,
    primary: Arc<ClusterHandle>,
    standby: Arc<ClusterHandle>,
    http: reqwest::Client,
    engine: Engine,
    actuator: Actuator,
    metrics: Metrics,
    /// The decision gauges as last set (set again only when they change).
    published: crate::metrics::PublishedDecision,
    admin: Arc<AdminState>,
    state: GroupState,
    since_unix: f64,
    last_action_error: Option<String>,
    /// Actions failing now: the error and how many times in a row.
    failing: HashMap<&'static str, (String, u64)>,
    /// When the previous tick started, for time-based totals.
    previous_tick: Option<Instant>,
    /// When the primary's `/readyz` answer of the previous tick was sent: the next tick
    /// needs a later one, so no answer is counted twice.
    readyz_sent: Option<Instant>,
    /// Leader Lease and observer verdicts (src/coord).
    pub(super) coord: Arc<crate::coord::GroupCoord>,
    /// The Terraform state mirror (src/mirror), when configured; its task, until `run`
    /// starts it. Boxed, as `env0`: kB each that most groups do not use.
    mirror: Option<Box<(crate::mirror::MirrorHandle, Option<crate::mirror::Mirror>)>>,
    /// `daemon.trace_file`: every tick's observation, for `kube-failover simulate`.
    pub(super) trace: Option<crate::trace::TraceSink>,
    /// Standby state checks and drift (src/state).
    state_checks: crate::state::StateChecks,
    /// Notices of promotions, failures and failbacks, and the stale-lock check.
    pub(super) notices: crate::notify::GroupNotices,
    /// The env0 task (`[env0]`): its handle, the record it follows, and the task until
    /// `run` starts it.
    env0: Option<Box<Env0Parts>>,
}

/// A group's env0 task, its handle, and the record it follows.
struct Env0Parts {
    handle: crate::env0::Env0Handle,
    record: watch::Sender<Option<crate::model::FailoverRecord>>,
    task: Option<crate::env0::Env0Worker>,
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
        coordination: &Arc<crate::coord::Coordination>,
    ) -> Self {
        let clock = coordination.clock();
        let signals = probe::signal_ids(&cfg);
        metrics.init_group(&cfg.name, &signals);
        metrics.init_event_ticks(&cfg.name, &Cause::ALL.map(Cause::as_str));
        if cfg.guards.any() {
            metrics.init_guards(&cfg.name);
        }
        // The actuator's writes go through the cluster's shared client, wrapped so that
        // every call of this group that ends is progress, built on first use: a healthy
        // group may never write (src/liveness.rs).
        let primary_client = crate::liveness::LazyClient::beating(
            primary.client().clone(),
            admin.heartbeat(&cfg.name),
        );
        let standby_client = crate::liveness::LazyClient::beating(
            standby.client().clone(),
            admin.heartbeat(&cfg.name),
        );
        let engine = Engine::new(
            EngineSettings {
                interval: config.daemon.probe_interval,
                policy: cfg.policy.clone(),
                mode: config.daemon.mode,
                signals,
                clear_stale_locks: cfg.state.clear_stale_locks,
            },
            clock.now(),
        );
        let coord = Arc::new(crate::coord::GroupCoord::new(
            &cfg,
            config,
            &standby,
            // The cluster's client as it is: every group writes its leader Lease when
            // it starts leading, and each Lease call is bounded by the probe timeout,
            // far under the liveness bound, so it needs no beating client of its own.
            standby.client().clone(),
            identity.clone(),
            metrics.coord.clone(),
            coordination,
        ));
        // The mirror and env0 tasks write Events (and the mirror Secrets) through actuators
        // of their own, with the same clients and identity.
        // Each write asks again whether this instance leads: an action outlives the
        // check before it when the process pauses or a call is slow.
        let gate: crate::actuate::LeaderGate = {
            let leader = coord.clone();
            Arc::new(move || leader.may_write(clock.now()))
        };
        let new_actuator = || {
            Actuator::new(
                &cfg,
                primary_client.clone(),
                standby_client.clone(),
                identity.clone(),
            )
            .with_leader_gate(gate.clone())
        };
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
                    (*standby_client).clone(),
                    new_actuator(),
                    Arc::new(move || auto && leader.may_write(clock.now())),
                    metrics.mirror.clone(),
                )
            });
            Box::new((handle, task))
        });
        let mut notices = crate::notify::GroupNotices::new(&cfg, &identity);
        // env0 (src/env0): its own task, its own actuator for its Events, and the
        // claims ConfigMap beside the record; redeploys only while this instance leads
        // in auto mode.
        let env0 = config.env0.as_ref().map(|e| {
            let counter = metrics.env0.clone();
            let client = crate::env0::Env0Client::new(
                e,
                http.clone(),
                Arc::new(move |call, result| counter.request(call, result)),
            );
            let claims = crate::env0::Claims::new(
                (*standby_client).clone(),
                &cfg.standby.namespace,
                &cfg.record_name(),
                &cfg.name,
                Actuator::DEFAULT_CALL_TIMEOUT,
            );
            let (record, follow) = watch::channel(None);
            let leader = coord.clone();
            let auto = config.daemon.mode == Mode::Auto;
            let (task, handle) = crate::env0::Env0Worker::new(
                &cfg.name,
                &identity,
                client,
                claims,
                new_actuator(),
                Arc::new(move || auto && leader.may_write(clock.now())),
                follow,
                metrics.env0.clone(),
            );
            notices.connect_env0(Arc::new(handle.clone()));
            Box::new(Env0Parts {
                handle,
                record,
                task: Some(task),
            })
        });
        let mut actuator = new_actuator();
        if let Some((handle, Some(_))) = mirror.as_deref() {
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
            notices,
            env0,
            state_checks,
            coord,
            mirror,
            clock,
            interval: config.daemon.probe_interval,
            timeout: config.daemon.probe_timeout,
            primary,
            standby,
            http,
            engine,
            actuator,
            metrics,
            published: Default::default(),
            admin,
            state: GroupState::Starting,
            since_unix: clock.unix(),
            last_action_error: None,
            failing: HashMap::new(),
            previous_tick: None,
            readyz_sent: None,
            trace: None,
            cfg,
        }
    }

    pub(super) async fn run(mut self: Box<Self>, mut stop: watch::Receiver<bool>) {
        // Each group ticks at its own stable phase within the interval, so groups
        // spread their work instead of all probing at the same instant (and start-up is
        // staggered the same way), and at once on an event on its primary (see
        // `wake`). The time between a group's own scheduled ticks stays the interval.
        let mut schedule = Schedule::new(
            self.clock.now() + phase(&self.cfg.name, self.interval),
            self.interval,
        );
        let mut wakes = Wakes::new(&self.primary, &self.cfg.primary.namespace);
        let mut leases = self.coord.lease_wakes();
        let mut quiet = false;
        let mirror = self
            .mirror
            .as_mut()
            .and_then(|m| m.1.take())
            .map(|task| tokio::spawn(task.run(stop.clone())));
        let env0 = self
            .env0
            .as_mut()
            .and_then(|e| e.task.take())
            .map(|task| tokio::spawn(task.run(stop.clone())));
        loop {
            let due = schedule.next();
            let event = tokio::select! {
                _ = tokio::time::sleep_until(due.into()) => None,
                woken = wakes.changed() => match self.event_cause(quiet, &woken) {
                    Some(cause) => Some((cause, woken.lost_at)),
                    None => continue,
                },
                () = async {
                    if leases.changed().await.is_err() {
                        // The store lives as long as its cluster: never, but never a
                        // busy loop either.
                        std::future::pending::<()>().await;
                    }
                } => {
                    if !self.coord.peer_down_news() {
                        continue;
                    }
                    Some((Cause::PeerVerdict, None))
                }
                _ = stop.wait_for(|s| *s) => break,
            };
            // Events until now are seen by this tick's reads of the caches.
            wakes.seen();
            // Not raced against `stop`: a tick that started finishes its actions. Boxed:
            // the tick's future (probes, decision, actions) is large and lives only
            // while the tick runs, instead of inside every group's task for good.
            let (now_quiet, observed_at) = Box::pin(self.tick(event, due)).await;
            quiet = now_quiet;
            // A peer's verdict is no news of the primary: the schedule stays.
            let anchor = event.filter(|(c, _)| *c != Cause::PeerVerdict);
            schedule.tick_done(anchor.map(|_| observed_at), quiet, self.clock.now());
        }
        // The mirror's pass in flight finishes its write (each one is bounded).
        if let Some(task) = mirror
            && tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
        {
            warn!(group = %self.cfg.name, "state mirror did not stop within 5s");
        }
        // A redeploy in flight ends within its bounds; its claim is already written.
        if let Some(task) = env0
            && tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
        {
            warn!(group = %self.cfg.name, "env0 task did not stop within 5s");
        }
        // Another instance takes over at once instead of after a lease duration.
        self.coord.release().await;
    }

    /// Whether an event on the primary makes the group tick now, and why: only when
    /// its primary was quiet at its last tick, and for a changed Pod or Deployment only
    /// when one of its workloads fails now in the caches.
    fn event_cause(&self, quiet: bool, woken: &Woken) -> Option<Cause> {
        if !quiet {
            return None;
        }
        if woken.lost_at.is_some() {
            return Some(Cause::WatchBroken);
        }
        if !(woken.pods || woken.deployments)
            || probe::cached::primary_workloads_pass(&self.primary, &self.cfg)
        {
            return None;
        }
        Some(if woken.pods {
            Cause::PodReadiness
        } else {
            Cause::DeploymentReadiness
        })
    }

    /// One tick's finished observation, and when the primary's `/readyz` answer in it
    /// was sent. Beside the probes of both clusters, the standby's remote state checks
    /// are gathered and the group's Leases read (the leader Lease kept or taken, the
    /// other instances' verdicts returned); the volume, freshness and drift checks are
    /// then judged from the caches. The `/readyz` answer was sent after the one of the
    /// previous tick (unless `fresh` is false: the current slot's answer, for a tick that
    /// is no news of the primary) and, for a lost watch, after the loss.
    async fn observe(
        &mut self,
        started: Instant,
        wall_unix: f64,
        lost_at: Option<Instant>,
        fresh: bool,
    ) -> (Observation, Instant) {
        let recorded = self.engine.recorded_primary_names();
        let after_previous = self
            .readyz_sent
            .filter(|_| fresh)
            .map(|t| t + Duration::from_nanos(1));
        let not_before = after_previous.max(lost_at);
        let ((primary, sent), mut standby, state_checks, observers) = tokio::join!(
            probe::cached::probe_primary_since(
                &self.primary,
                &self.cfg,
                &self.http,
                self.timeout,
                &recorded,
                not_before,
            ),
            probe::cached::probe_standby(&self.standby, &self.cfg, self.timeout),
            self.state_checks.gather(&self.http),
            self.coord.sync(started, wall_unix),
        );
        standby.state_checks = state_checks;
        let mut obs = Observation {
            wall_unix,
            primary,
            standby,
            observers,
        };
        self.state_checks.evaluate(&mut obs, wall_unix);
        (obs, sent)
    }

    /// One tick, on schedule (`event` is `None`, `due` its deadline) or for an event:
    /// observe, decide (leadership is an input of the decision), carry out the
    /// decision's actions when it says so, publish the verdict, send the notices, and
    /// hand one [`TickReport`] to every sink. Returns whether every primary signal
    /// passed, and the instant observed: the later of the tick's start and the sending
    /// of its `/readyz` answer.
    async fn tick(
        &mut self,
        event: Option<(Cause, Option<Instant>)>,
        due: Instant,
    ) -> (bool, Instant) {
        let started = self.clock.now();
        // A scheduled tick counts as of its deadline (it may start late on a busy
        // runtime; see `Engine::step_due`); an event tick as of its start.
        let due = if event.is_some() { started } else { due };
        let wall = self.clock.unix();
        self.admin.progress(&self.cfg.name);
        let cause = event.map(|(c, _)| c);
        if let Some(cause) = cause {
            debug!(group = %self.cfg.name, cause = cause.as_str(), "event tick");
        }
        let lost_at = event.and_then(|(_, at)| at);
        let fresh = cause != Some(Cause::PeerVerdict);
        let (obs, sent) = self.observe(started, wall, lost_at, fresh).await;
        self.readyz_sent = self.readyz_sent.max(Some(sent));
        self.admin.progress(&self.cfg.name);

        let leadership = if self.coord.may_write(self.clock.now()) {
            Leadership::Leads
        } else {
            Leadership::Follows
        };
        let decision = self.engine.step_due(started, due, &obs, leadership);
        if decision.state_changed {
            self.state_changed(&decision, wall);
        }
        self.notices.observe(&obs);
        if let (Some(e), Ok(record)) = (&self.env0, &obs.standby.record) {
            e.record.send_replace(Some(record.clone()));
        }
        let actions = if decision.acts {
            self.execute(&decision, &obs, started).await
        } else {
            if decision.would_promote() && decision.state_changed && leadership == Leadership::Leads
            {
                warn!(group = %self.cfg.name, "observe mode: would promote the standby now");
            }
            Vec::new()
        };
        // The verdict is published after the actions: a promotion's writes do not wait
        // for this instance's observer Lease (the other instances read it; the leader's
        // own decision never does).
        self.coord.publish(&decision, wall).await;

        // Only the leader sends notices.
        let still_leading = self.coord.may_write(self.clock.now());
        self.notices.flush(&self.actuator, still_leading).await;

        let quiet = decision
            .signals
            .iter()
            .all(|s| s.last_reason == Some(ProbeReason::Ok));
        self.report(&TickReport {
            started,
            wall,
            cause,
            obs: &obs,
            decision: &decision,
            leadership,
            actions,
        });
        (quiet, started.max(sent))
    }

    /// Logs a change of the group's state with its reason codes.
    fn state_changed(&mut self, decision: &Decision, wall: f64) {
        let group = self.cfg.name.as_str();
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

    /// Every sink of a tick, fed from its one report: the trace, the metrics, the
    /// mirror's gate and `/status`.
    fn report(&mut self, tick: &TickReport<'_>) {
        let TickReport {
            started,
            wall,
            cause,
            obs,
            decision,
            leadership,
            ..
        } = *tick;
        let leading = leadership == Leadership::Leads;
        let group = self.cfg.name.as_str();
        if let Some(trace) = &self.trace {
            trace.record(group, started, cause.map(Cause::as_str), obs);
        }
        if let Some(cause) = cause {
            self.metrics.event_tick(group, cause.as_str());
        }
        self.report_probes(obs);
        for done in &tick.actions {
            self.report_action(done, obs);
        }
        // A non-leader's would-be promotion is the leader's to count.
        let would_promote = decision.would_promote() && leading;
        let gauges = crate::metrics::DecisionGauges::of(decision, would_promote);
        self.published.publish(&self.metrics, group, gauges);
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
            if let Some(guards) = &obs.standby.guards {
                self.metrics.observe_guards(group, guards, active);
            }
        }
        self.metrics
            .set_replicas(group, Side::Primary, obs.primary.deployments.as_deref());
        self.metrics
            .set_replicas(group, Side::Standby, obs.standby.deployments.as_deref());
        let mut status = group_status(
            group,
            self.since_unix,
            self.last_action_error.clone(),
            decision,
            obs,
            wall,
        );
        status.coordination = Some(self.coord.status(self.clock.now()));
        status.drift = self.state_checks.drift_status();
        self.state_checks
            .report(&self.metrics.state, group, obs, status.drift.as_ref());
        if let Some((mirror, _)) = self.mirror.as_deref() {
            mirror.on_tick(decision, leading);
            status.mirror = Some(mirror.status(self.clock.unix()));
        }
        status.env0 = self.env0.as_ref().map(|e| e.handle.status());
        self.admin.tick_done(status, self.clock.unix());
        let took = self.clock.now().saturating_duration_since(started);
        self.metrics
            .tick_done(group, took.as_secs_f64(), self.clock.unix());
    }

    /// The metrics of one action carried out in this tick.
    fn report_action(&self, done: &ActionDone<'_>, obs: &Observation) {
        let group = self.cfg.name.as_str();
        let ActionDone {
            action,
            ok,
            at_unix,
        } = *done;
        self.metrics.observe_action(group, action.kind(), ok);
        if !ok {
            return;
        }
        match action {
            Action::RecordPromoting { .. } => self.metrics.promotion_started(group, at_unix),
            Action::RecordPromoted { .. } => {
                let seconds = promotion_seconds(obs, at_unix);
                self.metrics.promotion_finished(group, true, seconds);
            }
            Action::RecordFailed { .. } => self.metrics.promotion_finished(group, false, None),
            Action::RestoreRecord { .. } => self.metrics.record_restored(group),
            _ => {}
        }
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

    /// Runs the decision's actions in order and feeds each result back to the engine;
    /// returns each action run and whether it succeeded. A failed `promoting` record
    /// write stops the rest: nothing is scaled up without a record (invariant 2). A
    /// failure is logged when it starts or changes, not every tick; repeats are counted
    /// in `kube_failover_actions_total`.
    async fn execute<'d>(
        &mut self,
        decision: &'d Decision,
        obs: &Observation,
        now: Instant,
    ) -> Vec<ActionDone<'d>> {
        let group = self.cfg.name.clone();
        let group = group.as_str();
        let reasons: Vec<&str> = decision.reasons.iter().map(|r| r.as_str()).collect();
        let mut failed = None;
        let mut done = Vec::with_capacity(decision.actions.len());
        let mut promoted_failed = None;
        for action in &decision.actions {
            let kind = action.kind();
            if action.held_by_failed_promoted(promoted_failed) {
                continue; // the `promoted` record was not written: the next tick retries
            }
            if !self.coord.may_write(self.clock.now()) {
                warn!(
                    group,
                    action = kind,
                    "no longer the leader: remaining actions not run"
                );
                break;
            }
            let event = match action {
                Action::AnnouncePromoted { epoch } => {
                    self.notices.promotion_event(*epoch, &self.actuator).await
                }
                _ => None,
            };
            let result = self.actuator.execute_with(action, obs, event).await;
            self.admin.progress(group);
            let at_unix = self.clock.unix();
            // A report that left something undone (a stale lock not deleted) is a
            // failure, after the notices took what it did.
            let result = match result {
                Ok(report) => {
                    self.notices.written(&report);
                    match report.left_undone() {
                        Some(why) => Err(Failure::Undone(why)),
                        None => Ok(report),
                    }
                }
                Err(e) => Err(Failure::Call(e)),
            };
            done.push(ActionDone {
                action,
                ok: result.is_ok(),
                at_unix,
            });
            if let (Action::RecordPromoted { epoch }, Err(_)) = (action, &result) {
                promoted_failed = Some(*epoch);
            }
            match result {
                Ok(report) => {
                    // As of the write's end: the guards' isolation bound runs from the
                    // moment the `promoting` record is known written.
                    self.engine.handle_result(self.clock.now(), action, true);
                    if let Some(stored) = &report.record {
                        self.engine.record_stored(stored);
                    }
                    if report.changed() {
                        info!(group, action = kind, ?reasons, changes = %report, "action done");
                    }
                    if let Some((_, n)) = self.failing.remove(kind) {
                        info!(group, action = kind, failures = n, "action succeeded again");
                    }
                    log_success(group, action, obs, at_unix);
                }
                Err(e) => {
                    self.engine.handle_result(now, action, false);
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
                        error!(group, action = kind, reason = label, error = %message, ?reasons, "action failed");
                    }
                    failed = Some(format!("{kind}: {message}"));
                    if matches!(action, Action::RecordPromoting { .. }) {
                        break;
                    }
                }
            }
        }
        self.last_action_error = failed;
        done
    }
}

/// Why an action counts as failed.
enum Failure {
    /// Its call failed.
    Call(crate::actuate::ActuateError),
    /// Its calls were made but left something undone.
    Undone(String),
}

impl Failure {
    /// A bounded label for logs.
    fn reason(&self) -> &'static str {
        match self {
            Failure::Call(e) => e.reason(),
            Failure::Undone(_) => "partial",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Call(e) => write!(f, "{}", chain(e)),
            Failure::Undone(why) => f.write_str(why),
        }
    }
}

/// What one tick saw, decided and did: the one input of every sink.
struct TickReport<'a> {
    /// When the tick started (monotonic).
    started: Instant,
    /// The same instant on the wall clock.
    wall: f64,
    /// Why the tick ran early; `None` for a scheduled tick.
    cause: Option<Cause>,
    obs: &'a Observation,
    decision: &'a Decision,
    leadership: Leadership,
    /// The actions carried out, in order.
    actions: Vec<ActionDone<'a>>,
}

/// One action carried out.
struct ActionDone<'a> {
    action: &'a Action,
    ok: bool,
    /// When it ended (wall clock).
    at_unix: f64,
}

/// Seconds since the promotion of the record in `obs` started, as of `now_unix`.
fn promotion_seconds(obs: &Observation, now_unix: f64) -> Option<f64> {
    let started = obs.standby.record.as_ref().ok()?.promoted_at_unix?;
    Some(now_unix - started as f64)
}

/// The log line of an action that succeeded (at `at_unix`), for those that change what
/// runs where.
fn log_success(group: &str, action: &Action, obs: &Observation, at_unix: f64) {
    match action {
        Action::RecordPromoting { epoch, reason, .. } => {
            warn!(group, epoch, reason = %reason, "promotion started: standby is being scaled up");
        }
        Action::RecordPromoted { epoch } => {
            let seconds = promotion_seconds(obs, at_unix);
            info!(
                group,
                epoch, seconds, "promotion complete: the standby is active and Ready"
            );
        }
        Action::RecordFailed { epoch, reason } => {
            error!(group, epoch, reason = %reason, "promotion failed: the standby is not Ready; retrying");
        }
        Action::FencePrimary { .. } => {
            warn!(group, "old primary fenced: its workloads are scaled to 0");
        }
        Action::Announce { reason } => {
            warn!(group, reason = %reason, "condition began; Event recorded");
        }
        _ => {}
    }
}

/// A stable offset within `interval` for the group named `name` (FNV-1a of the name):
/// the same on every start, spread evenly over many groups.
pub(super) fn phase(name: &str, interval: Duration) -> Duration {
    let hash = kube_failover_core::text::stable_hash(name);
    let nanos = u64::try_from(interval.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_nanos(hash % nanos)
}

#[cfg(test)]
mod tick_tests;

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

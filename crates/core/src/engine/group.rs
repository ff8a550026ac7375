//! The per-group state machine. The failover record (read from the standby cluster every
//! tick) is the source of truth for which side is active; the engine only remembers what
//! it needs between ticks: signal hysteresis, timers, retry backoffs and the last record
//! it saw (to write it back if it disappears).

use super::signal::Signal;
use super::{Decision, GroupState, Leadership, ReasonCode};
use crate::checks::StateCheck;
use crate::model::{
    Action, DeploymentRef, DeploymentView, Evidence, FailoverRecord, FencedBy, GuardBeat,
    Observation, ProbeReason, RecordPhase, Side, SignalId, Verdict,
};
use crate::policy::{Mode, PolicyConfig};
use std::time::{Duration, Instant};

/// Longest wait between two retries of a failed promotion or correction.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60);
/// Fencing is retried sooner: two active agents are the worst outcome.
const FENCE_BACKOFF_INTERVALS: u32 = 2;

/// What the engine needs to know of the configuration.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The probe interval: one tick.
    pub interval: Duration,
    /// The group's `[groups.policy]`.
    pub policy: PolicyConfig,
    /// Observe or auto.
    pub mode: Mode,
    /// The primary's signals, in the order `/status` and metrics list them. Outcomes
    /// are matched to them by id.
    pub signals: Vec<SignalId>,
    /// `[groups.state] clear_stale_locks`: a completed promotion deletes the standby's
    /// Terraform locks taken before it started ([`Action::ClearStaleLocks`]).
    pub clear_stale_locks: bool,
}

/// Exponential retry state of one kind of action.
#[derive(Debug, Default, Clone, Copy)]
struct Backoff {
    failures: u32,
    next_at: Option<Instant>,
}

impl Backoff {
    fn ready(&self, now: Instant) -> bool {
        self.next_at.is_none_or(|at| now >= at)
    }

    /// Schedules the next try: `interval × 2^failures`, at most `cap`.
    fn schedule(&mut self, now: Instant, interval: Duration, cap: Duration) {
        let factor = 2u32.saturating_pow(self.failures.min(16));
        let wait = interval.saturating_mul(factor).min(cap);
        self.failures = self.failures.saturating_add(1);
        self.next_at = now.checked_add(wait);
    }

    fn reset(&mut self) {
        *self = Backoff::default();
    }
}

/// One group's engine. Feed it every tick with [`Engine::step`], and the result of every
/// action it asked for with [`Engine::handle_result`].
#[derive(Debug)]
pub struct Engine {
    settings: EngineSettings,
    started: Instant,
    ticks: u64,
    last_tick: Option<(Instant, f64)>,
    signals: Vec<Signal>,
    state: GroupState,
    frozen_until: Option<Instant>,
    freeze_reason: ReasonCode,
    /// Last record phase and epoch known, kept while the record is unreadable or lost.
    known: Option<(RecordPhase, u64)>,
    /// The last record read that existed in the cluster: what a lost record is written
    /// back from.
    last_record: Option<FailoverRecord>,
    /// The epoch of a promotion seen completed by another writer this tick.
    completed_elsewhere: Option<u64>,
    /// The primary has been seen healthy since start: before that nothing may promote.
    seen_healthy: bool,
    /// The primary Deployments that wanted replicas at the last healthy observation.
    active_primary: Vec<DeploymentRef>,
    /// Wall time of the last promotion start this engine knows of (record or own).
    last_promotion_wall: Option<f64>,
    /// Wall time of the last failback (record, or first seen).
    last_failback_wall: Option<f64>,
    /// When the current promotion was first seen in progress (monotonic).
    promotion_seen_at: Option<Instant>,
    promote_retry: Backoff,
    fence_retry: Backoff,
    correct_retry: Backoff,
    /// Set for one tick when the record showed a promotion this engine did not start.
    resumed: bool,
    /// Since when neither side has run the workload.
    no_active_since: Option<Instant>,
    /// Conditions announced with an Event and not over yet.
    announced: Vec<ReasonCode>,
    /// The watcher-is-blind Event was sent for the current episode.
    blind_announced: bool,
    /// The highest epoch found on standby Deployments: a new promotion goes above it.
    epoch_floor: u64,
    /// The guards beside the primary's agents with `on_isolation = "stop"`, as last
    /// read (identity, isolation bound): waited for while the heartbeats are unreadable.
    stop_guards: Vec<(String, Duration)>,
    /// The promotion epoch the guard wait counts for, and since when: the moment the
    /// `promoting` record was known written (`None` until then).
    guard_wait_from: Option<(u64, Option<Instant>)>,
    /// This tick's decision is carried out: auto mode, and this instance leads.
    acts: bool,
}

impl Engine {
    /// A new engine; `now` starts the startup grace.
    pub fn new(settings: EngineSettings, now: Instant) -> Self {
        let policy = &settings.policy;
        let signals = settings
            .signals
            .iter()
            .map(|id| {
                Signal::new(
                    id.clone(),
                    policy.failure_threshold,
                    policy.success_threshold,
                    super::signal::min_spacing(settings.interval),
                )
            })
            .collect();
        Engine {
            signals,
            started: now,
            ticks: 0,
            last_tick: None,
            state: GroupState::Starting,
            frozen_until: None,
            freeze_reason: ReasonCode::FreezeHold,
            known: None,
            last_record: None,
            completed_elsewhere: None,
            seen_healthy: false,
            active_primary: Vec::new(),
            last_promotion_wall: None,
            last_failback_wall: None,
            promotion_seen_at: None,
            promote_retry: Backoff::default(),
            fence_retry: Backoff::default(),
            correct_retry: Backoff::default(),
            resumed: false,
            no_active_since: None,
            announced: Vec::new(),
            epoch_floor: 0,
            blind_announced: false,
            stop_guards: Vec::new(),
            guard_wait_from: None,
            acts: false,
            settings,
        }
    }

    /// Feeds back the result of an action of the last decision: a record write that
    /// succeeded is known at once (so an unreadable record in the next tick is not
    /// mistaken for the older one); a scaling action that failed is retried after a
    /// backoff instead of every tick.
    pub fn handle_result(&mut self, now: Instant, action: &Action, succeeded: bool) {
        let interval = self.settings.interval;
        match (action, succeeded) {
            (Action::RecordPromoting { epoch, .. }, true) => {
                self.promotion_seen_at.get_or_insert(now);
                self.known = Some((RecordPhase::Promoting, *epoch));
                // The guards' isolation bound runs from the write: a guard that read
                // the record before it still saw `primary`.
                self.guard_wait_from = Some((*epoch, Some(now)));
            }
            (Action::RecordPromoted { epoch }, true) => {
                self.known = Some((RecordPhase::Promoted, *epoch));
            }
            (Action::RecordFailed { epoch, .. }, true) => {
                self.known = Some((RecordPhase::Failed, *epoch));
            }
            (Action::RestoreRecord { record }, true) => {
                self.known = Some((record.effective_phase(), record.epoch));
            }
            (Action::ScaleStandbyUp { .. }, false) => {
                self.promote_retry
                    .schedule(now, interval, MAX_RETRY_BACKOFF);
            }
            (Action::FencePrimary { .. }, true) => self.fence_retry.reset(),
            (Action::FencePrimary { .. }, false) => {
                let cap = interval.saturating_mul(FENCE_BACKOFF_INTERVALS);
                self.fence_retry.schedule(now, interval, cap);
            }
            (Action::ScaleStandbyDown { .. }, true) => self.correct_retry.reset(),
            (Action::ScaleStandbyDown { .. }, false) => {
                self.correct_retry
                    .schedule(now, interval, MAX_RETRY_BACKOFF);
            }
            _ => {}
        }
    }

    /// The record as a record action left it stored (written by it or found already
    /// so): from now on the last copy seen. A record lost right after this daemon wrote
    /// it (a `promoting` whose scale-up has not annotated anything yet) is written back
    /// as this, never as the older copy read before the write, whose epoch the next
    /// promotion would reuse.
    pub fn record_stored(&mut self, stored: &FailoverRecord) {
        if stored.exists()
            && self
                .last_record
                .as_ref()
                .is_none_or(|last| stored.epoch >= last.epoch)
        {
            self.last_record = Some(stored.clone());
        }
    }

    /// The settings it was built with.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// The state after the last step.
    pub fn state(&self) -> GroupState {
        self.state
    }

    /// The primary Deployments named in the last record seen: the probe reads them by
    /// name too, so a relabelled or renamed Deployment is still fenced.
    pub fn recorded_primary_names(&self) -> Vec<String> {
        self.last_record
            .iter()
            .flat_map(|r| &r.primary_deployments)
            .map(|d| d.name.clone())
            .collect()
    }

    /// One tick of the instance that leads the group: observation in, decision out.
    pub fn step(&mut self, now: Instant, obs: &Observation) -> Decision {
        self.step_due(now, now, obs, Leadership::Leads)
    }

    /// One tick that started at `now` and was due at `due` (a scheduled tick that the
    /// runtime got to late: its deadline; an event tick: `now`). The spacing of counted
    /// failures is measured between due times, so a late tick followed by one on time
    /// (both one interval apart by their deadlines) never drops a failure; everything
    /// else, the loop's stall detection included, uses `now`. A `due` after `now` is
    /// taken as `now`.
    ///
    /// `leadership` is whether this instance leads the group now: only the leader's
    /// decision is carried out ([`Decision::acts`]); an instance that follows decides as
    /// in observe mode (a promotion it would start is `would_promote`), so its verdict
    /// and its reasons are the same as the leader's would be.
    pub fn step_due(
        &mut self,
        now: Instant,
        due: Instant,
        obs: &Observation,
        leadership: Leadership,
    ) -> Decision {
        self.ticks = self.ticks.saturating_add(1);
        self.acts = self.settings.mode == Mode::Auto && leadership == Leadership::Leads;
        let mut reasons = Vec::new();

        // Self-distrust first: evidence gathered while the watcher may be blind must not
        // count toward a promotion.
        let distrust = self.distrust(now, obs);
        self.last_tick = Some((now, obs.wall_unix));
        match distrust {
            Some(ReasonCode::LoopStalled) => self.restart_after_stall(now),
            Some(code) => self.freeze(now, code),
            None => self.feed_signals(due.min(now), obs),
        }

        let down_count = self.signals.iter().filter(|s| s.counts_down()).count();
        let primary_down =
            u32::try_from(down_count).unwrap_or(u32::MAX) >= self.settings.policy.quorum;
        // A tick the watcher distrusts proves nothing healthy either (after a stall the
        // signals start afresh and would read as passing).
        let primary_healthy =
            distrust.is_none() && self.signals.iter().all(|s| s.is_up() && !s.is_failing());
        if primary_healthy {
            self.seen_healthy = true;
            if let Some(views) = obs.primary.deployments.as_deref() {
                self.active_primary = views
                    .iter()
                    .filter(|d| d.desired > 0)
                    .map(|d| DeploymentRef {
                        name: d.name.clone(),
                        uid: d.uid.clone(),
                    })
                    .collect();
            }
        }
        let (standby_fit, unfit_reasons) = standby_fitness(obs);

        let mut actions = Vec::new();
        let mut unexpected_standby_replicas = 0;
        let restore = self.lost_record(obs);
        let record_phase = match &restore {
            Some(r) => self.known.or(Some((r.effective_phase(), r.epoch))),
            None => self.update_record(now, obs),
        };
        if std::mem::take(&mut self.resumed) {
            reasons.push(ReasonCode::ResumedFromRecord);
        }
        self.remember_stop_guards(obs);

        let state = if let Some(record) = restore {
            // Invariant 2: a lost record is never a failback, nor is one whose epoch went
            // back. Write it back first; nothing is scaled in either direction until
            // that succeeded.
            reasons.push(if record.resource_version.is_some() {
                ReasonCode::RecordRegressed
            } else {
                ReasonCode::RecordLost
            });
            actions.push(Action::RestoreRecord {
                record: Box::new(record),
            });
            match record_phase {
                Some((phase, _)) if phase.standby_active() => state_of(phase),
                _ => self.state,
            }
        } else {
            match record_phase {
                Some((phase @ (RecordPhase::Promoting | RecordPhase::Failed), epoch)) => {
                    self.fence(now, obs, epoch, &mut actions, &mut reasons);
                    self.record_guard_fence(obs, epoch, &mut actions, &mut reasons);
                    self.drive_promotion(now, obs, phase, epoch, &mut actions, &mut reasons)
                }
                Some((RecordPhase::Promoted, epoch)) => {
                    if self.completed_elsewhere.take() == Some(epoch) {
                        self.completed(epoch, &mut actions);
                    }
                    self.fence(now, obs, epoch, &mut actions, &mut reasons);
                    if self.settings.policy.fence
                        && self.primary_fenced(obs)
                        && matches!(&obs.standby.record, Ok(r) if r.fenced_at.is_none())
                    {
                        actions.push(Action::RecordFenced {
                            epoch,
                            by: FencedBy::Scale,
                        });
                    } else {
                        self.record_guard_fence(obs, epoch, &mut actions, &mut reasons);
                    }
                    GroupState::Promoted
                }
                Some((RecordPhase::Primary, epoch)) => {
                    if let Ok(r) = &obs.standby.record
                        && r.exists()
                        && r.epoch > 0
                        && r.failback_at_unix.is_none()
                    {
                        reasons.push(ReasonCode::FailbackSeen);
                        actions.push(Action::RecordFailback { epoch });
                    }
                    unexpected_standby_replicas =
                        desired_sum(obs.standby.deployments.as_deref()).unwrap_or(0);
                    if unexpected_standby_replicas > 0 {
                        reasons.push(ReasonCode::StandbyUnexpectedReplicas);
                        if primary_healthy && self.settings.policy.correct_standby {
                            if self.correct_retry.ready(now) {
                                actions.push(Action::ScaleStandbyDown { epoch });
                            } else {
                                reasons.push(ReasonCode::RetryBackoff);
                            }
                        }
                    }
                    self.decide_on_primary(
                        now,
                        obs,
                        epoch,
                        primary_down,
                        primary_healthy,
                        (standby_fit, &unfit_reasons),
                        &mut actions,
                        &mut reasons,
                    )
                }
                None => {
                    // Never read the record: nothing is known about which side is
                    // active, so nothing may be written. Say why.
                    reasons.extend(unfit_reasons.iter().copied());
                    if distrust.is_some() || self.is_frozen(now) {
                        reasons.insert(0, self.freeze_reason);
                        GroupState::Frozen
                    } else if primary_down {
                        reasons.insert(0, ReasonCode::PrimaryDownQuorum);
                        GroupState::Blocked
                    } else {
                        GroupState::Starting
                    }
                }
            }
        };

        // An operator's pause or failback holds every action (probes, metrics and the
        // conditions below go on). A record that cannot be read (or is lost) holds by
        // the last copy seen; a lost record is still written back, pause included.
        let mut state = state;
        let hold = match &obs.standby.record {
            Ok(r) if r.exists() => r.hold_at(obs.wall_unix),
            _ => self
                .last_record
                .as_ref()
                .and_then(|r| r.hold_at(obs.wall_unix)),
        };
        if let Some(code) = hold {
            actions.retain(|a| matches!(a, Action::RestoreRecord { .. }));
            reasons
                .retain(|r| !matches!(r, ReasonCode::PromotionStarted | ReasonCode::WouldPromote));
            reasons.insert(0, code);
            state = GroupState::Paused;
        }

        // Invariant 6: both sides active, or neither, is always seen, whatever the config.
        let dual_active = matches!(
            (
                desired_sum(obs.primary.deployments.as_deref()),
                desired_sum(obs.standby.deployments.as_deref()),
            ),
            (Some(p), Some(s)) if p > 0 && s > 0
        );
        if dual_active {
            reasons.insert(0, ReasonCode::DualActive);
        }
        let no_active_side = self.no_active_side(now, obs, record_phase.map(|(p, _)| p));
        if no_active_side {
            reasons.push(ReasonCode::NoActiveSide);
        }
        let blind = (state == GroupState::PrimaryUnobservable)
            .then(|| reasons.first().copied())
            .flatten();
        self.announce(
            &mut actions,
            [
                (ReasonCode::DualActive, dual_active),
                (ReasonCode::NoActiveSide, no_active_side),
            ],
            blind,
        );

        // What this instance publishes as its observer verdict.
        let verdict = if distrust.is_some() || self.is_frozen(now) {
            Verdict::Unknown
        } else if primary_down {
            Verdict::Down
        } else if primary_healthy {
            Verdict::Up
        } else if self.signals.iter().any(|s| s.unobservable().is_some()) {
            Verdict::Unknown
        } else {
            Verdict::Suspect
        };
        let state_changed = state != self.state;
        self.state = state;
        if reasons.is_empty() {
            reasons.push(if primary_healthy {
                ReasonCode::PrimaryHealthy
            } else {
                ReasonCode::SignalsFailing
            });
        }
        dedup_in_order(&mut reasons);
        Decision {
            state,
            reasons,
            actions,
            primary_down,
            standby_fit,
            unexpected_standby_replicas,
            dual_active,
            no_active_side,
            signals: self.signals.iter().map(Signal::snapshot).collect(),
            state_changed,
            verdict,
            warnings: state_warnings(obs),
            acts: self.acts,
        }
    }

    /// Checks whether the watcher's own view can be trusted this tick.
    fn distrust(&self, now: Instant, obs: &Observation) -> Option<ReasonCode> {
        let interval = self.settings.interval;
        if let Some((last_mono, last_wall)) = self.last_tick {
            let mono = now.saturating_duration_since(last_mono);
            if mono > interval.saturating_mul(2) {
                return Some(ReasonCode::LoopStalled);
            }
            let wall = obs.wall_unix - last_wall;
            let tolerance = interval.max(Duration::from_secs(1)).as_secs_f64();
            if (wall - mono.as_secs_f64()).abs() > tolerance {
                return Some(ReasonCode::ClockJump);
            }
        }
        if obs.primary.api.reason.is_unreachable() && obs.standby.api.reason.is_unreachable() {
            return Some(ReasonCode::AllClustersUnreachable);
        }
        None
    }

    /// The loop stalled (a paused process, a starved runtime): what was seen before the
    /// gap cannot be added to what is seen after it, so every signal starts afresh
    /// (down again only after `failure_threshold` failures observed from now on), and
    /// this tick decides nothing (its caches may still be catching up on the gap). No
    /// hold follows: fresh evidence counts from the next tick, so a scheduling hiccup
    /// on a busy host delays a promotion by at most one interval, never by `freeze_for`.
    fn restart_after_stall(&mut self, now: Instant) {
        for s in &mut self.signals {
            s.restart();
        }
        if !self.is_frozen(now) {
            self.frozen_until = Some(now + Duration::from_nanos(1));
            self.freeze_reason = ReasonCode::LoopStalled;
        }
    }

    /// A clock jump or every cluster unreachable: decisions stay frozen for
    /// `freeze_for` (signals go on being fed, so fresh evidence is there when it ends).
    fn freeze(&mut self, now: Instant, code: ReasonCode) {
        // Bounded so the sum cannot overflow: an overflow would read as "not frozen".
        const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);
        self.frozen_until = Some(now + self.settings.policy.freeze_for.min(LONGEST));
        self.freeze_reason = code;
        for s in &mut self.signals {
            s.forget_streak();
        }
    }

    fn is_frozen(&self, now: Instant) -> bool {
        self.frozen_until.is_some_and(|until| now < until)
    }

    /// Feeds each signal its own outcome, by id. A configured signal missing from the
    /// observation is unknown (never down), and an outcome for a signal that is not
    /// configured is ignored. Failures closer than one interval to the previous counted
    /// one are not counted (see the `signal` module).
    ///
    /// A workload signal that cannot be read (`error`: its watch is cut or not trusted)
    /// in a tick where the primary's API gives down evidence is part of that outage,
    /// not a blind spot of the watcher: a flapping API server makes a group
    /// `primary_suspect`, never `primary_unobservable`. Causes on the watcher's side
    /// (401, 403, TLS, a selection that matches nothing) are never excused.
    fn feed_signals(&mut self, now: Instant, obs: &Observation) {
        let api_down = obs.primary.api.reason.evidence() == Evidence::Down;
        for signal in &mut self.signals {
            let reason = obs
                .primary
                .outcome(signal.id())
                .map_or(ProbeReason::Error, |o| o.reason);
            signal.observe(now, reason);
            if api_down
                && reason == ProbeReason::Error
                && matches!(signal.id(), SignalId::Workload(_))
            {
                signal.excuse_unknown();
            }
        }
    }

    /// The record to write back when it is missing although it existed: the last copy
    /// seen (when it recorded a promotion, or holds a pause or a failback: a pause
    /// cannot be known once its record is gone, so it is written back with it), or, when
    /// this daemon never saw one, a promotion proven by the epoch annotation on standby
    /// Deployments that still want replicas.
    ///
    /// Also the record to write over one that exists with an epoch below the last one
    /// seen, or below the epoch a promotion in force annotated on the standby's
    /// Deployments: it was written without knowledge of that promotion (created again
    /// by hand or by a command while it was missing, or put back from an old copy).
    /// Epochs never go back (the guards and the fencing rely on it), so it is written
    /// over, on condition of its resourceVersion, keeping the pause it holds (an
    /// operator's pause stands).
    fn lost_record(&self, obs: &Observation) -> Option<FailoverRecord> {
        let Ok(observed) = &obs.standby.record else {
            return None;
        };
        let exists = observed.exists();
        let from_last = self.last_record.as_ref().filter(|last| {
            if exists {
                observed.epoch < last.epoch
            } else {
                last.epoch > 0
                    || last.effective_phase().standby_active()
                    || last.hold_at(obs.wall_unix).is_some()
            }
        });
        let lost = match from_last {
            Some(last) => last.clone(),
            None => {
                let epoch = obs.standby.active_epoch()?;
                if exists && epoch <= observed.epoch {
                    return None;
                }
                FailoverRecord {
                    phase: Some(RecordPhase::Promoting),
                    epoch,
                    reason: ReasonCode::RecordLost.as_str().to_string(),
                    // Unknown start: the cooldown runs from now, the safe side.
                    promoted_at_unix: Some(obs.wall_unix as i64),
                    ..FailoverRecord::default()
                }
            }
        };
        Some(if exists {
            FailoverRecord {
                resource_version: observed.resource_version.clone(),
                paused_by: observed.paused_by.clone(),
                paused_until_unix: observed.paused_until_unix,
                pause_reason: observed.pause_reason.clone(),
                ..lost
            }
        } else {
            FailoverRecord {
                resource_version: None,
                ..lost
            }
        })
    }

    /// Takes the record's phase when it could be read, else the last known one. A
    /// missing record that never existed starts above every epoch annotation found on
    /// standby Deployments, so a re-created record never repeats an epoch.
    fn update_record(&mut self, now: Instant, obs: &Observation) -> Option<(RecordPhase, u64)> {
        let Ok(rec) = &obs.standby.record else {
            return self.known;
        };
        self.epoch_floor = self.epoch_floor.max(obs.standby.annotated_epoch());
        let phase = rec.effective_phase();
        let epoch = rec.epoch;
        if let Some(t) = rec.promoted_at_unix {
            let t = t as f64;
            self.last_promotion_wall = Some(self.last_promotion_wall.map_or(t, |o| o.max(t)));
        }
        let previous = self.known.map(|(p, _)| p);
        // A promotion completed by another writer (an operator's command, or another
        // instance that stopped leading right after): its stale locks and Event follow
        // here, as after this daemon's own `promoted` write. Not at the first reading.
        self.completed_elsewhere = (phase == RecordPhase::Promoted
            && rec.exists()
            && self
                .known
                .is_some_and(|k| k != (RecordPhase::Promoted, epoch)))
        .then_some(epoch);
        if phase == RecordPhase::Primary {
            if let Some(t) = rec.failback_at_unix {
                self.last_failback_wall = Some(t as f64);
            } else if previous.is_some_and(RecordPhase::standby_active)
                || (rec.exists() && rec.epoch > 0 && self.last_failback_wall.is_none())
            {
                self.last_failback_wall = Some(obs.wall_unix);
            }
        }
        if !phase.standby_active() {
            self.promotion_seen_at = None;
            self.promote_retry.reset();
            self.fence_retry.reset();
        } else if self.promotion_seen_at.is_none() {
            self.promotion_seen_at = Some(now);
            self.resumed = true;
        }
        if rec.exists() {
            self.last_record = Some(rec.clone());
        }
        self.known = Some((phase, epoch));
        self.known
    }

    /// Invariant 3: once a promotion is recorded, the old primary's workloads go to 0
    /// whenever they can be listed (whatever `/readyz` says), before anything else.
    fn fence(
        &mut self,
        now: Instant,
        obs: &Observation,
        epoch: u64,
        actions: &mut Vec<Action>,
        reasons: &mut Vec<ReasonCode>,
    ) {
        if !self.settings.policy.fence {
            return;
        }
        match desired_sum(obs.primary.deployments.as_deref()) {
            Some(0) => {
                // Nothing wants replicas; fenced only once every recorded Deployment
                // was seen at 0 (by name, when a selector no longer matches it).
                reasons.push(if self.primary_fenced(obs) {
                    ReasonCode::PrimaryFenced
                } else {
                    ReasonCode::FencingPrimary
                });
                return;
            }
            Some(_) => {}
            None if !obs.primary.api.passed() => {
                reasons.push(ReasonCode::PrimaryUnreachable);
                return;
            }
            // The API answers but the Deployments could not be listed: try anyway, the
            // actuator re-lists and only scales what it finds above 0.
            None => {}
        }
        reasons.push(ReasonCode::FencingPrimary);
        if self.fence_retry.ready(now) {
            actions.insert(
                0,
                Action::FencePrimary {
                    epoch,
                    names: self.recorded_primary_names(),
                },
            );
        } else {
            reasons.push(ReasonCode::RetryBackoff);
        }
    }

    /// The guards beside the old primary's agents say every one of them stopped at
    /// `epoch`: fenced, though its API may not answer (the scale to 0 follows when it
    /// does). Recorded once, as `fenced_by = guard`.
    fn record_guard_fence(
        &self,
        obs: &Observation,
        epoch: u64,
        actions: &mut Vec<Action>,
        reasons: &mut Vec<ReasonCode>,
    ) {
        let stopped = obs
            .standby
            .guards
            .as_ref()
            .is_some_and(|g| g.primary_stopped_at(epoch));
        if !self.settings.policy.fence || !stopped {
            return;
        }
        reasons.push(ReasonCode::PrimaryStoppedByGuards);
        if matches!(&obs.standby.record, Ok(r) if r.fenced_at.is_none()) {
            actions.push(Action::RecordFenced {
                epoch,
                by: FencedBy::Guard,
            });
        }
    }

    /// Keeps the identities and isolation bounds of the primary's guards in stop mode
    /// from every readable set of heartbeats (stale ones included: an isolated guard's
    /// heartbeat is stale), for the ticks in which they cannot be read.
    fn remember_stop_guards(&mut self, obs: &Observation) {
        let Some(guards) = &obs.standby.guards else {
            self.stop_guards.clear();
            return;
        };
        if let Ok(beats) = &guards.beats {
            self.stop_guards = beats
                .iter()
                .filter(|b| b.side == Side::Primary)
                .filter_map(|b| Some((b.identity.clone(), b.isolation_bound()?)))
                .collect();
        }
    }

    /// Whether the standby's scale-up for the promotion at `epoch` waits for guards
    /// beside the primary's agents with `on_isolation = "stop"`. Each is waited for
    /// until its fresh heartbeat says `stopped` at `epoch` or later, or until its
    /// isolation bound has passed since the `promoting` record was known written (by
    /// then it has read that record and stopped its agent, or has been cut off long
    /// enough to stop it by itself). The bound runs from the record, not from the
    /// heartbeat's age: a guard reads the record more often than it writes its
    /// heartbeat, so its last write says nothing of its last read. Heartbeats that
    /// cannot be read prove no stop: every guard remembered in stop mode is waited
    /// for. A guard never seen, or in `keep` mode, is not.
    fn wait_for_guards(&mut self, now: Instant, obs: &Observation, epoch: u64) -> bool {
        let Some(bound) = self.guards_to_wait_for(obs, epoch) else {
            return false;
        };
        let from = match self.guard_wait_from {
            Some((e, Some(from))) if e == epoch => from,
            // Seen in the record but not written by this instance (a restart, another
            // leader): counted from the next tick, which starts after the read that
            // saw it, so never before the record was written.
            Some((e, None)) if e == epoch => {
                self.guard_wait_from = Some((epoch, Some(now)));
                return true;
            }
            _ => {
                self.guard_wait_from = Some((epoch, None));
                return true;
            }
        };
        now.saturating_duration_since(from) < bound
    }

    /// The longest isolation bound of the primary's guards in stop mode whose heartbeat
    /// does not say `stopped` at `epoch` (fresh, at that epoch or later), or of every
    /// one remembered while the heartbeats cannot be read; `None` when there is none to
    /// wait for.
    fn guards_to_wait_for(&self, obs: &Observation, epoch: u64) -> Option<Duration> {
        let beats = match &obs.standby.guards.as_ref()?.beats {
            Ok(beats) => beats,
            Err(_) => return self.stop_guards.iter().map(|(_, bound)| *bound).max(),
        };
        beats
            .iter()
            .filter(|b| b.side == Side::Primary)
            .filter(|b| !b.proves_stop_at(epoch))
            .filter_map(GuardBeat::isolation_bound)
            .max()
    }

    /// Every primary Deployment is seen at 0: at least one was seen, none wants
    /// replicas, and every Deployment named in the record was seen at 0 or is gone.
    /// An empty selection never counts (a relabelled Deployment may still run).
    fn primary_fenced(&self, obs: &Observation) -> bool {
        let Some(views) = obs.primary.deployments.as_deref() else {
            return false;
        };
        if views.is_empty() || desired_sum(Some(views)) != Some(0) {
            return false;
        }
        self.last_record
            .iter()
            .flat_map(|r| &r.primary_deployments)
            .all(|d| views.iter().any(|v| v.name == d.name) || obs.primary.absent.contains(&d.name))
    }

    /// What follows a completed promotion: the stale locks and the Event.
    fn completed(&self, epoch: u64, actions: &mut Vec<Action>) {
        if self.settings.clear_stale_locks {
            actions.push(Action::ClearStaleLocks { epoch });
        }
        actions.push(Action::AnnouncePromoted { epoch });
    }

    /// Invariant 2: a recorded promotion completes or fails loudly, never flips back.
    fn drive_promotion(
        &mut self,
        now: Instant,
        obs: &Observation,
        phase: RecordPhase,
        epoch: u64,
        actions: &mut Vec<Action>,
        reasons: &mut Vec<ReasonCode>,
    ) -> GroupState {
        if obs.standby.record.is_err() || !obs.standby.api.passed() {
            reasons.push(ReasonCode::StandbyApiDown);
            return state_of(phase);
        }
        let views = obs.standby.deployments.as_deref();
        if standby_ready(views) {
            reasons.push(ReasonCode::StandbyReady);
            actions.push(Action::RecordPromoted { epoch });
            self.completed(epoch, actions);
            return state_of(phase);
        }
        reasons.push(ReasonCode::AwaitingStandbyReady);
        let scaled = views.is_some_and(|v| !v.is_empty() && v.iter().all(|d| d.desired >= 1));
        let seen = *self.promotion_seen_at.get_or_insert(now);
        let interval = self.settings.interval;
        match phase {
            RecordPhase::Promoting => {
                if !scaled {
                    if self.wait_for_guards(now, obs, epoch) {
                        reasons.push(ReasonCode::WaitingForGuardStop);
                    } else if self.promote_retry.ready(now) {
                        actions.push(Action::ScaleStandbyUp { epoch });
                    } else {
                        reasons.push(ReasonCode::RetryBackoff);
                    }
                }
                if now.saturating_duration_since(seen) >= self.settings.policy.promotion_timeout {
                    reasons.insert(0, ReasonCode::PromotionTimeout);
                    actions.push(Action::RecordFailed {
                        epoch,
                        reason: ReasonCode::PromotionTimeout,
                    });
                    self.promote_retry
                        .schedule(now, interval, MAX_RETRY_BACKOFF);
                    return GroupState::Failed;
                }
                GroupState::Promoting
            }
            _ => {
                reasons.insert(0, ReasonCode::PromotionTimeout);
                if !scaled && self.wait_for_guards(now, obs, epoch) {
                    reasons.push(ReasonCode::WaitingForGuardStop);
                } else if self.promote_retry.ready(now) {
                    actions.push(Action::ScaleStandbyUp { epoch });
                    self.promote_retry
                        .schedule(now, interval, MAX_RETRY_BACKOFF);
                }
                GroupState::Failed
            }
        }
    }

    /// The primary is (per the record) the active side: watch it, and promote when it is
    /// down and everything allows it (invariant 1).
    #[allow(clippy::too_many_arguments)]
    fn decide_on_primary(
        &mut self,
        now: Instant,
        obs: &Observation,
        epoch: u64,
        primary_down: bool,
        primary_healthy: bool,
        (standby_fit, unfit_reasons): (bool, &[ReasonCode]),
        actions: &mut Vec<Action>,
        reasons: &mut Vec<ReasonCode>,
    ) -> GroupState {
        let policy = &self.settings.policy;
        if self.is_frozen(now) {
            // Invariant 5: distrust freezes decisions instead of promoting.
            reasons.insert(0, self.freeze_reason);
            return GroupState::Frozen;
        }
        let in_grace = now.saturating_duration_since(self.started) < policy.startup_grace
            || self.ticks < u64::from(policy.failure_threshold);
        // Once the group has left `starting`, the grace still blocks promotion but the
        // state says what is seen (suspect, blocked) instead of going back to starting.
        let still_starting = self.state == GroupState::Starting;
        // Before the group's first complete observation, a workload signal that is
        // unknown only because its watch has not listed yet (hundreds of watches start
        // together) was not read, which is not blindness: the group stays `starting`
        // for as long as the startup grace lasts, then such a signal is judged as any
        // other. A watch that listed once and is lost later is unknown as always.
        let syncing = still_starting
            && !self.seen_healthy
            && obs.primary.watches_starting
            && now.saturating_duration_since(self.started) < policy.startup_grace;
        let blind: Vec<ReasonCode> = self
            .signals
            .iter()
            .filter(|s| {
                !(syncing
                    && matches!(s.id(), SignalId::Workload(_))
                    && s.unobservable() == Some(ProbeReason::Error))
            })
            .filter_map(Signal::unobservable)
            .map(primary_blind_reason)
            .collect();
        if !primary_down {
            if primary_healthy {
                reasons.insert(0, ReasonCode::PrimaryHealthy);
                return GroupState::PrimaryActive;
            }
            if !blind.is_empty() {
                // Invariant 1: the watcher is blind on the primary; it cannot tell, so
                // it must say so loudly and never promote on it.
                reasons.splice(0..0, blind);
                return GroupState::PrimaryUnobservable;
            }
            if !self.seen_healthy && still_starting {
                reasons.insert(
                    0,
                    if syncing {
                        ReasonCode::WatchesStarting
                    } else {
                        ReasonCode::PrimaryNeverHealthy
                    },
                );
                return GroupState::Starting;
            }
            if in_grace {
                reasons.insert(0, ReasonCode::StartupGrace);
                if still_starting {
                    return GroupState::Starting;
                }
            }
            reasons.insert(0, ReasonCode::SignalsFailing);
            return GroupState::PrimarySuspect;
        }
        reasons.insert(0, ReasonCode::PrimaryDownQuorum);
        if !self.seen_healthy {
            // A group that never saw its primary healthy has nothing to fail over from:
            // a wrong namespace, selector or a primary that was never up must not promote.
            reasons.push(ReasonCode::PrimaryNeverHealthy);
            return GroupState::Starting;
        }
        if in_grace {
            reasons.push(ReasonCode::StartupGrace);
            return if still_starting {
                GroupState::Starting
            } else {
                GroupState::Blocked
            };
        }
        if !standby_fit {
            reasons.extend(unfit_reasons.iter().copied());
            return GroupState::Blocked;
        }
        let record_cooldown = obs
            .standby
            .record
            .as_ref()
            .ok()
            .and_then(FailoverRecord::cooldown_from_unix)
            .map(|t| t as f64);
        let cooldown_from = [
            self.last_promotion_wall,
            self.last_failback_wall,
            record_cooldown,
        ]
        .into_iter()
        .flatten()
        .reduce(f64::max);
        if cooldown_from.is_some_and(|t| obs.wall_unix - t < policy.cooldown.as_secs_f64()) {
            reasons.push(ReasonCode::Cooldown);
            return GroupState::Blocked;
        }
        if let Some(code) = self.observer_quorum(obs) {
            // Only this step is gated: fencing and a recorded promotion's completion
            // never wait for other observers.
            reasons.push(code);
            return GroupState::Blocked;
        }
        let epoch = epoch.max(self.epoch_floor).saturating_add(1);
        actions.push(Action::RecordPromoting {
            epoch,
            reason: ReasonCode::PrimaryDownQuorum,
            primary_deployments: self.active_primary.clone(),
        });
        // Only `warn` checks can fail here (`block` ones make the standby unfit): people
        // learn what the new active side lacks as soon as the record says it is active.
        if obs.standby.state_checks.iter().any(|c| !c.passed()) {
            actions.push(Action::WarnStateChecks { epoch });
        }
        // Fence before scaling up: an old primary that can still be listed (unready
        // Pods, a failing /readyz) must never run beside the new one.
        if policy.fence && desired_sum(obs.primary.deployments.as_deref()).is_some_and(|n| n > 0) {
            actions.push(Action::FencePrimary {
                epoch,
                names: self.active_primary.iter().map(|d| d.name.clone()).collect(),
            });
        }
        // Guards in stop mode beside the primary's agents: the scale-up waits until they
        // stopped them (a later tick), never in the tick that writes the record.
        if self.guards_to_wait_for(obs, epoch).is_some() {
            reasons.push(ReasonCode::WaitingForGuardStop);
        } else {
            actions.push(Action::ScaleStandbyUp { epoch });
        }
        if self.acts {
            reasons.push(ReasonCode::PromotionStarted);
            self.promotion_seen_at = Some(now);
            GroupState::Promoting
        } else {
            // The same decision, reported and never carried out.
            reasons.push(ReasonCode::WouldPromote);
            GroupState::PrimaryDown
        }
    }

    /// The quorum of observers, this instance (which sees the primary down) included:
    /// `None` when at least `observers.quorum` fresh observers say `down`, else why not.
    /// An observer is fresh while its verdict is younger than `observers.ttl`; one
    /// identity counts once.
    fn observer_quorum(&self, obs: &Observation) -> Option<ReasonCode> {
        let policy = &self.settings.policy.observers;
        let quorum = usize::try_from(policy.quorum).unwrap_or(usize::MAX);
        if quorum <= 1 {
            return None;
        }
        let ttl = policy.ttl_or_default(self.settings.interval);
        let mut fresh: Vec<(&str, Verdict)> = Vec::new();
        for o in &obs.observers {
            if o.age.is_some_and(|a| a <= ttl) && !fresh.iter().any(|(i, _)| *i == o.identity) {
                fresh.push((&o.identity, o.verdict));
            }
        }
        let down = 1 + fresh.iter().filter(|(_, v)| *v == Verdict::Down).count();
        if 1 + fresh.len() < quorum {
            Some(ReasonCode::ObserverQuorumUnreachable)
        } else if down < quorum {
            Some(ReasonCode::ObserverQuorumNotMet)
        } else {
            None
        }
    }

    /// Neither side runs the workload for longer than `promotion_timeout`: the record
    /// says the standby is active but it is not Ready, or says the primary is active but
    /// both sides are at 0.
    fn no_active_side(
        &mut self,
        now: Instant,
        obs: &Observation,
        phase: Option<RecordPhase>,
    ) -> bool {
        let primary = obs.primary.deployments.as_deref();
        let standby = obs.standby.deployments.as_deref();
        let none_active = match phase {
            Some(p) if p.standby_active() => standby.is_some() && !standby_ready(standby),
            Some(_) => {
                primary.is_some_and(|v| !v.is_empty())
                    && desired_sum(primary) == Some(0)
                    && desired_sum(standby) == Some(0)
            }
            None => false,
        };
        if !none_active {
            self.no_active_since = None;
            return false;
        }
        let since = *self.no_active_since.get_or_insert(now);
        now.saturating_duration_since(since) >= self.settings.policy.promotion_timeout
    }

    /// An Event when a condition begins (once per occurrence): dual-active, no active
    /// side, and the watcher going blind on the primary (named by its cause).
    fn announce<const N: usize>(
        &mut self,
        actions: &mut Vec<Action>,
        conditions: [(ReasonCode, bool); N],
        blind: Option<ReasonCode>,
    ) {
        for (reason, on) in conditions {
            let was = self.announced.contains(&reason);
            if on && !was {
                self.announced.push(reason);
                actions.push(Action::Announce { reason });
            } else if !on && was {
                self.announced.retain(|r| *r != reason);
            }
        }
        if let (Some(reason), false) = (blind, self.blind_announced) {
            actions.push(Action::Announce { reason });
        }
        self.blind_announced = blind.is_some();
    }
}

fn state_of(phase: RecordPhase) -> GroupState {
    match phase {
        RecordPhase::Failed => GroupState::Failed,
        RecordPhase::Promoted => GroupState::Promoted,
        _ => GroupState::Promoting,
    }
}

/// Why the watcher is blind on a primary signal.
fn primary_blind_reason(reason: ProbeReason) -> ReasonCode {
    match reason {
        ProbeReason::Unauthorized => ReasonCode::PrimaryCredentialsRejected,
        ProbeReason::Forbidden => ReasonCode::PrimaryForbidden,
        ProbeReason::Tls => ReasonCode::PrimaryTlsRejected,
        ProbeReason::NotFound => ReasonCode::PrimaryWorkloadMissing,
        ProbeReason::Decode => ReasonCode::PrimaryAnswerUndecodable,
        ProbeReason::Throttled => ReasonCode::PrimaryThrottled,
        _ => ReasonCode::PrimaryError,
    }
}

/// Why the standby cannot take over, named after the cause (a 403 is `standby_forbidden`,
/// not a missing workload).
fn standby_cause(reason: ProbeReason, otherwise: ReasonCode) -> ReasonCode {
    match reason {
        ProbeReason::Unauthorized => ReasonCode::StandbyCredentialsRejected,
        ProbeReason::Forbidden => ReasonCode::StandbyForbidden,
        ProbeReason::Tls => ReasonCode::StandbyTlsRejected,
        _ => otherwise,
    }
}

fn standby_fitness(obs: &Observation) -> (bool, Vec<ReasonCode>) {
    let mut unfit = Vec::new();
    let standby = &obs.standby;
    if !standby.api.passed() {
        unfit.push(standby_cause(
            standby.api.reason,
            ReasonCode::StandbyApiDown,
        ));
    } else if !standby.workloads.passed() {
        let otherwise = if standby.workloads.reason.is_unreachable() {
            ReasonCode::StandbyApiDown
        } else {
            ReasonCode::StandbyWorkloadMissing
        };
        unfit.push(standby_cause(standby.workloads.reason, otherwise));
    }
    if let Err(outcome) = &standby.record
        && standby.api.passed()
    {
        unfit.push(standby_cause(outcome.reason, ReasonCode::RecordUnreadable));
    }
    // A failing state check with gate `block`, an unanswerable one included: the state
    // the agent needs cannot be shown to be there.
    unfit.extend(
        standby
            .state_checks
            .iter()
            .filter(|c| c.blocks())
            .filter_map(StateCheck::reason_code),
    );
    dedup_in_order(&mut unfit);
    (unfit.is_empty(), unfit)
}

/// The failing state checks with gate `warn`: they never stop a promotion, and are
/// listed so that people know what the standby lacks.
fn state_warnings(obs: &Observation) -> Vec<ReasonCode> {
    let mut warnings: Vec<ReasonCode> = obs
        .standby
        .state_checks
        .iter()
        .filter(|c| c.warns())
        .filter_map(StateCheck::reason_code)
        .collect();
    dedup_in_order(&mut warnings);
    warnings
}

fn desired_sum(views: Option<&[DeploymentView]>) -> Option<i32> {
    views.map(|v| {
        v.iter()
            .fold(0i32, |acc, d| acc.saturating_add(d.desired.max(0)))
    })
}

/// Every selected standby Deployment wants at least one replica and has them all
/// available and Ready.
fn standby_ready(views: Option<&[DeploymentView]>) -> bool {
    views.is_some_and(|v| {
        !v.is_empty()
            && v.iter()
                .all(|d| d.desired >= 1 && d.available >= d.desired && d.ready_pods >= d.desired)
    })
}

fn dedup_in_order(reasons: &mut Vec<ReasonCode>) {
    let mut seen = Vec::with_capacity(reasons.len());
    reasons.retain(|r| {
        if seen.contains(r) {
            false
        } else {
            seen.push(*r);
            true
        }
    });
}

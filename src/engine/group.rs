//! The per-group state machine. The failover record (read from the standby cluster every
//! tick) is the source of truth for which side is active; the engine only remembers what
//! it needs between ticks: signal hysteresis, timers and the last record it saw.

use super::signal::Signal;
use super::{Decision, GroupState, ReasonCode};
use crate::config::{Mode, PolicyConfig};
use crate::model::{Action, DeploymentView, Observation, RecordPhase};
use std::time::{Duration, Instant};

/// Longest wait between two retries of a failed promotion.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(60);

/// What the engine needs to know of the configuration.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub interval: Duration,
    pub policy: PolicyConfig,
    pub mode: Mode,
    /// Names of the primary's signals, in the order of the observation:
    /// `api`, then the workloads, then the HTTP checks.
    pub signal_names: Vec<String>,
}

/// One group's engine. Feed it every tick with [`Engine::step`].
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
    /// Last record phase and epoch read successfully, kept while the record is unreadable.
    known: Option<(RecordPhase, u64)>,
    /// Wall time of the last promotion start this engine knows of (record or own).
    last_promotion_wall: Option<f64>,
    /// Wall time at which the record was seen going back to `primary` (a failback).
    last_failback_wall: Option<f64>,
    /// When the current promotion was first seen in progress (monotonic).
    promotion_seen_at: Option<Instant>,
    retry_count: u32,
    next_retry_at: Option<Instant>,
    /// Set for one tick when the record showed a promotion this engine did not start.
    resumed: bool,
}

impl Engine {
    /// A new engine; `now` starts the startup grace.
    pub fn new(settings: EngineSettings, now: Instant) -> Self {
        let policy = &settings.policy;
        let signals = settings
            .signal_names
            .iter()
            .map(|n| {
                Signal::new(
                    n.clone(),
                    policy.failure_threshold,
                    policy.success_threshold,
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
            last_promotion_wall: None,
            last_failback_wall: None,
            promotion_seen_at: None,
            retry_count: 0,
            next_retry_at: None,
            resumed: false,
            settings,
        }
    }

    /// Tells the engine about a record write that succeeded, so that a record that
    /// cannot be read in the next tick is not mistaken for the older one.
    pub fn record_written(&mut self, now: Instant, phase: RecordPhase, epoch: u64) {
        if phase.standby_active() && self.promotion_seen_at.is_none() {
            self.promotion_seen_at = Some(now);
        }
        self.known = Some((phase, epoch));
    }

    /// The state after the last step.
    pub fn state(&self) -> GroupState {
        self.state
    }

    /// One tick: observation in, decision out.
    pub fn step(&mut self, now: Instant, obs: &Observation) -> Decision {
        self.ticks += 1;
        let mut reasons = Vec::new();

        // Self-distrust first: evidence gathered while the watcher may be blind must not
        // count toward a promotion.
        let distrust = self.distrust(now, obs);
        self.last_tick = Some((now, obs.wall_unix));
        if let Some(code) = distrust {
            self.freeze(now, code);
        } else {
            self.feed_signals(obs);
        }

        let record_phase = self.update_record(now, obs);
        if std::mem::take(&mut self.resumed) {
            reasons.push(ReasonCode::ResumedFromRecord);
        }
        let down_count = self.signals.iter().filter(|s| !s.is_up()).count();
        let primary_down = down_count as u32 >= self.settings.policy.quorum;
        let primary_healthy = self.signals.iter().all(|s| s.is_up() && !s.is_failing());
        let (standby_fit, unfit_reasons) = standby_fitness(obs);

        let mut actions = Vec::new();
        let mut unexpected_standby_replicas = 0;
        let state = match record_phase {
            Some((phase @ (RecordPhase::Promoting | RecordPhase::Failed), epoch)) => {
                self.fence(obs, &mut actions, &mut reasons);
                self.drive_promotion(now, obs, phase, epoch, &mut actions, &mut reasons)
            }
            Some((RecordPhase::Promoted, epoch)) => {
                self.fence(obs, &mut actions, &mut reasons);
                if self.settings.policy.fence
                    && obs.primary.api.passed()
                    && all_at_zero(obs.primary.deployments.as_deref())
                    && matches!(&obs.standby.record, Ok(r) if r.fenced_at.is_none())
                {
                    actions.push(Action::RecordFenced { epoch });
                }
                GroupState::Promoted
            }
            Some((RecordPhase::Primary, epoch)) => {
                unexpected_standby_replicas =
                    desired_sum(obs.standby.deployments.as_deref()).unwrap_or(0);
                if unexpected_standby_replicas > 0 {
                    reasons.push(ReasonCode::StandbyUnexpectedReplicas);
                    if primary_healthy && self.settings.policy.correct_standby {
                        actions.push(Action::ScaleStandbyDown);
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
                // Never read the record: nothing is known about which side is active, so
                // nothing may be written. Say why.
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
            signals: self.signals.iter().map(Signal::snapshot).collect(),
            state_changed,
        }
    }

    /// Checks whether the watcher's own view can be trusted this tick.
    fn distrust(&self, now: Instant, obs: &Observation) -> Option<ReasonCode> {
        let interval = self.settings.interval;
        if let Some((last_mono, last_wall)) = self.last_tick {
            let mono = now.saturating_duration_since(last_mono);
            if mono > interval * 2 {
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

    fn freeze(&mut self, now: Instant, code: ReasonCode) {
        self.frozen_until = Some(now + self.settings.policy.freeze_for);
        self.freeze_reason = code;
        for s in &mut self.signals {
            s.forget_streak();
        }
    }

    fn is_frozen(&self, now: Instant) -> bool {
        self.frozen_until.is_some_and(|until| now < until)
    }

    fn feed_signals(&mut self, obs: &Observation) {
        let reasons = std::iter::once(obs.primary.api.reason)
            .chain(obs.primary.workloads.iter().map(|(_, o)| o.reason))
            .chain(obs.primary.http.iter().map(|(_, o)| o.reason));
        for (signal, reason) in self.signals.iter_mut().zip(reasons) {
            signal.observe(reason);
        }
    }

    /// Takes the record's phase when it could be read, else the last known one.
    fn update_record(&mut self, now: Instant, obs: &Observation) -> Option<(RecordPhase, u64)> {
        if let Ok(rec) = &obs.standby.record {
            let phase = rec.effective_phase();
            if let Some(t) = rec.promoted_at_unix {
                let t = t as f64;
                self.last_promotion_wall = Some(self.last_promotion_wall.map_or(t, |o| o.max(t)));
            }
            let previous = self.known.map(|(p, _)| p);
            if phase == RecordPhase::Primary && previous.is_some_and(RecordPhase::standby_active) {
                self.last_failback_wall = Some(obs.wall_unix);
            }
            if !phase.standby_active() {
                self.promotion_seen_at = None;
                self.retry_count = 0;
                self.next_retry_at = None;
            } else if self.promotion_seen_at.is_none() {
                self.promotion_seen_at = Some(now);
                self.resumed = true;
            }
            self.known = Some((phase, rec.epoch));
        }
        self.known
    }

    /// Invariant 3: once a promotion is recorded, the old primary's workloads go to 0
    /// whenever its API answers, before anything else for the group.
    fn fence(&self, obs: &Observation, actions: &mut Vec<Action>, reasons: &mut Vec<ReasonCode>) {
        if !self.settings.policy.fence {
            return;
        }
        if !obs.primary.api.passed() {
            reasons.push(ReasonCode::PrimaryUnreachable);
            return;
        }
        match desired_sum(obs.primary.deployments.as_deref()) {
            Some(n) if n > 0 => {
                reasons.push(ReasonCode::FencingPrimary);
                actions.insert(0, Action::FencePrimary);
            }
            Some(_) => reasons.push(ReasonCode::PrimaryFenced),
            // The API answers but the Deployments could not be listed: try anyway, the
            // actuator re-lists and only scales what it finds above 0.
            None => {
                reasons.push(ReasonCode::FencingPrimary);
                actions.insert(0, Action::FencePrimary);
            }
        }
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
            return state_of(phase);
        }
        reasons.push(ReasonCode::AwaitingStandbyReady);
        let scaled = views.is_some_and(|v| !v.is_empty() && v.iter().all(|d| d.desired >= 1));
        let seen = *self.promotion_seen_at.get_or_insert(now);
        match phase {
            RecordPhase::Promoting => {
                if !scaled {
                    actions.push(Action::ScaleStandbyUp);
                }
                if now.saturating_duration_since(seen) >= self.settings.policy.promotion_timeout {
                    reasons.insert(0, ReasonCode::PromotionTimeout);
                    actions.push(Action::RecordFailed {
                        epoch,
                        reason: ReasonCode::PromotionTimeout.as_str().to_string(),
                    });
                    self.schedule_retry(now);
                    return GroupState::Failed;
                }
                GroupState::Promoting
            }
            _ => {
                reasons.insert(0, ReasonCode::PromotionTimeout);
                if self.next_retry_at.is_none_or(|at| now >= at) {
                    actions.push(Action::ScaleStandbyUp);
                    self.schedule_retry(now);
                }
                GroupState::Failed
            }
        }
    }

    fn schedule_retry(&mut self, now: Instant) {
        let factor = 2u32.saturating_pow(self.retry_count.min(16));
        let backoff = (self.settings.interval * factor).min(MAX_RETRY_BACKOFF);
        self.retry_count = self.retry_count.saturating_add(1);
        self.next_retry_at = Some(now + backoff);
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
        if !primary_down {
            if primary_healthy {
                reasons.insert(0, ReasonCode::PrimaryHealthy);
                return GroupState::PrimaryActive;
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
        let cooldown_from = match (self.last_promotion_wall, self.last_failback_wall) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if cooldown_from.is_some_and(|t| obs.wall_unix - t < policy.cooldown.as_secs_f64()) {
            reasons.push(ReasonCode::Cooldown);
            return GroupState::Blocked;
        }
        let promote = [
            Action::RecordPromoting {
                epoch: epoch + 1,
                reason: ReasonCode::PrimaryDownQuorum.as_str().to_string(),
            },
            Action::ScaleStandbyUp,
        ];
        match self.settings.mode {
            Mode::Observe => {
                // The same decision, reported and never carried out.
                reasons.push(ReasonCode::WouldPromote);
                actions.extend(promote);
                GroupState::PrimaryDown
            }
            Mode::Auto => {
                reasons.push(ReasonCode::PromotionStarted);
                actions.extend(promote);
                self.promotion_seen_at = Some(now);
                GroupState::Promoting
            }
        }
    }
}

fn state_of(phase: RecordPhase) -> GroupState {
    match phase {
        RecordPhase::Failed => GroupState::Failed,
        _ => GroupState::Promoting,
    }
}

fn standby_fitness(obs: &Observation) -> (bool, Vec<ReasonCode>) {
    let mut unfit = Vec::new();
    if !obs.standby.api.passed() {
        unfit.push(ReasonCode::StandbyApiDown);
    } else if !obs.standby.workloads.passed() {
        unfit.push(ReasonCode::StandbyWorkloadMissing);
    }
    if obs.standby.record.is_err() && obs.standby.api.passed() {
        unfit.push(ReasonCode::RecordUnreadable);
    }
    (unfit.is_empty(), unfit)
}

fn desired_sum(views: Option<&[DeploymentView]>) -> Option<i32> {
    views.map(|v| v.iter().map(|d| d.desired.max(0)).sum())
}

fn all_at_zero(views: Option<&[DeploymentView]>) -> bool {
    desired_sum(views) == Some(0)
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

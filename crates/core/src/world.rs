//! A model of one group's two clusters as the engine sees them: it answers an
//! [`Observation`] per tick and carries the engine's actions out the way the daemon's
//! actuator does, refusals included (the record re-read before every scaling, epochs
//! checked, resourceVersion preconditions). The engine's simulated timelines and
//! `kube-failover simulate --scenario` both run in it, so a scenario and a test see the
//! same clusters.
//!
//! Every field is a knob: a test or a scenario sets what the clusters answer (a refused
//! API, an unlistable primary, a record that cannot be read, a forbidden write), ticks,
//! and looks at what the actions did.

use crate::checks::StateCheck;
use crate::model::{
    Action, DeploymentView, FailoverRecord, GuardsObservation, Observation, ObserverReport,
    PrimaryObservation, ProbeOutcome, ProbeReason, RecordPhase, SignalId, StandbyObservation,
};
use std::time::Duration;

/// How long every modelled probe takes when it is answered.
const ANSWER_LATENCY: Duration = Duration::from_millis(5);

/// One workload of the group, on both sides.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The primary signal that follows it.
    pub signal: SignalId,
    /// Its Deployment's name (the same on both sides).
    pub deployment: String,
    /// Its replica count when it runs on the standby.
    pub replicas: i32,
}

/// The two clusters of one group.
#[derive(Debug, Clone)]
pub struct World {
    /// The workloads, in the order the probes report them.
    pub workloads: Vec<Workload>,
    /// HTTP checks of the primary: each answers as the primary's workloads do.
    pub http: Vec<SignalId>,
    /// What the primary's `/readyz` answers.
    pub primary_api: ProbeReason,
    /// What every primary workload (and HTTP) signal answers.
    pub primary_workload: ProbeReason,
    /// How long a failing primary probe took (a timeout takes the probe timeout).
    pub primary_latency: Duration,
    /// The primary's Deployments can be listed (its API serves requests, whatever
    /// `/readyz` says).
    pub primary_listable: bool,
    /// Desired replicas of every primary Deployment.
    pub primary_desired: i32,
    /// The primary Deployments' uid, as the engine records them.
    pub primary_uid: Option<String>,
    /// What the standby's API answers.
    pub standby_api: ProbeReason,
    /// The standby Deployments exist.
    pub standby_present: bool,
    /// Scale of the standby: 0 (passive) or 1 (every workload at its replica count).
    pub standby_desired: i32,
    /// The standby Deployments' uid.
    pub standby_uid: Option<String>,
    /// The epoch annotation on the standby Deployments.
    pub standby_epoch: Option<u64>,
    /// Ticks the standby has been scaled up (see [`World::tick_done`]).
    pub standby_ticks_scaled: u32,
    /// Ticks a scaled-up standby needs before its Pods are Ready (`None`: never).
    pub standby_ready_after: Option<u32>,
    /// The record as last written.
    pub record: FailoverRecord,
    /// The record ConfigMap exists (else a read finds nothing: the default record).
    pub record_exists: bool,
    /// The record can be read (else a read fails to decode).
    pub record_readable: bool,
    /// Action kinds that fail (403) when carried out.
    pub forbidden: Vec<&'static str>,
    /// The other instances' verdicts.
    pub observers: Vec<ObserverReport>,
    /// The standby's state checks as the daemon would report them.
    pub state_checks: Vec<StateCheck>,
    /// The guards' heartbeats as the daemon would read them from the standby.
    pub guards: Option<GuardsObservation>,
    /// The watches feeding the primary's workload signals have not listed yet.
    pub watches_starting: bool,
}

impl World {
    /// A healthy pair: the primary runs every workload at 1 replica, the standby's copies
    /// sit at 0 and become Ready one tick after a scale-up; no record yet.
    pub fn healthy(workloads: Vec<Workload>, http: Vec<SignalId>) -> Self {
        World {
            workloads,
            http,
            primary_api: ProbeReason::Ok,
            primary_workload: ProbeReason::Ok,
            primary_latency: ANSWER_LATENCY,
            primary_listable: true,
            primary_desired: 1,
            primary_uid: None,
            standby_api: ProbeReason::Ok,
            standby_present: true,
            standby_desired: 0,
            standby_uid: None,
            standby_epoch: None,
            standby_ticks_scaled: 0,
            standby_ready_after: Some(1),
            record: FailoverRecord::default(),
            record_exists: false,
            record_readable: true,
            forbidden: Vec::new(),
            observers: Vec::new(),
            state_checks: Vec::new(),
            guards: None,
            watches_starting: false,
        }
    }

    /// The primary stops answering: every signal fails with `reason` after `latency`, and
    /// its Deployments cannot be listed.
    pub fn primary_fails(&mut self, reason: ProbeReason, latency: Duration) {
        self.primary_api = reason;
        self.primary_workload = reason;
        self.primary_latency = latency;
        self.primary_listable = false;
    }

    /// The primary's API server refuses connections.
    pub fn primary_down(&mut self) {
        self.primary_fails(ProbeReason::Refused, ANSWER_LATENCY);
    }

    /// The primary answers again; its workloads pass unless they were scaled to 0.
    pub fn primary_up(&mut self) {
        self.primary_api = ProbeReason::Ok;
        self.primary_latency = ANSWER_LATENCY;
        self.primary_listable = true;
        self.primary_workload = if self.primary_desired > 0 {
            ProbeReason::Ok
        } else {
            ProbeReason::ScaledToZero
        };
    }

    /// Writes the record as the API server would: it exists from now on, with a new
    /// resourceVersion.
    pub fn store(&mut self, record: FailoverRecord) {
        let rv = self
            .record
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        self.record = FailoverRecord {
            resource_version: Some(rv.to_string()),
            ..record
        };
        self.record_exists = true;
    }

    /// The record a read finds (the default record when none exists), if it can be read.
    pub fn read_record(&self) -> Option<FailoverRecord> {
        let reachable = self.standby_api == ProbeReason::Ok;
        (reachable && self.record_readable).then(|| {
            if self.record_exists {
                self.record.clone()
            } else {
                FailoverRecord::default()
            }
        })
    }

    /// What the daemon's probes would observe now.
    pub fn observe(&self, wall_unix: f64) -> Observation {
        let outcome = |r: ProbeReason| ProbeOutcome {
            reason: r,
            latency: ANSWER_LATENCY,
            detail: String::new(),
        };
        let primary = |r: ProbeReason| ProbeOutcome {
            latency: if r == ProbeReason::Ok {
                ANSWER_LATENCY
            } else {
                self.primary_latency
            },
            ..outcome(r)
        };
        let standby_reachable = self.standby_api == ProbeReason::Ok;
        let ready = self.standby_desired >= 1
            && self
                .standby_ready_after
                .is_some_and(|n| self.standby_ticks_scaled >= n);
        let primary_views = self.workloads.iter().map(|w| DeploymentView {
            name: w.deployment.clone(),
            uid: self.primary_uid.clone(),
            desired: self.primary_desired,
            available: self.primary_desired,
            ready_pods: self.primary_desired,
            epoch: None,
        });
        let standby_views = self.workloads.iter().map(|w| {
            let desired = self.standby_desired.saturating_mul(w.replicas);
            DeploymentView {
                name: w.deployment.clone(),
                uid: self.standby_uid.clone(),
                desired,
                available: if ready { desired } else { 0 },
                ready_pods: if ready { desired } else { 0 },
                epoch: self.standby_epoch,
            }
        });
        Observation {
            wall_unix,
            primary: PrimaryObservation {
                api: primary(self.primary_api),
                workloads: self
                    .workloads
                    .iter()
                    .map(|w| (w.signal.clone(), primary(self.primary_workload)))
                    .collect(),
                http: self
                    .http
                    .iter()
                    .map(|id| (id.clone(), primary(self.primary_workload)))
                    .collect(),
                deployments: self.primary_listable.then(|| primary_views.collect()),
                absent: vec![],
                watches_starting: self.watches_starting,
            },
            standby: StandbyObservation {
                api: outcome(self.standby_api),
                workloads: outcome(if !standby_reachable {
                    self.standby_api
                } else if self.standby_present {
                    ProbeReason::Ok
                } else {
                    ProbeReason::NotFound
                }),
                deployments: (standby_reachable && self.standby_present)
                    .then(|| standby_views.collect()),
                record: self.read_record().ok_or_else(|| {
                    outcome(if standby_reachable {
                        ProbeReason::Decode
                    } else {
                        self.standby_api
                    })
                }),
                state_checks: self.state_checks.clone(),
                guards: self.guards.clone().map(|g| GuardsObservation {
                    beats: if standby_reachable {
                        g.beats
                    } else {
                        Err(outcome(self.standby_api))
                    },
                    ..g
                }),
            },
            observers: self.observers.clone(),
        }
    }

    /// Carries out a decision's actions in order as the actuator would; returns what
    /// each did. A failed `promoting` record write stops the rest, and a failed
    /// `promoted` one the actions that follow it, as in the daemon.
    pub fn apply(&mut self, actions: &[Action], wall_unix: f64) -> Vec<(Action, bool)> {
        let mut results = Vec::new();
        let mut promoted_failed = None;
        for action in actions {
            if action.held_by_failed_promoted(promoted_failed) {
                continue;
            }
            let ok = self.apply_one(action, wall_unix);
            results.push((action.clone(), ok));
            match action {
                Action::RecordPromoting { .. } if !ok => break, // nothing after it runs
                Action::RecordPromoted { epoch } if !ok => promoted_failed = Some(*epoch),
                _ => {}
            }
        }
        results
    }

    /// One tick of time passed after the actions: a scaled-up standby counts toward
    /// Ready, a scaled-down one starts over.
    pub fn tick_done(&mut self) {
        if self.standby_desired >= 1 {
            self.standby_ticks_scaled = self.standby_ticks_scaled.saturating_add(1);
        } else {
            self.standby_ticks_scaled = 0;
        }
    }

    /// One action; false when the actuator's call would fail or refuse.
    pub fn apply_one(&mut self, action: &Action, wall_unix: f64) -> bool {
        if self.forbidden.contains(&action.kind()) {
            return false;
        }
        let standby_ok = self.standby_api == ProbeReason::Ok;
        let record = self.record_exists.then(|| self.record.clone());
        let active_at = |epoch: u64| {
            record
                .as_ref()
                .is_some_and(|r| r.effective_phase().standby_active() && r.epoch == epoch)
        };
        match action {
            Action::RecordPromoting {
                epoch,
                reason,
                primary_deployments,
            } if standby_ok && self.record_readable => {
                self.store(FailoverRecord {
                    phase: Some(RecordPhase::Promoting),
                    epoch: *epoch,
                    reason: reason.as_str().to_string(),
                    promoted_at_unix: Some(wall_unix as i64),
                    primary_deployments: primary_deployments.clone(),
                    ..FailoverRecord::default()
                });
            }
            Action::ScaleStandbyUp { epoch } if standby_ok && active_at(*epoch) => {
                self.standby_desired = 1;
                self.standby_epoch = Some(*epoch);
            }
            Action::RecordPromoted { epoch } if standby_ok && active_at(*epoch) => {
                let mut r = self.record.clone();
                r.phase = Some(RecordPhase::Promoted);
                self.store(r);
            }
            Action::RecordFailed { epoch, .. } if standby_ok && active_at(*epoch) => {
                let mut r = self.record.clone();
                r.phase = Some(RecordPhase::Failed);
                self.store(r);
            }
            Action::RecordFenced { epoch, by } if standby_ok && active_at(*epoch) => {
                let mut r = self.record.clone();
                r.fenced_at = Some(format!("{}", wall_unix as i64));
                r.fenced_by = Some(*by);
                self.store(r);
            }
            Action::FencePrimary { epoch, .. }
                if standby_ok && self.primary_listable && active_at(*epoch) =>
            {
                self.primary_desired = 0;
                self.primary_workload = ProbeReason::ScaledToZero;
            }
            Action::ScaleStandbyDown { epoch }
                if standby_ok
                    && record.as_ref().map_or(0, |r| r.epoch) == *epoch
                    && record
                        .as_ref()
                        .is_none_or(|r| r.effective_phase() == RecordPhase::Primary) =>
            {
                self.standby_desired = 0
            }
            // Created when missing; written over a record on condition of its
            // resourceVersion.
            Action::RestoreRecord { record }
                if standby_ok
                    && match &record.resource_version {
                        None => !self.record_exists,
                        Some(rv) => {
                            self.record_exists
                                && self.record.resource_version.as_deref() == Some(rv)
                        }
                    } =>
            {
                self.store(FailoverRecord {
                    restored_at: Some(format!("{}", wall_unix as i64)),
                    ..(**record).clone()
                });
            }
            Action::RecordFailback { epoch } if standby_ok => {
                let mut r = self.record.clone();
                if r.epoch != *epoch {
                    return false;
                }
                r.failback_at_unix = Some(wall_unix as i64);
                self.store(r);
            }
            // Lock Leases are not modelled: the deletions need the standby's API.
            Action::ClearStaleLocks { .. } if standby_ok => {}
            Action::Announce { .. }
            | Action::WarnStateChecks { .. }
            | Action::AnnouncePromoted { .. } => {}
            _ => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world() -> World {
        World::healthy(
            vec![
                Workload {
                    signal: SignalId::Workload("app=a".into()),
                    deployment: "a".into(),
                    replicas: 2,
                },
                Workload {
                    signal: SignalId::Workload("app=b".into()),
                    deployment: "b".into(),
                    replicas: 1,
                },
            ],
            vec![SignalId::Http("health".into())],
        )
    }

    #[test]
    fn a_failing_primary_answers_every_signal_alike_and_cannot_be_listed() {
        let mut w = world();
        w.primary_fails(ProbeReason::Timeout, Duration::from_secs(2));
        let obs = w.observe(0.0);
        let outcomes: Vec<&ProbeOutcome> = std::iter::once(&obs.primary.api)
            .chain(obs.primary.workloads.iter().map(|(_, o)| o))
            .chain(obs.primary.http.iter().map(|(_, o)| o))
            .collect();
        assert_eq!(outcomes.len(), 4);
        for o in outcomes {
            assert_eq!(o.reason, ProbeReason::Timeout);
            assert_eq!(o.latency, Duration::from_secs(2));
        }
        assert!(obs.primary.deployments.is_none());
        w.primary_up();
        let obs = w.observe(1.0);
        assert_eq!(obs.primary.api.reason, ProbeReason::Ok);
        assert_eq!(obs.primary.deployments.map(|d| d.len()), Some(2));
    }

    #[test]
    fn a_promotion_scales_each_workload_to_its_replicas_and_is_ready_a_tick_later() {
        let mut w = world();
        let promoting = Action::RecordPromoting {
            epoch: 1,
            reason: crate::model::ReasonCode::PrimaryDownQuorum,
            primary_deployments: vec![],
        };
        let done = w.apply(&[promoting, Action::ScaleStandbyUp { epoch: 1 }], 10.0);
        assert!(done.iter().all(|(_, ok)| *ok), "{done:?}");
        assert_eq!(w.record.effective_phase(), RecordPhase::Promoting);
        let views = w.observe(10.0).standby.deployments.expect("listed");
        assert_eq!(
            views
                .iter()
                .map(|v| (v.desired, v.ready_pods))
                .collect::<Vec<_>>(),
            [(2, 0), (1, 0)]
        );
        w.tick_done();
        let views = w.observe(11.0).standby.deployments.expect("listed");
        assert_eq!(
            views.iter().map(|v| v.ready_pods).collect::<Vec<_>>(),
            [2, 1]
        );
    }

    #[test]
    fn what_follows_a_promoted_record_runs_only_if_it_was_written() {
        let mut w = world();
        let promoting = Action::RecordPromoting {
            epoch: 1,
            reason: crate::model::ReasonCode::PrimaryDownQuorum,
            primary_deployments: vec![],
        };
        assert!(w.apply_one(&promoting, 0.0));
        let completed = [
            Action::RecordPromoted { epoch: 1 },
            Action::ClearStaleLocks { epoch: 1 },
            Action::AnnouncePromoted { epoch: 1 },
        ];
        w.forbidden.push("record_promoted");
        let done = w.apply(&completed, 1.0);
        assert_eq!(done, [(Action::RecordPromoted { epoch: 1 }, false)]);
        w.forbidden.clear();
        let done = w.apply(&completed, 2.0);
        assert_eq!(done.len(), 3, "{done:?}");
        assert!(done.iter().all(|(_, ok)| *ok), "{done:?}");
        assert_eq!(w.record.effective_phase(), RecordPhase::Promoted);
        // The deletions need the standby's API; the Event is best effort.
        w.standby_api = ProbeReason::Timeout;
        assert!(!w.apply_one(&Action::ClearStaleLocks { epoch: 1 }, 3.0));
    }

    #[test]
    fn writes_are_refused_as_the_actuator_refuses_them() {
        let mut w = world();
        // Scaling without a record saying so, or at another epoch: refused.
        assert!(!w.apply_one(&Action::ScaleStandbyUp { epoch: 1 }, 0.0));
        w.forbidden.push("record_promoting");
        let promoting = Action::RecordPromoting {
            epoch: 1,
            reason: crate::model::ReasonCode::PrimaryDownQuorum,
            primary_deployments: vec![],
        };
        let done = w.apply(&[promoting, Action::ScaleStandbyUp { epoch: 1 }], 0.0);
        assert_eq!(done.len(), 1, "nothing runs after a failed promoting write");
        assert!(!done[0].1);
        assert!(!w.record_exists);
        // A restore on condition of a resourceVersion that is not the record's: refused.
        w.store(FailoverRecord::default());
        let stale = FailoverRecord {
            resource_version: Some("0".into()),
            ..FailoverRecord::default()
        };
        assert!(!w.apply_one(
            &Action::RestoreRecord {
                record: Box::new(stale)
            },
            0.0
        ));
    }
}

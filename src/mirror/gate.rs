//! When the mirror may copy: only while the primary is the active side, and never
//! again by itself once a promotion began until the record is back at `primary`.
//! Pure: the record, the group's last decision and the leadership come in; whether to
//! copy, and why not, goes out.
//!
//! The mirror stops as soon as any of these says a promotion began, whichever comes
//! first: the record (read from the watch cache before every pass) leaving phase
//! `primary`, the group's engine deciding a promotion (or the restore of a lost
//! record), or the actuator about to write the `promoting` record
//! ([`Gate::halt`]). It resumes only when the record, existing and read afresh, says
//! `primary` with no pause and no failback step, and the engine's last decision no
//! longer says the standby is (being made) active: after a failback, that is when the
//! record says `primary` again. A record that disappears after a promotion keeps the
//! mirror stopped (the engine writes it back), so a lost record never reverses it.

use crate::engine::{Decision, GroupState};
use crate::model::{Action, FailoverRecord, ReasonCode};

/// Why the mirror does not copy now. Bounded names, for `/status`, logs and Events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The group has not ticked yet: its view of the failover is not known.
    Starting,
    /// The failover record cannot be read (its watch is not established, or it holds
    /// something unreadable).
    RecordUnknown,
    /// A promotion began (the record or the engine says the standby is, or is being
    /// made, active): the standby's copy stays as it was at the promotion.
    Promoted,
    /// The record disappeared after a promotion was seen: stopped until it says
    /// `primary` again.
    RecordLost,
    /// An operator paused the group.
    Paused,
    /// An operator's failback is between its steps.
    FailbackInProgress,
}

impl StopReason {
    /// The bounded name.
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Starting => "starting",
            StopReason::RecordUnknown => "record_unknown",
            StopReason::Promoted => "promoted",
            StopReason::RecordLost => "record_lost",
            StopReason::Paused => "paused",
            StopReason::FailbackInProgress => "failback_in_progress",
        }
    }

    /// What it means, for people.
    pub fn explain(self) -> &'static str {
        match self {
            StopReason::Starting => "waiting for the group's first tick",
            StopReason::RecordUnknown => "the failover record cannot be read",
            StopReason::Promoted => {
                "a promotion began: the standby is the active side and its state is no \
                 longer overwritten; the mirror resumes when the record says primary again \
                 (after a failback)"
            }
            StopReason::RecordLost => {
                "the failover record disappeared after a promotion; stopped until it says \
                 primary again"
            }
            StopReason::Paused => "the group is paused by an operator",
            StopReason::FailbackInProgress => "a failback is in progress",
        }
    }
}

/// The failover record as the mirror reads it before a pass.
#[derive(Debug, Clone, Copy)]
pub enum RecordView<'a> {
    /// Read: the record (a default one when none exists).
    Read(&'a FailoverRecord),
    /// Not readable now.
    Unknown,
}

/// The group's last decision, as far as the mirror cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineView {
    /// The decision says the standby is, or is being made, active (a promotion under
    /// way, done or failed, or a lost record being written back).
    pub standby_active: bool,
}

impl EngineView {
    /// The view of `decision`.
    pub fn of(decision: &Decision) -> EngineView {
        // A promotion this decision starts is `Promoting` in auto mode (in observe mode,
        // and on a non-leader, it is only reported, and nothing stops).
        let restoring = decision
            .actions
            .iter()
            .any(|a| matches!(a, Action::RestoreRecord { .. }));
        EngineView {
            standby_active: restoring
                || matches!(
                    decision.state,
                    GroupState::Promoting | GroupState::Promoted | GroupState::Failed
                ),
        }
    }
}

/// The mirror's gate: the latch that keeps it stopped after a promotion.
#[derive(Debug, Default)]
pub struct Gate {
    engine: Option<EngineView>,
    /// A record was seen leaving `primary`: cleared only by a record that exists and
    /// says `primary` (a missing record is a lost one, never a failback).
    promotion_seen: bool,
    /// [`Gate::halt`] since the last tick: the next decision says how it went (a
    /// promotion whose record write did not land leaves no record of it).
    halted: bool,
}

impl Gate {
    /// A gate that has not seen a tick yet.
    pub fn new() -> Self {
        Gate::default()
    }

    /// The group's decision of a tick (after its actions ran).
    pub fn on_tick(&mut self, view: EngineView) {
        self.engine = Some(view);
        self.halted = false;
    }

    /// The actuator is about to write the `promoting` record: stop now, before the
    /// record says so.
    pub fn halt(&mut self) {
        self.halted = true;
    }

    /// A promotion is being recorded or under way by the engine's last decision: a
    /// pass in progress stops writing.
    pub fn interrupted(&self) -> bool {
        self.halted || self.engine.is_some_and(|e| e.standby_active)
    }

    /// Whether the mirror may copy now, given the record as read now and the time
    /// `wall_unix` (for a pause that ends by itself).
    pub fn check(&mut self, record: RecordView<'_>, wall_unix: f64) -> Result<(), StopReason> {
        let Some(engine) = self.engine else {
            return Err(StopReason::Starting);
        };
        let RecordView::Read(record) = record else {
            return Err(StopReason::RecordUnknown);
        };
        if record.effective_phase().standby_active() {
            self.promotion_seen = true;
            return Err(StopReason::Promoted);
        }
        if let Some(hold) = record.hold_at(wall_unix) {
            return Err(match hold {
                ReasonCode::FailbackInProgress => StopReason::FailbackInProgress,
                _ => StopReason::Paused,
            });
        }
        if self.halted || engine.standby_active {
            return Err(StopReason::Promoted);
        }
        if self.promotion_seen {
            if !record.exists() {
                return Err(StopReason::RecordLost);
            }
            // The record exists and says `primary`: a failback.
            self.promotion_seen = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FailbackStep, RecordPhase};

    fn record(phase: RecordPhase, rv: Option<&str>) -> FailoverRecord {
        FailoverRecord {
            phase: Some(phase),
            epoch: 1,
            resource_version: rv.map(str::to_string),
            ..FailoverRecord::default()
        }
    }

    const CALM: EngineView = EngineView {
        standby_active: false,
    };
    const PROMOTING: EngineView = EngineView {
        standby_active: true,
    };

    #[test]
    fn copies_only_while_the_record_says_primary_and_after_a_first_tick() {
        let mut g = Gate::new();
        let none = FailoverRecord::default();
        assert_eq!(
            g.check(RecordView::Read(&none), 0.0),
            Err(StopReason::Starting)
        );
        g.on_tick(CALM);
        assert_eq!(
            g.check(RecordView::Read(&none), 0.0),
            Ok(()),
            "no record yet"
        );
        assert_eq!(
            g.check(RecordView::Unknown, 0.0),
            Err(StopReason::RecordUnknown)
        );
        let primary = record(RecordPhase::Primary, Some("1"));
        assert_eq!(g.check(RecordView::Read(&primary), 0.0), Ok(()));
    }

    #[test]
    fn stops_at_the_promotion_and_resumes_only_when_the_record_says_primary_again() {
        let mut g = Gate::new();
        g.on_tick(CALM);
        for phase in [
            RecordPhase::Promoting,
            RecordPhase::Promoted,
            RecordPhase::Failed,
        ] {
            let r = record(phase, Some("2"));
            assert_eq!(
                g.check(RecordView::Read(&r), 0.0),
                Err(StopReason::Promoted)
            );
        }
        // The record vanishes: never read as a failback.
        let gone = FailoverRecord::default();
        assert_eq!(
            g.check(RecordView::Read(&gone), 0.0),
            Err(StopReason::RecordLost)
        );
        // The failback: first its steps, then the record at primary.
        let mut step = record(RecordPhase::Primary, Some("5"));
        step.failback_step = Some(FailbackStep::PrimaryUp);
        assert_eq!(
            g.check(RecordView::Read(&step), 0.0),
            Err(StopReason::FailbackInProgress)
        );
        let back = record(RecordPhase::Primary, Some("6"));
        assert_eq!(g.check(RecordView::Read(&back), 0.0), Ok(()));
    }

    #[test]
    fn the_engine_stops_it_before_the_record_says_so() {
        let mut g = Gate::new();
        g.on_tick(PROMOTING);
        let primary = record(RecordPhase::Primary, Some("1"));
        assert_eq!(
            g.check(RecordView::Read(&primary), 0.0),
            Err(StopReason::Promoted)
        );
        // The promotion did not happen after all (its record write failed): the engine
        // says so at its next tick and the record still says primary.
        g.on_tick(CALM);
        assert_eq!(g.check(RecordView::Read(&primary), 0.0), Ok(()));
    }

    #[test]
    fn a_halt_before_the_promoting_write_holds_until_the_engine_agrees() {
        let mut g = Gate::new();
        g.on_tick(CALM);
        let none = FailoverRecord::default();
        g.halt();
        assert_eq!(
            g.check(RecordView::Read(&none), 0.0),
            Err(StopReason::Promoted),
            "stopped before the record says so"
        );
        // The tick that wrote the record decided a promotion.
        g.on_tick(PROMOTING);
        assert_eq!(
            g.check(RecordView::Read(&none), 0.0),
            Err(StopReason::Promoted)
        );
        let promoting = record(RecordPhase::Promoting, Some("1"));
        assert_eq!(
            g.check(RecordView::Read(&promoting), 0.0),
            Err(StopReason::Promoted)
        );
        // Once the record was seen promoting, its disappearance keeps it stopped even
        // with an engine that lost track.
        g.on_tick(CALM);
        assert_eq!(
            g.check(RecordView::Read(&none), 0.0),
            Err(StopReason::RecordLost)
        );
    }

    #[test]
    fn a_promotion_whose_record_write_failed_does_not_stop_it_for_good() {
        let mut g = Gate::new();
        g.on_tick(CALM);
        let none = FailoverRecord::default();
        g.halt();
        g.on_tick(PROMOTING);
        // The write failed; the next decision is no promotion, and no record exists.
        g.on_tick(CALM);
        assert_eq!(g.check(RecordView::Read(&none), 0.0), Ok(()));
    }

    #[test]
    fn the_engine_view_is_a_promotion_under_way_not_one_only_reported() {
        let decision = |state: GroupState, actions: Vec<Action>| Decision {
            state,
            reasons: vec![],
            actions,
            primary_down: true,
            standby_fit: true,
            unexpected_standby_replicas: 0,
            dual_active: false,
            no_active_side: false,
            signals: vec![],
            state_changed: false,
            verdict: crate::model::Verdict::Down,
            warnings: vec![],
            acts: true,
        };
        let promoting = Action::RecordPromoting {
            epoch: 1,
            reason: ReasonCode::PrimaryDownQuorum,
            primary_deployments: vec![],
        };
        for (state, actions, active) in [
            (GroupState::Promoting, vec![promoting.clone()], true),
            (GroupState::Promoted, vec![], true),
            (GroupState::Failed, vec![], true),
            // Observe mode, or a follower: reported, never carried out.
            (GroupState::PrimaryDown, vec![promoting], false),
            (
                GroupState::Blocked,
                vec![Action::RestoreRecord {
                    record: Box::default(),
                }],
                true,
            ),
            (GroupState::PrimaryActive, vec![], false),
        ] {
            let view = EngineView::of(&decision(state, actions));
            assert_eq!(view.standby_active, active, "{state:?}");
        }
    }

    #[test]
    fn a_pause_stops_it_until_it_ends() {
        let mut g = Gate::new();
        g.on_tick(CALM);
        let mut paused = record(RecordPhase::Primary, Some("1"));
        paused.paused_by = Some("alice".into());
        paused.paused_until_unix = Some(100);
        assert_eq!(
            g.check(RecordView::Read(&paused), 50.0),
            Err(StopReason::Paused)
        );
        assert_eq!(g.check(RecordView::Read(&paused), 150.0), Ok(()));
    }
}

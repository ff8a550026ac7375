//! Simulated timelines: a small model of the two clusters that applies the engine's
//! actions the way the actuator would, driven tick by tick with a simulated clock.

use super::*;
use crate::config::{Mode, PolicyConfig};
use crate::model::*;
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_secs(1);

/// The two clusters as the engine sees them.
#[derive(Debug, Clone)]
struct World {
    primary_api: ProbeReason,
    primary_workload: ProbeReason,
    primary_desired: i32,
    standby_api: ProbeReason,
    standby_present: bool,
    standby_desired: i32,
    /// Ticks a scaled-up standby needs before its Pods are Ready (`None`: never).
    standby_ready_after: Option<u32>,
    standby_ticks_scaled: u32,
    record: FailoverRecord,
    record_readable: bool,
}

impl World {
    fn healthy() -> Self {
        World {
            primary_api: ProbeReason::Ok,
            primary_workload: ProbeReason::Ok,
            primary_desired: 1,
            standby_api: ProbeReason::Ok,
            standby_present: true,
            standby_desired: 0,
            standby_ready_after: Some(1),
            standby_ticks_scaled: 0,
            record: FailoverRecord::default(),
            record_readable: true,
        }
    }

    fn primary_down(&mut self) {
        self.primary_api = ProbeReason::Refused;
        self.primary_workload = ProbeReason::Refused;
    }

    fn primary_up(&mut self) {
        self.primary_api = ProbeReason::Ok;
        self.primary_workload = if self.primary_desired > 0 {
            ProbeReason::Ok
        } else {
            ProbeReason::ScaledToZero
        };
    }

    fn observe(&self, wall_unix: f64) -> Observation {
        let outcome = |r: ProbeReason| ProbeOutcome {
            reason: r,
            latency: Duration::from_millis(5),
            detail: String::new(),
        };
        let primary_reachable = self.primary_api == ProbeReason::Ok;
        let standby_reachable = self.standby_api == ProbeReason::Ok;
        let ready = self.standby_desired >= 1
            && self
                .standby_ready_after
                .is_some_and(|n| self.standby_ticks_scaled >= n);
        let standby_view = DeploymentView {
            name: "env0-agent-trigger-deployment".into(),
            desired: self.standby_desired,
            available: if ready { self.standby_desired } else { 0 },
            ready_pods: if ready { self.standby_desired } else { 0 },
        };
        Observation {
            wall_unix,
            primary: PrimaryObservation {
                api: outcome(self.primary_api),
                workloads: vec![(
                    "workload:env0=agent-trigger".into(),
                    outcome(self.primary_workload),
                )],
                http: vec![],
                deployments: primary_reachable.then(|| {
                    vec![DeploymentView {
                        name: "env0-agent-trigger-deployment".into(),
                        desired: self.primary_desired,
                        available: self.primary_desired,
                        ready_pods: self.primary_desired,
                    }]
                }),
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
                    .then(|| vec![standby_view]),
                record: if standby_reachable && self.record_readable {
                    Ok(self.record.clone())
                } else {
                    Err(outcome(if standby_reachable {
                        ProbeReason::Forbidden
                    } else {
                        self.standby_api
                    }))
                },
            },
        }
    }

    /// Carries out actions as the actuator would, including its refusals; returns the
    /// record as written, if an action wrote it.
    fn apply(&mut self, actions: &[Action], wall_unix: f64) -> Option<FailoverRecord> {
        let before = self.record.clone();
        self.apply_all(actions, wall_unix);
        (self.record != before).then(|| self.record.clone())
    }

    fn apply_all(&mut self, actions: &[Action], wall_unix: f64) {
        for action in actions {
            let standby_ok = self.standby_api == ProbeReason::Ok;
            let primary_ok = self.primary_api == ProbeReason::Ok;
            match action {
                Action::RecordPromoting { epoch, reason } => {
                    if !standby_ok {
                        return; // the record write failed: nothing after it runs
                    }
                    assert_eq!(*epoch, self.record.epoch + 1, "epoch must advance by one");
                    self.record.phase = Some(RecordPhase::Promoting);
                    self.record.epoch = *epoch;
                    self.record.reason = reason.clone();
                    self.record.promoted_at_unix = Some(wall_unix as i64);
                    self.record.fenced_at = None;
                }
                Action::ScaleStandbyUp if standby_ok => self.standby_desired = 1,
                Action::RecordPromoted { epoch } if standby_ok && *epoch == self.record.epoch => {
                    self.record.phase = Some(RecordPhase::Promoted)
                }
                Action::RecordFailed { epoch, .. } if standby_ok && *epoch == self.record.epoch => {
                    self.record.phase = Some(RecordPhase::Failed)
                }
                Action::RecordFenced { epoch } if standby_ok && *epoch == self.record.epoch => {
                    self.record.fenced_at = Some("now".into())
                }
                Action::FencePrimary if primary_ok => {
                    self.primary_desired = 0;
                    self.primary_workload = ProbeReason::ScaledToZero;
                }
                Action::ScaleStandbyDown if standby_ok => self.standby_desired = 0,
                _ => return,
            }
        }
    }
}

struct Sim {
    engine: Engine,
    world: World,
    now: Instant,
    wall: f64,
    /// Every decision, in order.
    log: Vec<Decision>,
    carry_out: bool,
}

fn policy() -> PolicyConfig {
    PolicyConfig {
        failure_threshold: 3,
        success_threshold: 1,
        quorum: 1,
        cooldown: Duration::from_secs(600),
        startup_grace: Duration::from_secs(5),
        promotion_timeout: Duration::from_secs(30),
        freeze_for: Duration::from_secs(20),
        correct_standby: true,
        fence: true,
    }
}

impl Sim {
    fn new(policy: PolicyConfig, mode: Mode) -> Self {
        let now = Instant::now();
        let settings = EngineSettings {
            interval: INTERVAL,
            policy,
            mode,
            signal_names: vec!["api".into(), "workload:env0=agent-trigger".into()],
        };
        Sim {
            engine: Engine::new(settings, now),
            world: World::healthy(),
            now,
            wall: 1_800_000_000.0,
            log: Vec::new(),
            carry_out: mode == Mode::Auto,
        }
    }

    fn auto() -> Self {
        Sim::new(policy(), Mode::Auto)
    }

    /// Runs past the startup grace with a healthy world.
    fn warmed_up() -> Self {
        let mut sim = Sim::auto();
        sim.run(10);
        assert_eq!(sim.state(), GroupState::PrimaryActive);
        sim
    }

    fn tick(&mut self) -> &Decision {
        self.tick_after(INTERVAL)
    }

    fn tick_after(&mut self, gap: Duration) -> &Decision {
        self.now += gap;
        self.wall += gap.as_secs_f64();
        let obs = self.world.observe(self.wall);
        let decision = self.engine.step(self.now, &obs);
        if self.carry_out
            && let Some(rec) = self.world.apply(&decision.actions, self.wall)
        {
            self.engine
                .record_written(self.now, rec.effective_phase(), rec.epoch);
        }
        if self.world.standby_desired >= 1 {
            self.world.standby_ticks_scaled += 1;
        } else {
            self.world.standby_ticks_scaled = 0;
        }
        self.log.push(decision);
        self.log.last().expect("just pushed")
    }

    fn run(&mut self, ticks: usize) {
        for _ in 0..ticks {
            self.tick();
        }
    }

    fn state(&self) -> GroupState {
        self.engine.state()
    }

    fn count(&self, pred: impl Fn(&Action) -> bool) -> usize {
        self.log
            .iter()
            .flat_map(|d| &d.actions)
            .filter(|a| pred(a))
            .count()
    }

    fn promotions(&self) -> usize {
        self.count(|a| matches!(a, Action::RecordPromoting { .. }))
    }
}

#[test]
fn invariant1_a_single_blip_never_promotes() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_down();
    sim.run(2);
    sim.world.primary_up();
    sim.run(50);
    assert_eq!(sim.promotions(), 0);
    assert_eq!(sim.state(), GroupState::PrimaryActive);
    assert!(
        sim.log
            .iter()
            .any(|d| d.state == GroupState::PrimarySuspect),
        "the blip is reported as suspect"
    );
}

#[test]
fn invariant1_flapping_at_threshold_minus_one_never_promotes() {
    let mut sim = Sim::warmed_up();
    for _ in 0..5_000 {
        sim.world.primary_down();
        sim.run(2);
        sim.world.primary_up();
        sim.run(1);
    }
    assert_eq!(sim.promotions(), 0);
    assert!(sim.log.iter().all(|d| !d.primary_down));
    assert_eq!(sim.world.standby_desired, 0);
}

#[test]
fn invariant1_sustained_outage_promotes_exactly_once() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_down();
    sim.run(1);
    sim.run(1);
    assert_eq!(sim.promotions(), 0, "two failures are below the threshold");
    let d = sim.tick().clone();
    assert_eq!(d.state, GroupState::Promoting);
    assert!(d.reasons.contains(&ReasonCode::PromotionStarted));
    assert_eq!(
        d.actions,
        vec![
            Action::RecordPromoting {
                epoch: 1,
                reason: "primary_down_quorum".into()
            },
            Action::ScaleStandbyUp
        ],
        "the record is written before anything is scaled"
    );
    sim.run(3_000);
    assert_eq!(sim.promotions(), 1);
    assert_eq!(sim.state(), GroupState::Promoted);
    assert_eq!(sim.world.record.phase, Some(RecordPhase::Promoted));
    assert_eq!(sim.world.standby_desired, 1);
}

#[test]
fn invariant2_and_3_primary_returning_during_promoting_completes_then_fences() {
    let mut sim = Sim::warmed_up();
    sim.world.standby_ready_after = Some(5);
    sim.world.primary_down();
    sim.run(3);
    assert_eq!(sim.state(), GroupState::Promoting);
    sim.world.primary_up();
    let d = sim.tick().clone();
    assert_eq!(
        d.actions.first(),
        Some(&Action::FencePrimary),
        "fencing comes before anything else for the group"
    );
    assert_eq!(
        d.state,
        GroupState::Promoting,
        "no flip back to the primary"
    );
    sim.run(10);
    assert_eq!(sim.state(), GroupState::Promoted);
    assert_eq!(sim.world.primary_desired, 0);
    assert_eq!(sim.world.standby_desired, 1);
    assert!(sim.world.record.fenced_at.is_some(), "fencing is recorded");
    assert_eq!(sim.promotions(), 1);
}

#[test]
fn invariant3_fences_when_the_primary_returns_and_again_if_it_is_scaled_up() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_down();
    sim.run(20);
    assert_eq!(sim.state(), GroupState::Promoted);
    let last = sim.log.last().unwrap();
    assert!(last.reasons.contains(&ReasonCode::PrimaryUnreachable));
    assert!(last.actions.is_empty());

    sim.world.primary_up();
    let d = sim.tick().clone();
    assert_eq!(d.actions, vec![Action::FencePrimary]);
    sim.tick();
    assert_eq!(sim.world.primary_desired, 0);
    assert!(sim.world.record.fenced_at.is_some());

    // A helm upgrade on the old primary brings the trigger back: fenced again.
    sim.world.primary_desired = 1;
    sim.world.primary_workload = ProbeReason::Ok;
    let d = sim.tick().clone();
    assert_eq!(d.actions.first(), Some(&Action::FencePrimary));
    assert_eq!(sim.world.primary_desired, 0);
    assert_eq!(sim.promotions(), 1);
}

#[test]
fn fencing_can_be_turned_off() {
    let mut sim = Sim::new(
        PolicyConfig {
            fence: false,
            ..policy()
        },
        Mode::Auto,
    );
    sim.run(10);
    sim.world.primary_down();
    sim.run(10);
    sim.world.primary_up();
    sim.run(10);
    assert_eq!(sim.state(), GroupState::Promoted);
    assert_eq!(sim.count(|a| matches!(a, Action::FencePrimary)), 0);
    assert_eq!(sim.world.primary_desired, 1);
}

#[test]
fn invariant1_startup_grace_blocks_promotion() {
    let mut sim = Sim::auto();
    sim.world.primary_down();
    sim.run(4);
    assert_eq!(sim.promotions(), 0);
    assert!(sim.log.iter().all(|d| d.state == GroupState::Starting));
    assert!(sim.log[3].reasons.contains(&ReasonCode::StartupGrace));
    sim.run(2);
    assert_eq!(sim.promotions(), 1, "promotes once the grace is over");
}

#[test]
fn a_failure_right_after_the_first_healthy_tick_never_goes_back_to_starting() {
    let mut sim = Sim::auto();
    sim.tick();
    assert_eq!(sim.state(), GroupState::PrimaryActive);
    sim.world.primary_down();
    sim.run(3);
    assert_eq!(sim.promotions(), 0, "still within the startup grace");
    let last = sim.log.last().unwrap();
    assert_eq!(last.state, GroupState::Blocked);
    assert!(last.reasons.contains(&ReasonCode::StartupGrace));
    assert!(sim.log[1..].iter().all(|d| d.state != GroupState::Starting));
    sim.run(2);
    assert_eq!(sim.promotions(), 1, "promotes once the grace is over");
}

#[test]
fn invariant1_cooldown_after_a_failback() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_down();
    sim.run(10);
    assert_eq!(sim.state(), GroupState::Promoted);
    // Failback as the README describes it: standby to 0, record to primary, primary up.
    sim.world.standby_desired = 0;
    sim.world.record.phase = Some(RecordPhase::Primary);
    sim.world.primary_desired = 1;
    sim.world.primary_up();
    sim.run(5);
    assert_eq!(sim.state(), GroupState::PrimaryActive);
    sim.world.primary_down();
    sim.run(30);
    assert_eq!(sim.promotions(), 1);
    let last = sim.log.last().unwrap();
    assert_eq!(last.state, GroupState::Blocked);
    assert!(last.reasons.contains(&ReasonCode::Cooldown));
    sim.run(600);
    assert_eq!(
        sim.promotions(),
        2,
        "promotes again once the cooldown is over"
    );
    assert_eq!(sim.world.record.epoch, 2);
}

#[test]
fn invariant5_everything_unreachable_freezes_and_evidence_does_not_count() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_api = ProbeReason::Timeout;
    sim.world.primary_workload = ProbeReason::Timeout;
    sim.world.standby_api = ProbeReason::Timeout;
    sim.run(100);
    assert_eq!(sim.promotions(), 0);
    let last = sim.log.last().unwrap();
    assert_eq!(last.state, GroupState::Frozen);
    assert_eq!(last.reasons[0], ReasonCode::AllClustersUnreachable);
    // The watcher's network heals; the primary is fine: no promotion, back to active.
    sim.world = World::healthy();
    sim.run(30);
    assert_eq!(sim.state(), GroupState::PrimaryActive);
    assert_eq!(sim.promotions(), 0);
}

#[test]
fn invariant5_freeze_holds_after_the_view_returns() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_api = ProbeReason::Timeout;
    sim.world.primary_workload = ProbeReason::Timeout;
    sim.world.standby_api = ProbeReason::Timeout;
    sim.run(5);
    // Only the standby comes back; the primary stays silent.
    sim.world.standby_api = ProbeReason::Ok;
    sim.run(10);
    assert_eq!(sim.promotions(), 0);
    assert_eq!(sim.state(), GroupState::Frozen);
    sim.run(30);
    assert_eq!(
        sim.promotions(),
        1,
        "promotes after freeze_for, on fresh evidence"
    );
}

#[test]
fn invariant5_a_stalled_loop_freezes() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_down();
    sim.run(2);
    let d = sim.tick_after(Duration::from_secs(5)).clone();
    assert_eq!(d.state, GroupState::Frozen);
    assert_eq!(d.reasons[0], ReasonCode::LoopStalled);
    sim.run(10);
    assert_eq!(sim.promotions(), 0);
    sim.run(30);
    assert_eq!(sim.promotions(), 1);
}

#[test]
fn invariant5_a_clock_jump_freezes() {
    let mut sim = Sim::warmed_up();
    sim.wall += 3_600.0;
    let d = sim.tick().clone();
    assert_eq!(d.state, GroupState::Frozen);
    assert_eq!(d.reasons[0], ReasonCode::ClockJump);
}

#[test]
fn invariant1_unfit_standby_blocks_then_promotes_when_back() {
    let mut sim = Sim::warmed_up();
    sim.world.standby_api = ProbeReason::Refused;
    sim.world.primary_down();
    sim.run(10);
    assert_eq!(sim.promotions(), 0);
    let last = sim.log.last().unwrap().clone();
    assert_eq!(
        last.state,
        GroupState::Blocked,
        "refused is not the watcher's network"
    );
    assert!(!last.standby_fit);
    assert!(last.reasons.contains(&ReasonCode::StandbyApiDown));
    sim.world.standby_api = ProbeReason::Ok;
    sim.run(1);
    assert_eq!(sim.promotions(), 1);
}

#[test]
fn invariant1_missing_standby_workload_blocks() {
    let mut sim = Sim::warmed_up();
    sim.world.standby_present = false;
    sim.world.primary_down();
    sim.run(10);
    assert_eq!(sim.promotions(), 0);
    assert!(
        sim.log
            .last()
            .unwrap()
            .reasons
            .contains(&ReasonCode::StandbyWorkloadMissing)
    );
}

#[test]
fn invariant1_unreadable_record_never_promotes() {
    let mut sim = Sim::warmed_up();
    sim.world.record_readable = false;
    sim.world.primary_down();
    sim.run(50);
    assert_eq!(sim.promotions(), 0);
    assert!(
        sim.log
            .last()
            .unwrap()
            .reasons
            .contains(&ReasonCode::RecordUnreadable)
    );
}

#[test]
fn a_record_never_read_blocks_everything() {
    let mut sim = Sim::auto();
    sim.world.record_readable = false;
    sim.world.standby_desired = 1;
    sim.world.primary_down();
    sim.run(50);
    assert_eq!(sim.promotions(), 0);
    assert_eq!(sim.count(|a| matches!(a, Action::ScaleStandbyDown)), 0);
    assert_eq!(sim.state(), GroupState::Blocked);
}

#[test]
fn observe_mode_decides_the_same_and_writes_nothing() {
    let mut sim = Sim::new(policy(), Mode::Observe);
    sim.run(10);
    sim.world.primary_down();
    sim.run(3);
    let d = sim.log.last().unwrap().clone();
    assert_eq!(d.state, GroupState::PrimaryDown);
    assert!(d.would_promote());
    assert!(d.actions.contains(&Action::ScaleStandbyUp));
    sim.run(20);
    assert_eq!(sim.world.record.phase, None, "nothing was carried out");
    assert_eq!(sim.world.standby_desired, 0);
    assert_eq!(sim.state(), GroupState::PrimaryDown);
}

#[test]
fn quorum_two_needs_two_signals_down() {
    let mut sim = Sim::new(
        PolicyConfig {
            quorum: 2,
            ..policy()
        },
        Mode::Auto,
    );
    sim.run(10);
    sim.world.primary_workload = ProbeReason::CrashLoop;
    sim.run(20);
    assert_eq!(sim.promotions(), 0);
    assert_eq!(sim.state(), GroupState::PrimarySuspect);
    sim.world.primary_down();
    sim.run(3);
    assert_eq!(sim.promotions(), 1);
}

#[test]
fn unready_pods_with_a_healthy_api_promote() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_workload = ProbeReason::Unready;
    sim.run(3);
    assert_eq!(sim.promotions(), 1);
    // The primary API answers, so the fence follows at once.
    sim.run(5);
    assert_eq!(sim.world.primary_desired, 0);
    assert_eq!(sim.state(), GroupState::Promoted);
}

#[test]
fn invariant4_standby_replicas_are_corrected_while_the_primary_is_active() {
    let mut sim = Sim::warmed_up();
    sim.world.standby_desired = 1; // helm upgrade on the standby
    let d = sim.tick().clone();
    assert_eq!(d.unexpected_standby_replicas, 1);
    assert!(d.reasons.contains(&ReasonCode::StandbyUnexpectedReplicas));
    assert_eq!(d.actions, vec![Action::ScaleStandbyDown]);
    sim.tick();
    assert_eq!(sim.world.standby_desired, 0);
    assert_eq!(sim.log.last().unwrap().unexpected_standby_replicas, 0);
}

#[test]
fn invariant4_standby_replicas_only_reported_when_correction_is_off_or_primary_ailing() {
    let mut sim = Sim::new(
        PolicyConfig {
            correct_standby: false,
            ..policy()
        },
        Mode::Auto,
    );
    sim.run(10);
    sim.world.standby_desired = 1;
    sim.run(5);
    assert_eq!(sim.world.standby_desired, 1);
    assert_eq!(sim.log.last().unwrap().unexpected_standby_replicas, 1);

    // With correction on, a failing primary is never "corrected" away from its standby.
    let mut sim = Sim::warmed_up();
    sim.world.primary_workload = ProbeReason::Unready;
    sim.world.standby_desired = 1;
    sim.run(1);
    assert_eq!(sim.count(|a| matches!(a, Action::ScaleStandbyDown)), 0);
}

#[test]
fn invariant2_a_promotion_that_times_out_fails_loudly_retries_and_never_flips_back() {
    let mut sim = Sim::warmed_up();
    sim.world.standby_ready_after = None;
    sim.world.primary_down();
    sim.run(3);
    sim.world.standby_desired = 0; // someone scales it back: the promotion re-scales
    sim.run(40);
    assert_eq!(sim.state(), GroupState::Failed);
    assert_eq!(sim.world.record.phase, Some(RecordPhase::Failed));
    assert!(sim.log.iter().any(|d| {
        d.actions
            .iter()
            .any(|a| matches!(a, Action::RecordFailed { .. }))
    }));
    let first = sim
        .log
        .iter()
        .position(|d| d.state == GroupState::Promoting)
        .unwrap();
    assert!(
        sim.log[first..].iter().all(|d| matches!(
            d.state,
            GroupState::Promoting | GroupState::Failed | GroupState::Promoted
        )),
        "once recorded, a promotion never flips back"
    );
    // Retries are spaced out (backoff), not every tick.
    sim.world.standby_desired = 0;
    let before = sim.count(|a| matches!(a, Action::ScaleStandbyUp));
    sim.run(200);
    let retries = sim.count(|a| matches!(a, Action::ScaleStandbyUp)) - before;
    assert!((1..20).contains(&retries), "{retries} retries in 200 s");
    // The standby finally comes up: promoted, still the same single promotion.
    sim.world.standby_ready_after = Some(0);
    sim.world.standby_desired = 1;
    sim.run(2);
    assert_eq!(sim.state(), GroupState::Promoted);
    assert_eq!(sim.promotions(), 1);
}

#[test]
fn a_restarted_daemon_completes_a_recorded_promotion_once() {
    let mut sim = Sim::auto();
    sim.world.record = FailoverRecord {
        phase: Some(RecordPhase::Promoting),
        epoch: 4,
        promoted_at_unix: Some(sim.wall as i64),
        ..FailoverRecord::default()
    };
    sim.world.primary_down();
    let d = sim.tick().clone();
    assert_eq!(
        d.state,
        GroupState::Promoting,
        "no startup grace for a recorded promotion"
    );
    assert_eq!(d.actions, vec![Action::ScaleStandbyUp]);
    assert!(d.reasons.contains(&ReasonCode::ResumedFromRecord));
    sim.run(5);
    assert_eq!(sim.state(), GroupState::Promoted);
    assert_eq!(sim.promotions(), 0, "never started twice");
    assert_eq!(sim.world.record.epoch, 4);
}

#[test]
fn promotion_waits_while_the_standby_api_is_down() {
    let mut sim = Sim::warmed_up();
    sim.world.standby_ready_after = Some(3);
    sim.world.primary_down();
    sim.run(3);
    sim.world.standby_api = ProbeReason::Refused;
    sim.run(10);
    assert_eq!(sim.state(), GroupState::Promoting);
    assert!(
        sim.log
            .last()
            .unwrap()
            .reasons
            .contains(&ReasonCode::StandbyApiDown)
    );
    sim.world.standby_api = ProbeReason::Ok;
    sim.run(3);
    assert_eq!(sim.state(), GroupState::Promoted);
}

#[test]
fn state_changes_are_flagged_once() {
    let mut sim = Sim::warmed_up();
    let changes = sim.log.iter().filter(|d| d.state_changed).count();
    assert_eq!(changes, 1, "starting -> primary_active");
    sim.run(10);
    assert_eq!(sim.log.iter().filter(|d| d.state_changed).count(), 1);
}

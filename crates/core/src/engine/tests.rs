//! Simulated timelines: the engine driven tick by tick with a simulated clock in the
//! model of the two clusters ([`crate::world`]) that `simulate --scenario` runs in too.

use super::*;
use crate::model::*;
use crate::policy::{Mode, PolicyConfig};
use crate::world::Workload;
pub(super) use crate::world::World;
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_secs(1);

/// The world of these timelines: the env0 agent's trigger Deployment on both sides.
pub(super) fn healthy_world() -> World {
    let mut world = World::healthy(
        vec![Workload {
            signal: trigger_signal(),
            deployment: "env0-agent-trigger-deployment".into(),
            replicas: 1,
        }],
        vec![],
    );
    world.primary_uid = Some("primary-uid".into());
    world.standby_uid = Some("standby-uid".into());
    world
}

fn trigger_signal() -> SignalId {
    SignalId::Workload("env0=agent-trigger".into())
}

pub(super) struct Sim {
    pub(super) engine: Engine,
    pub(super) world: World,
    pub(super) now: Instant,
    pub(super) wall: f64,
    /// Every decision, in order.
    pub(super) log: Vec<Decision>,
    /// Whether this instance leads the group (an input of every decision).
    pub(super) leadership: Leadership,
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
        observers: Default::default(),
    }
}

impl Sim {
    fn new(policy: PolicyConfig, mode: Mode) -> Self {
        let now = Instant::now();
        let settings = EngineSettings {
            interval: INTERVAL,
            policy,
            mode,
            signals: vec![SignalId::Api, trigger_signal()],
            clear_stale_locks: true,
        };
        Sim {
            engine: Engine::new(settings, now),
            world: healthy_world(),
            now,
            wall: 1_800_000_000.0,
            log: Vec::new(),
            leadership: Leadership::Leads,
        }
    }

    pub(super) fn auto() -> Self {
        Sim::new(policy(), Mode::Auto)
    }

    /// Runs past the startup grace with a healthy world.
    pub(super) fn warmed_up() -> Self {
        let mut sim = Sim::auto();
        sim.run(10);
        assert_eq!(sim.state(), GroupState::PrimaryActive);
        sim
    }

    fn tick(&mut self) -> &Decision {
        self.tick_after(INTERVAL)
    }

    pub(super) fn tick_after(&mut self, gap: Duration) -> &Decision {
        let due = self.now + gap;
        self.tick_due(due, due)
    }

    /// A scheduled tick due at `due` that starts at `at` (at or after `due`: a late
    /// tick), for the spacing of counted failures.
    pub(super) fn tick_due(&mut self, due: Instant, at: Instant) -> &Decision {
        let gap = at.saturating_duration_since(self.now);
        self.now += gap;
        self.wall += gap.as_secs_f64();
        let obs = self.world.observe(self.wall);
        let decision = self.engine.step_due(self.now, due, &obs, self.leadership);
        if decision.acts {
            for action in &decision.actions {
                if let Action::RecordPromoting { epoch, .. } = action {
                    let current = self.world.record_exists.then_some(self.world.record.epoch);
                    assert!(*epoch > current.unwrap_or(0), "epoch must advance");
                }
            }
            for (action, ok) in self.world.apply(&decision.actions, self.wall) {
                self.engine.handle_result(self.now, &action, ok);
                // As the runner does with the actuator's report of a record action.
                if ok && action.writes_record() && self.world.record_exists {
                    self.engine.record_stored(&self.world.record);
                }
            }
        }
        self.world.tick_done();
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
                reason: ReasonCode::PrimaryDownQuorum,
                primary_deployments: vec![DeploymentRef {
                    name: "env0-agent-trigger-deployment".into(),
                    uid: Some("primary-uid".into()),
                }],
            },
            Action::ScaleStandbyUp { epoch: 1 }
        ],
        "the record is written before anything is scaled; an unlistable primary is \
         not fenced in the same tick"
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
        Some(&Action::FencePrimary {
            epoch: 1,
            names: vec!["env0-agent-trigger-deployment".into()]
        }),
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
    assert!(
        matches!(
            d.actions.as_slice(),
            [
                Action::FencePrimary { epoch: 1, .. },
                Action::Announce {
                    reason: ReasonCode::DualActive
                }
            ]
        ),
        "the returning primary still wants replicas: fenced, and dual-active is told: {:?}",
        d.actions
    );
    assert!(d.dual_active);
    sim.tick();
    assert_eq!(sim.world.primary_desired, 0);
    assert!(sim.world.record.fenced_at.is_some());

    // A helm upgrade on the old primary brings the trigger back: fenced again.
    sim.world.primary_desired = 1;
    sim.world.primary_workload = ProbeReason::Ok;
    let d = sim.tick().clone();
    assert!(matches!(
        d.actions.first(),
        Some(Action::FencePrimary { .. })
    ));
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
    assert_eq!(sim.count(|a| matches!(a, Action::FencePrimary { .. })), 0);
    assert_eq!(sim.world.primary_desired, 1);
}

#[test]
fn invariant1_a_primary_never_seen_healthy_never_promotes() {
    let mut sim = Sim::auto();
    sim.world.primary_down();
    sim.run(4);
    assert_eq!(sim.promotions(), 0);
    assert!(sim.log.iter().all(|d| d.state == GroupState::Starting));
    assert!(
        sim.log[3]
            .reasons
            .contains(&ReasonCode::PrimaryNeverHealthy)
    );
    sim.run(3_000);
    assert_eq!(
        sim.promotions(),
        0,
        "a config typo on first deploy must not promote, however long it runs"
    );
    assert_eq!(sim.state(), GroupState::Starting);
    // Once seen healthy, the same outage promotes.
    sim.world.primary_up();
    sim.run(2);
    assert_eq!(sim.state(), GroupState::PrimaryActive);
    sim.world.primary_down();
    sim.run(3);
    assert_eq!(sim.promotions(), 1);
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
    let mut back = sim.world.record.clone();
    back.phase = Some(RecordPhase::Primary);
    sim.world.store(back);
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
    sim.world = healthy_world();
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
fn invariant5_a_stalled_loop_forgets_what_came_before_and_holds_nothing_after() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_down();
    sim.run(2);
    // The loop stalls after two failures of three: the tick after the gap decides
    // nothing, and the two failures before it do not count.
    let d = sim.tick_after(Duration::from_secs(5)).clone();
    assert_eq!(d.state, GroupState::Frozen);
    assert_eq!(d.reasons[0], ReasonCode::LoopStalled);
    assert_eq!(d.verdict, Verdict::Unknown);
    assert!(d.actions.is_empty());
    assert!(d.signals.iter().all(|s| s.consecutive_failures == 0));
    // Fresh evidence counts from the next tick: three new failures promote, two do not.
    sim.run(2);
    assert_eq!(sim.promotions(), 0);
    assert_eq!(sim.state(), GroupState::PrimarySuspect);
    sim.run(1);
    assert_eq!(sim.promotions(), 1, "no fixed hold after a hiccup");
}

#[test]
fn invariant5_a_signal_down_before_a_stall_must_fail_again_after_it() {
    let mut sim = Sim::warmed_up();
    // The primary is down and cannot be promoted (the standby's API refuses).
    sim.world.standby_api = ProbeReason::Refused;
    sim.world.primary_down();
    sim.run(4);
    assert_eq!(sim.state(), GroupState::Blocked);
    assert!(sim.log.last().unwrap().primary_down);
    sim.tick_after(Duration::from_secs(5));
    sim.run(1);
    let d = sim.log.last().unwrap();
    assert!(
        !d.primary_down,
        "the failures before the gap no longer count"
    );
    assert_eq!(d.state, GroupState::PrimarySuspect);
}

#[test]
fn invariant5_repeated_hiccups_on_a_busy_host_delay_a_promotion_by_one_interval_each() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_down();
    // A stall every fourth tick: each one restarts the count, and the run after it
    // promotes as soon as it has three fresh failures.
    sim.run(1);
    sim.tick_after(Duration::from_millis(2_500));
    sim.run(2);
    assert_eq!(sim.promotions(), 0);
    sim.tick_after(Duration::from_millis(2_500));
    sim.run(3);
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
    assert_eq!(
        sim.count(|a| matches!(a, Action::ScaleStandbyDown { .. })),
        0
    );
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
    assert!(d.actions.contains(&Action::ScaleStandbyUp { epoch: 1 }));
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
    assert_eq!(
        d.actions,
        vec![
            Action::ScaleStandbyDown { epoch: 0 },
            Action::Announce {
                reason: ReasonCode::DualActive
            }
        ]
    );
    assert!(d.dual_active, "both sides want replicas in this tick");
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
    assert_eq!(
        sim.count(|a| matches!(a, Action::ScaleStandbyDown { .. })),
        0
    );
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
    let before = sim.count(|a| matches!(a, Action::ScaleStandbyUp { .. }));
    sim.run(200);
    let retries = sim.count(|a| matches!(a, Action::ScaleStandbyUp { .. })) - before;
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
    sim.world.store(FailoverRecord {
        phase: Some(RecordPhase::Promoting),
        epoch: 4,
        promoted_at_unix: Some(sim.wall as i64),
        ..FailoverRecord::default()
    });
    sim.world.primary_down();
    let d = sim.tick().clone();
    assert_eq!(
        d.state,
        GroupState::Promoting,
        "no startup grace for a recorded promotion"
    );
    assert_eq!(d.actions, vec![Action::ScaleStandbyUp { epoch: 4 }]);
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

/// Sets every primary signal's answer.
fn primary_answers(world: &mut World, reason: ProbeReason) {
    world.primary_api = reason;
    world.primary_workload = reason;
}

#[test]
fn invariant1_revoked_credentials_never_promote_and_say_the_watcher_is_blind() {
    let mut sim = Sim::warmed_up();
    primary_answers(&mut sim.world, ProbeReason::Unauthorized);
    sim.world.primary_listable = false;
    sim.run(30);
    assert_eq!(sim.promotions(), 0, "401 is unknown, not down");
    assert_eq!(sim.state(), GroupState::PrimaryUnobservable);
    let last = sim.log.last().unwrap();
    assert_eq!(last.reasons[0], ReasonCode::PrimaryCredentialsRejected);
    assert!(!last.primary_down);
    let announced = sim.count(|a| {
        *a == Action::Announce {
            reason: ReasonCode::PrimaryCredentialsRejected,
        }
    });
    assert_eq!(announced, 1, "one Event per episode");
    // The first ticks are suspect, the blind state comes after failure_threshold.
    let first_blind = sim
        .log
        .iter()
        .position(|d| d.state == GroupState::PrimaryUnobservable)
        .unwrap();
    assert_eq!(first_blind, 10 + 2, "after three unknown answers");
    // Credentials fixed: back to primary_active, nothing happened in between.
    primary_answers(&mut sim.world, ProbeReason::Ok);
    sim.world.primary_listable = true;
    sim.run(2);
    assert_eq!(sim.state(), GroupState::PrimaryActive);
    assert_eq!(sim.world.standby_desired, 0);
}

#[test]
fn invariant1_forbidden_or_a_vanished_selection_is_unknown() {
    for (reason, code) in [
        (ProbeReason::Forbidden, ReasonCode::PrimaryForbidden),
        (ProbeReason::NotFound, ReasonCode::PrimaryWorkloadMissing),
        (ProbeReason::Tls, ReasonCode::PrimaryTlsRejected),
        (ProbeReason::Decode, ReasonCode::PrimaryAnswerUndecodable),
    ] {
        let mut sim = Sim::warmed_up();
        // The API answers /readyz; only the workload signal is blind.
        sim.world.primary_workload = reason;
        sim.run(30);
        assert_eq!(sim.promotions(), 0, "{reason:?}");
        assert_eq!(sim.state(), GroupState::PrimaryUnobservable, "{reason:?}");
        assert_eq!(sim.log.last().unwrap().reasons[0], code);
    }
}

/// Hundreds of watches starting together: the workload signal answers `error` (its
/// watch has not listed yet) for longer than `failure_threshold` ticks while the API
/// answers.
fn watches_listing_for(sim: &mut Sim, ticks: usize, flagged: bool) {
    sim.world.primary_workload = ProbeReason::Error;
    sim.world.watches_starting = flagged;
    sim.run(ticks);
    sim.world.primary_workload = ProbeReason::Ok;
    sim.world.watches_starting = false;
}

#[test]
fn invariant1_watches_still_listing_at_start_keep_the_group_starting() {
    // Four ticks of unlisted watches, within the 5 s startup grace: not judged yet.
    let mut sim = Sim::auto();
    watches_listing_for(&mut sim, 4, true);
    for d in &sim.log {
        assert_eq!(d.state, GroupState::Starting, "{:?}", d.reasons);
        assert_eq!(d.reasons[0], ReasonCode::WatchesStarting);
        assert!(
            d.actions
                .iter()
                .all(|a| !matches!(a, Action::Announce { .. }))
        );
    }
    sim.run(10);
    assert_eq!(sim.state(), GroupState::PrimaryActive);
    // Nothing between the start and primary_active: the group never left it.
    let states: Vec<GroupState> = sim.log.iter().map(|d| d.state).collect();
    let first_active = states
        .iter()
        .position(|s| *s == GroupState::PrimaryActive)
        .unwrap();
    assert!(
        states[..first_active]
            .iter()
            .all(|s| *s == GroupState::Starting)
    );
    assert!(
        states[first_active..]
            .iter()
            .all(|s| *s == GroupState::PrimaryActive)
    );
    assert_eq!(sim.promotions(), 0);

    // Control: the same answers without the mark (a watch failing for another reason)
    // make the watcher blind after failure_threshold ticks, as before.
    let mut control = Sim::auto();
    watches_listing_for(&mut control, 4, false);
    assert_eq!(control.log[2].state, GroupState::PrimaryUnobservable);
}

#[test]
fn invariant1_watches_that_never_list_are_blind_after_the_startup_grace() {
    let mut sim = Sim::auto();
    sim.world.primary_workload = ProbeReason::Error;
    sim.world.watches_starting = true;
    sim.run(4);
    assert_eq!(sim.state(), GroupState::Starting);
    // The grace is 5 s: from then on the unlisted watch is a blind spot like any other.
    sim.run(2);
    assert_eq!(sim.state(), GroupState::PrimaryUnobservable);
    assert_eq!(sim.log.last().unwrap().reasons[0], ReasonCode::PrimaryError);
    assert_eq!(sim.promotions(), 0);
}

#[test]
fn invariant1_only_a_plain_unlisted_watch_is_excused_at_start() {
    // A cause on the watcher's side is loud even while other watches still list.
    let mut sim = Sim::auto();
    sim.world.primary_workload = ProbeReason::Forbidden;
    sim.world.watches_starting = true;
    sim.run(3);
    assert_eq!(sim.state(), GroupState::PrimaryUnobservable);
    assert_eq!(
        sim.log.last().unwrap().reasons[0],
        ReasonCode::PrimaryForbidden
    );

    // A watch that listed and is lost later is unknown as always, whatever the mark.
    let mut sim = Sim::warmed_up();
    sim.world.primary_workload = ProbeReason::Error;
    sim.world.watches_starting = true;
    sim.run(3);
    assert_eq!(sim.state(), GroupState::PrimaryUnobservable);
}

#[test]
fn invariant1_a_blind_tick_between_failures_restarts_the_count() {
    let mut sim = Sim::warmed_up();
    for _ in 0..50 {
        primary_answers(&mut sim.world, ProbeReason::Refused);
        sim.run(2);
        primary_answers(&mut sim.world, ProbeReason::Unauthorized);
        sim.run(1);
    }
    assert_eq!(sim.promotions(), 0);
}

#[test]
fn invariant3_readyz_failing_while_the_api_serves_promotes_and_fences_at_once() {
    let mut sim = Sim::warmed_up();
    // /readyz answers 500, Deployments are still listed and scaled.
    sim.world.primary_api = ProbeReason::HttpStatus;
    sim.run(2);
    let d = sim.tick().clone();
    assert_eq!(d.state, GroupState::Promoting);
    let kinds: Vec<&str> = d.actions.iter().map(Action::kind).collect();
    assert_eq!(
        kinds,
        ["record_promoting", "fence_primary", "scale_standby_up"],
        "fenced before the standby is scaled up"
    );
    assert_eq!(sim.world.primary_desired, 0);
    assert_eq!(sim.world.standby_desired, 1);
    sim.run(5);
    assert_eq!(sim.state(), GroupState::Promoted);
    assert!(sim.log.iter().all(|d| !d.dual_active), "never both active");
    assert!(sim.world.record.fenced_at.is_some());
}

#[test]
fn invariant3_an_empty_selection_never_counts_as_fenced() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_down();
    sim.run(5);
    assert_eq!(sim.state(), GroupState::Promoted);
    // The primary returns, but its Deployment was relabelled: the selector matches
    // nothing and the record names nothing (an old record).
    let mut rec = sim.world.record.clone();
    rec.primary_deployments.clear();
    sim.world.store(rec);
    sim.engine = Engine::new(sim.engine.settings().clone(), sim.now);
    sim.world.primary_up();
    let obs_empty = |w: &World, wall| {
        let mut obs = w.observe(wall);
        obs.primary.deployments = Some(vec![]);
        obs
    };
    for _ in 0..10 {
        sim.now += INTERVAL;
        sim.wall += 1.0;
        let d = sim.engine.step(sim.now, &obs_empty(&sim.world, sim.wall));
        assert!(
            !d.actions
                .iter()
                .any(|a| matches!(a, Action::RecordFenced { .. })),
            "{:?}",
            d.actions
        );
        assert!(!d.reasons.contains(&ReasonCode::PrimaryFenced));
    }
}

#[test]
fn invariant3_a_recorded_deployment_is_fenced_by_name_and_must_be_seen_at_zero() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_down();
    sim.run(5);
    assert_eq!(sim.state(), GroupState::Promoted);
    assert_eq!(
        sim.engine.recorded_primary_names(),
        vec!["env0-agent-trigger-deployment".to_string()],
        "the probe reads it by name"
    );
    sim.world.primary_up();
    // The recorded Deployment is not in the answer (neither selected nor absent): not
    // fenced yet, whatever the other views say.
    sim.now += INTERVAL;
    sim.wall += 1.0;
    let mut obs = sim.world.observe(sim.wall);
    obs.primary.deployments = Some(vec![DeploymentView {
        name: "other".into(),
        uid: None,
        desired: 0,
        available: 0,
        ready_pods: 0,
        epoch: None,
    }]);
    let d = sim.engine.step(sim.now, &obs);
    assert!(d.reasons.contains(&ReasonCode::FencingPrimary));
    assert!(!d.reasons.contains(&ReasonCode::PrimaryFenced));
    // Gone (404 by name): it runs nothing, fenced.
    sim.now += INTERVAL;
    sim.wall += 1.0;
    obs.wall_unix = sim.wall;
    obs.primary.absent = vec!["env0-agent-trigger-deployment".into()];
    let d = sim.engine.step(sim.now, &obs);
    assert!(d.reasons.contains(&ReasonCode::PrimaryFenced), "{d:?}");
}

/// A fresh heartbeat of one guard beside the primary's agent.
fn primary_guard(identity: &str, running: bool, epoch: Option<u64>, age: f64) -> GuardBeat {
    GuardBeat {
        identity: identity.into(),
        side: Side::Primary,
        running,
        standby_epoch: epoch,
        reason: if running {
            "record_primary"
        } else {
            "other_side_active"
        }
        .into(),
        age_seconds: age,
        ttl_seconds: 15.0,
        isolation_ttl_seconds: None,
        stop_within_seconds: 0.0,
        form: GuardForm::Wrapper,
    }
}

fn guards(expected_primary: u32, beats: Vec<GuardBeat>) -> Option<GuardsObservation> {
    Some(GuardsObservation {
        expected_primary,
        expected_standby: 0,
        beats: Ok(beats),
    })
}

#[test]
fn guards_that_stopped_the_primary_agents_fence_it_while_its_api_is_dead() {
    let mut sim = Sim::warmed_up();
    sim.world.guards = guards(2, vec![]);
    sim.world.primary_down();
    sim.run(5);
    assert_eq!(sim.state(), GroupState::Promoted);
    assert_eq!(sim.world.record.fenced_at, None, "nothing proves it yet");
    // Both guards stop their agents at epoch 1; the primary's API stays dead.
    sim.world.guards = guards(
        2,
        vec![
            primary_guard("trigger-0", false, Some(1), 0.5),
            primary_guard("proxy-0", false, Some(1), 2.0),
        ],
    );
    let d = sim.tick().clone();
    assert!(
        d.reasons.contains(&ReasonCode::PrimaryStoppedByGuards),
        "{d:?}"
    );
    assert!(d.reasons.contains(&ReasonCode::PrimaryUnreachable));
    assert!(sim.world.record.fenced_at.is_some(), "{d:?}");
    assert_eq!(sim.world.record.fenced_by, Some(FencedBy::Guard));
    // Recorded once.
    let d = sim.tick().clone();
    assert!(
        !d.actions
            .iter()
            .any(|a| matches!(a, Action::RecordFenced { .. }))
    );
    // The API returns with the Deployment still at 1: it is scaled to 0 all the same.
    sim.world.primary_up();
    let d = sim.tick().clone();
    assert!(
        d.actions
            .iter()
            .any(|a| matches!(a, Action::FencePrimary { epoch: 1, .. })),
        "{d:?}"
    );
    sim.run(2);
    assert_eq!(sim.world.primary_desired, 0);
    assert_eq!(sim.world.record.fenced_by, Some(FencedBy::Guard), "kept");
}

#[test]
fn invariant10_sidecar_guards_never_fence_even_when_every_one_refuses_at_the_epoch() {
    // A sidecar guard's refusal makes kubelet kill the agent's container, which it then
    // restarts: the agent runs again until the next failed probe. Its heartbeat is no
    // proof of a stop, alone or beside wrapper guards that did stop.
    let sidecar = |identity: &str| GuardBeat {
        form: GuardForm::Sidecar,
        ..primary_guard(identity, false, Some(1), 0.5)
    };
    for beats in [
        vec![sidecar("trigger-0"), sidecar("proxy-0")],
        vec![
            primary_guard("trigger-0", false, Some(1), 0.5),
            sidecar("proxy-0"),
        ],
        vec![
            primary_guard("trigger-0", false, Some(1), 0.5),
            primary_guard("proxy-0", false, Some(1), 0.5),
            sidecar("proxy-1"),
        ],
    ] {
        let mut sim = Sim::warmed_up();
        sim.world.guards = guards(2, vec![]);
        sim.world.primary_down();
        sim.run(5);
        assert_eq!(sim.state(), GroupState::Promoted, "the promotion is done");
        sim.world.guards = guards(2, beats.clone());
        assert!(
            sim.world
                .guards
                .as_ref()
                .is_some_and(|g| g.fresh(Side::Primary).count() >= 2)
        );
        sim.run(5);
        assert_eq!(sim.world.record.fenced_at, None, "{beats:?}");
        assert!(
            sim.log
                .iter()
                .all(|d| !d.reasons.contains(&ReasonCode::PrimaryStoppedByGuards)),
            "{beats:?}"
        );
    }
    // The control: the same two beats from wrappers fence it.
    let mut sim = Sim::warmed_up();
    sim.world.guards = guards(2, vec![]);
    sim.world.primary_down();
    sim.run(5);
    sim.world.guards = guards(
        2,
        vec![
            primary_guard("trigger-0", false, Some(1), 0.5),
            primary_guard("proxy-0", false, Some(1), 0.5),
        ],
    );
    sim.tick();
    assert_eq!(sim.world.record.fenced_by, Some(FencedBy::Guard));
}

#[test]
fn guards_prove_nothing_when_one_is_missing_stale_running_behind_or_unreadable() {
    let cases: Vec<(&str, Option<GuardsObservation>)> = vec![
        (
            "one of two expected",
            guards(2, vec![primary_guard("a", false, Some(1), 0.5)]),
        ),
        (
            "a stale stopped heartbeat",
            guards(1, vec![primary_guard("a", false, Some(1), 16.0)]),
        ),
        (
            "another guard still runs its agent",
            guards(
                1,
                vec![
                    primary_guard("a", false, Some(1), 0.5),
                    primary_guard("b", true, None, 0.5),
                ],
            ),
        ),
        (
            "stopped at an older epoch",
            guards(1, vec![primary_guard("a", false, None, 0.5)]),
        ),
        (
            "the heartbeats could not be read",
            Some(GuardsObservation {
                expected_primary: 1,
                expected_standby: 0,
                beats: Err(ProbeOutcome {
                    reason: ProbeReason::Forbidden,
                    latency: Duration::ZERO,
                    detail: String::new(),
                }),
            }),
        ),
        (
            "no guard expected",
            guards(0, vec![primary_guard("a", false, Some(1), 0.5)]),
        ),
    ];
    for (case, observed) in cases {
        let mut sim = Sim::warmed_up();
        sim.world.primary_down();
        sim.run(5);
        assert_eq!(sim.state(), GroupState::Promoted, "{case}");
        sim.world.guards = observed;
        for _ in 0..5 {
            let d = sim.tick().clone();
            assert!(
                !d.reasons.contains(&ReasonCode::PrimaryStoppedByGuards),
                "{case}: {d:?}"
            );
        }
        assert_eq!(sim.world.record.fenced_at, None, "{case}");
    }
}

#[test]
fn guards_fence_a_promotion_still_in_progress_and_a_scale_down_records_scale() {
    let mut sim = Sim::warmed_up();
    sim.world.standby_ready_after = None; // never Ready: stays promoting
    sim.world.primary_down();
    sim.run(4);
    assert_eq!(
        sim.world.record.effective_phase(),
        RecordPhase::Promoting,
        "{:?}",
        sim.world.record
    );
    sim.world.guards = guards(1, vec![primary_guard("a", false, Some(1), 0.5)]);
    sim.tick();
    assert_eq!(sim.world.record.fenced_by, Some(FencedBy::Guard));

    // Without guards, the scale down proves it (as before).
    let mut sim = Sim::warmed_up();
    sim.world.primary_down();
    sim.run(5);
    sim.world.primary_up();
    sim.run(4);
    assert_eq!(sim.world.record.fenced_by, Some(FencedBy::Scale));
}

#[test]
fn invariant2_a_lost_record_is_restored_never_read_as_a_failback() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_down();
    sim.run(5);
    assert_eq!(sim.state(), GroupState::Promoted);
    let before = sim.world.record.clone();
    // Someone deletes the record; the primary comes back and is scaled up by hand.
    sim.world.record_exists = false;
    sim.world.record = FailoverRecord::default();
    sim.world.primary_up();
    sim.world.primary_desired = 1;
    sim.world.primary_workload = ProbeReason::Ok;
    sim.world.standby_api = ProbeReason::Refused; // the restore cannot land yet
    sim.world.primary_listable = true;
    // Standby unreachable: the record cannot be read at all; stays promoted.
    sim.run(3);
    assert_eq!(sim.state(), GroupState::Promoted);
    sim.world.standby_api = ProbeReason::Ok;
    let d = sim.tick().clone();
    assert!(d.reasons.contains(&ReasonCode::RecordLost));
    assert_eq!(d.state, GroupState::Promoted, "no flip to the primary");
    assert!(
        d.actions
            .iter()
            .all(|a| matches!(a, Action::RestoreRecord { .. } | Action::Announce { .. })),
        "nothing is scaled until the record is back: {:?}",
        d.actions
    );
    assert_eq!(sim.world.record.epoch, before.epoch, "same epoch");
    assert_eq!(sim.world.record.phase, before.phase, "same phase");
    assert!(sim.world.record.restored_at.is_some());
    sim.run(3);
    assert_eq!(sim.world.primary_desired, 0, "fenced again");
    assert_eq!(sim.world.standby_desired, 1, "the standby stays active");
    assert_eq!(sim.promotions(), 1);
    assert_eq!(
        sim.count(|a| matches!(a, Action::ScaleStandbyDown { .. })),
        0
    );
}

#[test]
fn invariant2_a_restarted_daemon_finds_a_promotion_by_its_epoch_annotation() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_down();
    sim.run(5);
    assert_eq!(sim.world.standby_epoch, Some(1));
    // Record deleted while the daemon was down (or the group renamed).
    sim.world.record_exists = false;
    sim.world.record = FailoverRecord::default();
    sim.engine = Engine::new(sim.engine.settings().clone(), sim.now);
    sim.run(5);
    assert_eq!(
        sim.count(|a| matches!(a, Action::ScaleStandbyDown { .. })),
        0
    );
    assert_eq!(sim.world.standby_desired, 1);
    assert!(sim.world.record_exists);
    assert_eq!(sim.world.record.epoch, 1);
    assert!(sim.world.record.effective_phase().standby_active());
}

/// A completed promotion's writes follow the `promoted` record in the same decision:
/// the stale Terraform locks (with `clear_stale_locks`), then the Event; tried again
/// with the record while it cannot be written, and once after it was.
#[test]
fn a_completed_promotion_clears_stale_locks_and_announces_itself_once() {
    for clear in [true, false] {
        let mut sim = Sim::auto();
        let mut settings = sim.engine.settings().clone();
        settings.clear_stale_locks = clear;
        sim.engine = Engine::new(settings, sim.now);
        sim.run(10);
        sim.world.forbidden = vec!["record_promoted"];
        sim.world.primary_down();
        sim.run(8);
        assert_eq!(sim.state(), GroupState::Promoting, "clear = {clear}");
        let completing: Vec<Vec<&str>> = sim
            .log
            .iter()
            .filter(|d| d.actions.contains(&Action::RecordPromoted { epoch: 1 }))
            .map(|d| d.actions.iter().map(Action::kind).collect())
            .collect();
        assert!(completing.len() >= 2, "tried again: {completing:?}");
        let expected: &[&str] = if clear {
            &["record_promoted", "clear_stale_locks", "announce_promoted"]
        } else {
            &["record_promoted", "announce_promoted"]
        };
        assert!(completing.iter().all(|k| k == expected), "{completing:?}");
        sim.world.forbidden.clear();
        sim.run(20);
        assert_eq!(sim.state(), GroupState::Promoted);
        let after = sim
            .log
            .iter()
            .rev()
            .take(20)
            .filter(|d| d.actions.iter().any(|a| a.follows_promoted().is_some()))
            .count();
        assert_eq!(
            after, 1,
            "announced once the record is written, then never again"
        );
    }
}

/// A promotion completed by another writer (`kube-failover promote --wait`, or a leader
/// that stopped right after its write) gets its stale locks and Event from the leader
/// that sees it; a daemon that starts on a completed promotion repeats nothing.
#[test]
fn a_promotion_completed_elsewhere_is_announced_by_who_sees_it_complete() {
    let mut sim = Sim::warmed_up();
    sim.world.forbidden = vec!["scale_standby_up"];
    sim.world.primary_down();
    sim.run(5);
    assert_eq!(sim.state(), GroupState::Promoting);
    let mut promoted = sim.world.read_record().expect("written");
    promoted.phase = Some(RecordPhase::Promoted);
    sim.world.store(promoted.clone());
    let d = sim.tick().clone();
    let kinds: Vec<&str> = d.actions.iter().map(Action::kind).collect();
    assert!(
        kinds.ends_with(&["clear_stale_locks", "announce_promoted"])
            && !kinds.contains(&"record_promoted"),
        "{kinds:?}"
    );
    sim.run(5);
    assert_eq!(
        sim.count(|a| matches!(a, Action::AnnouncePromoted { .. })),
        1,
        "once"
    );
    // A daemon started on it: nothing to announce.
    let mut fresh = Sim::auto();
    fresh.world.store(promoted);
    fresh.run(10);
    assert_eq!(fresh.state(), GroupState::Promoted);
    assert_eq!(
        fresh.count(|a| a.follows_promoted().is_some()),
        0,
        "a restart never repeats it"
    );
}

/// Found by the fault campaign: the record is deleted right after the `promoting` write,
/// before the scale-up annotated anything (here it fails). It comes back at the epoch
/// just written, never as the older copy read before the write: the next promotion would
/// have reused that epoch.
#[test]
fn invariant2_a_record_lost_right_after_its_promoting_write_comes_back_at_its_epoch() {
    let mut sim = Sim::warmed_up();
    sim.world.forbidden = vec!["scale_standby_up"];
    sim.world.primary_down();
    for _ in 0..10 {
        sim.tick();
        if sim.world.record.phase == Some(RecordPhase::Promoting) {
            break;
        }
    }
    assert_eq!(sim.world.record.phase, Some(RecordPhase::Promoting));
    let epoch = sim.world.record.epoch;
    assert_eq!(sim.world.standby_epoch, None, "nothing annotated");
    sim.world.record_exists = false;
    sim.world.record = FailoverRecord::default();
    let d = sim.tick().clone();
    assert!(
        d.reasons.contains(&ReasonCode::RecordLost),
        "{:?}",
        d.reasons
    );
    assert!(sim.world.record_exists);
    assert_eq!(sim.world.record.epoch, epoch, "written back at its epoch");
    assert!(sim.world.record.effective_phase().standby_active());
    sim.world.forbidden.clear();
    sim.run(5);
    assert_eq!(sim.promotions(), 1, "never promoted again");
    assert_eq!(sim.world.record.epoch, epoch);
    assert_eq!(sim.world.standby_desired, 1);
}

/// The same with a daemon that restarted while the record was gone: it never saw the
/// promotion's record, and finds it by the epoch annotation of the standby's Deployments
/// that still want replicas.
#[test]
fn invariant2_a_restarted_daemon_writes_over_a_record_recreated_below_the_annotation() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_down();
    sim.run(5);
    assert_eq!(sim.world.standby_epoch, Some(1));
    sim.world.record_exists = false;
    sim.world.record = FailoverRecord::default();
    sim.world.store(FailoverRecord {
        paused_by: Some("alice".into()),
        ..FailoverRecord::default()
    });
    sim.engine = Engine::new(sim.engine.settings().clone(), sim.now);
    sim.run(5);
    assert_eq!(
        sim.count(|a| matches!(a, Action::ScaleStandbyDown { .. })),
        0
    );
    assert_eq!(sim.world.standby_desired, 1);
    assert_eq!(sim.world.record.epoch, 1);
    assert!(sim.world.record.effective_phase().standby_active());
    assert_eq!(sim.world.record.paused_by.as_deref(), Some("alice"));
}

#[test]
fn invariant2_epochs_never_repeat_after_a_record_is_recreated() {
    let mut sim = Sim::warmed_up();
    sim.world.standby_epoch = Some(5); // left by an earlier promotion, now at 0
    sim.world.primary_down();
    sim.run(3);
    assert_eq!(sim.promotions(), 1);
    assert_eq!(sim.world.record.epoch, 6);
}

#[test]
fn invariant1_the_cooldown_survives_a_restart_after_a_failback() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_down();
    sim.run(10);
    // Failback long after the promotion (its own cooldown has passed).
    sim.run(700);
    sim.world.standby_desired = 0;
    let mut back = sim.world.record.clone();
    back.phase = Some(RecordPhase::Primary);
    sim.world.store(back);
    sim.world.primary_desired = 1;
    sim.world.primary_up();
    sim.run(3);
    assert!(sim.world.record.failback_at_unix.is_some(), "stamped");
    // The daemon restarts, the primary fails again within the cooldown.
    sim.engine = Engine::new(sim.engine.settings().clone(), sim.now);
    sim.run(10);
    sim.world.primary_down();
    sim.run(30);
    assert_eq!(sim.promotions(), 1, "no promotion inside the cooldown");
    assert!(
        sim.log
            .last()
            .unwrap()
            .reasons
            .contains(&ReasonCode::Cooldown)
    );
}

#[test]
fn invariant6_dual_active_and_no_active_side_are_seen_whatever_the_config() {
    let mut sim = Sim::new(
        PolicyConfig {
            correct_standby: false,
            fence: false,
            ..policy()
        },
        Mode::Auto,
    );
    sim.run(10);
    sim.world.standby_desired = 1;
    let d = sim.tick().clone();
    assert!(d.dual_active);
    assert_eq!(d.reasons[0], ReasonCode::DualActive);
    sim.run(5);
    assert_eq!(
        sim.count(|a| *a
            == Action::Announce {
                reason: ReasonCode::DualActive
            }),
        1
    );
    // Both at 0 while the record says primary (observe mode: nobody promotes): no
    // active side once promotion_timeout has passed.
    let mut sim = Sim::new(policy(), Mode::Observe);
    sim.run(10);
    sim.world.primary_desired = 0;
    sim.world.primary_workload = ProbeReason::ScaledToZero;
    sim.run(29);
    assert!(!sim.log.last().unwrap().no_active_side);
    sim.run(2);
    let last = sim.log.last().unwrap();
    assert!(last.no_active_side && !last.dual_active);
    assert!(last.reasons.contains(&ReasonCode::NoActiveSide));
}

#[test]
fn a_forbidden_scale_while_promoting_backs_off() {
    let mut sim = Sim::warmed_up();
    sim.world.forbidden.push("scale_standby_up");
    sim.world.primary_down();
    sim.run(3);
    assert_eq!(sim.state(), GroupState::Promoting);
    let before = sim.count(|a| matches!(a, Action::ScaleStandbyUp { .. }));
    sim.run(25);
    let tries = sim.count(|a| matches!(a, Action::ScaleStandbyUp { .. })) - before;
    assert!(
        (2..=6).contains(&tries),
        "{tries} tries in 25 ticks: backoff, not every tick"
    );
    assert!(
        sim.log
            .iter()
            .any(|d| d.reasons.contains(&ReasonCode::RetryBackoff))
    );
}

#[test]
fn standby_causes_are_named() {
    let mut sim = Sim::warmed_up();
    sim.world.standby_api = ProbeReason::Forbidden;
    sim.world.primary_down();
    sim.run(5);
    let last = sim.log.last().unwrap();
    assert_eq!(last.state, GroupState::Blocked);
    assert!(
        last.reasons.contains(&ReasonCode::StandbyForbidden),
        "{last:?}"
    );
    sim.world.standby_api = ProbeReason::Ok;
    sim.world.standby_present = false;
    sim.run(1);
    assert!(
        sim.log
            .last()
            .unwrap()
            .reasons
            .contains(&ReasonCode::StandbyWorkloadMissing)
    );
}

#[test]
fn signals_are_matched_by_id_not_by_position() {
    let mut sim = Sim::warmed_up();
    // The same outcomes in another order, plus one for a signal not configured.
    sim.world.primary_workload = ProbeReason::Unready;
    sim.now += INTERVAL;
    sim.wall += 1.0;
    let mut obs = sim.world.observe(sim.wall);
    obs.primary.workloads.insert(
        0,
        (
            SignalId::Workload("not-configured".into()),
            ProbeOutcome::ok(Duration::ZERO),
        ),
    );
    let d = sim.engine.step(sim.now, &obs);
    let trigger = d.signals.iter().find(|s| s.id == trigger_signal()).unwrap();
    assert_eq!(trigger.last_reason, Some(ProbeReason::Unready));
    assert_eq!(d.signals.len(), 2, "an unconfigured outcome adds no signal");
    // A configured signal missing from the observation is unknown, never down.
    obs.primary.workloads.clear();
    for _ in 0..10 {
        sim.now += INTERVAL;
        sim.wall += 1.0;
        obs.wall_unix = sim.wall;
        let d = sim.engine.step(sim.now, &obs);
        assert!(!d.primary_down);
    }
}

fn observer(identity: &str, verdict: Verdict, age_secs: u64) -> ObserverReport {
    ObserverReport {
        identity: identity.into(),
        verdict,
        age: Some(Duration::from_secs(age_secs)),
        down_signals: Vec::new(),
        down_since_unix: None,
    }
}

fn observer_quorum(quorum: u32) -> PolicyConfig {
    PolicyConfig {
        observers: crate::policy::ObserverPolicy {
            quorum,
            expected: Some(3),
            ttl: None,
        },
        ..policy()
    }
}

#[test]
fn observer_quorum_one_is_the_single_daemon() {
    let mut sim = Sim::new(observer_quorum(1), Mode::Auto);
    sim.run(10);
    sim.world.primary_down();
    sim.run(3);
    assert_eq!(sim.promotions(), 1, "no other observer is needed");
}

#[test]
fn observer_quorum_waits_for_a_second_fresh_down() {
    let mut sim = Sim::new(observer_quorum(2), Mode::Auto);
    sim.world.observers = vec![observer("b", Verdict::Up, 1), observer("c", Verdict::Up, 1)];
    sim.run(10);
    assert_eq!(sim.log.last().unwrap().verdict, Verdict::Up);
    sim.world.primary_down();
    sim.run(20);
    assert_eq!(sim.promotions(), 0, "the others see the primary up");
    let d = sim.log.last().unwrap();
    assert_eq!(d.state, GroupState::Blocked);
    assert_eq!(d.verdict, Verdict::Down);
    assert!(
        d.reasons.contains(&ReasonCode::ObserverQuorumNotMet),
        "{:?}",
        d.reasons
    );

    // A stale `down` (older than three intervals) does not count.
    sim.world.observers[0] = observer("b", Verdict::Down, 4);
    sim.run(5);
    assert_eq!(sim.promotions(), 0);

    // One identity counts once.
    sim.world.observers = vec![
        observer("b", Verdict::Down, 9),
        observer("b", Verdict::Up, 1),
    ];
    sim.run(3);
    assert_eq!(sim.promotions(), 0);

    sim.world.observers = vec![
        observer("b", Verdict::Down, 1),
        observer("c", Verdict::Up, 1),
    ];
    sim.tick();
    assert_eq!(
        sim.promotions(),
        1,
        "two fresh `down` of three promote at once"
    );
    sim.run(30);
    assert_eq!(sim.promotions(), 1);
    assert_eq!(sim.state(), GroupState::Promoted);
}

#[test]
fn observer_quorum_unreachable_when_too_few_are_fresh() {
    let mut sim = Sim::new(observer_quorum(2), Mode::Auto);
    sim.run(10);
    sim.world.primary_down();
    sim.run(10);
    assert_eq!(
        sim.promotions(),
        0,
        "alone, this instance cannot make a quorum of 2"
    );
    let d = sim.log.last().unwrap();
    assert_eq!(d.state, GroupState::Blocked);
    assert!(
        d.reasons.contains(&ReasonCode::ObserverQuorumUnreachable),
        "{:?}",
        d.reasons
    );
    // An observer whose age is unknown is never fresh.
    sim.world.observers = vec![ObserverReport {
        age: None,
        ..observer("b", Verdict::Down, 0)
    }];
    sim.run(3);
    assert_eq!(sim.promotions(), 0);
}

#[test]
fn a_partitioned_observer_alone_never_promotes() {
    // This instance sees the primary down (its own path is cut); the others see it up.
    let mut sim = Sim::new(observer_quorum(2), Mode::Auto);
    sim.world.observers = vec![observer("b", Verdict::Up, 0), observer("c", Verdict::Up, 0)];
    sim.run(10);
    sim.world.primary_down();
    sim.run(200);
    assert_eq!(sim.promotions(), 0);
    assert_eq!(sim.world.standby_desired, 0);
}

#[test]
fn observer_quorum_never_blocks_fencing_or_a_recorded_promotion() {
    let mut sim = Sim::new(observer_quorum(2), Mode::Auto);
    sim.world.observers = vec![observer("b", Verdict::Down, 0)];
    sim.run(10);
    sim.world.primary_down();
    sim.run(3);
    assert_eq!(sim.promotions(), 1);
    // The observers disappear (their hosts died) right after the record was written.
    sim.world.observers.clear();
    sim.run(5);
    assert_eq!(sim.state(), GroupState::Promoted, "the promotion completes");
    // The old primary comes back: it is fenced without any observer.
    sim.world.primary_desired = 1;
    sim.world.primary_up();
    sim.run(3);
    assert_eq!(sim.world.primary_desired, 0, "fenced");
}

#[test]
fn verdict_is_unknown_while_blind_and_suspect_while_failing() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_workload = ProbeReason::Unready;
    sim.world.primary_api = ProbeReason::Ok;
    let d = sim.tick().clone();
    assert_eq!(d.verdict, Verdict::Suspect);
    let mut sim = Sim::warmed_up();
    sim.world.primary_workload = ProbeReason::Forbidden;
    sim.run(3);
    assert_eq!(sim.log.last().unwrap().verdict, Verdict::Unknown);
}

/// An operator's pause written into the record, as `kube-failover pause` does.
fn pause(sim: &mut Sim, until: Option<f64>) {
    let mut r = sim.world.record.clone();
    r.paused_by = Some("alice".into());
    r.paused_until_unix = until.map(|t| t as i64);
    r.pause_reason = "maintenance".into();
    sim.world.store(r);
}

fn resume(sim: &mut Sim) {
    let mut r = sim.world.record.clone();
    r.paused_by = None;
    r.paused_until_unix = None;
    sim.world.store(r);
}

#[test]
fn pause_during_an_outage_never_promotes_and_resume_does() {
    let mut sim = Sim::warmed_up();
    pause(&mut sim, None);
    let d = sim.tick().clone();
    assert_eq!(d.state, GroupState::Paused);
    assert_eq!(d.reasons[0], ReasonCode::Paused);
    sim.world.primary_down();
    sim.run(60);
    assert_eq!(sim.promotions(), 0);
    assert!(sim.log.iter().rev().take(60).all(|d| d.actions.is_empty()));
    let last = sim.log.last().unwrap();
    assert_eq!(last.state, GroupState::Paused);
    assert!(last.primary_down, "probing goes on: the outage is seen");
    assert_eq!(last.verdict, Verdict::Down);
    assert!(!last.reasons.contains(&ReasonCode::PromotionStarted));
    resume(&mut sim);
    sim.run(3);
    assert_eq!(sim.promotions(), 1);
    assert_eq!(sim.world.record.epoch, 1);
}

#[test]
fn an_expired_pause_is_ignored() {
    let mut sim = Sim::warmed_up();
    let until = sim.wall + 5.0;
    pause(&mut sim, Some(until));
    sim.world.primary_down();
    sim.run(4);
    assert_eq!(sim.promotions(), 0);
    assert_eq!(sim.state(), GroupState::Paused);
    sim.run(4);
    assert_eq!(sim.promotions(), 1, "the pause ended by itself");
}

#[test]
fn a_pause_keeps_dual_active_detection_but_corrects_and_fences_nothing() {
    let mut sim = Sim::warmed_up();
    pause(&mut sim, None);
    sim.world.standby_desired = 1;
    let d = sim.tick().clone();
    assert_eq!(d.state, GroupState::Paused);
    assert!(d.dual_active);
    assert_eq!(d.reasons[0], ReasonCode::DualActive);
    assert_eq!(
        d.actions,
        vec![Action::Announce {
            reason: ReasonCode::DualActive
        }],
        "told, never corrected"
    );
    sim.run(5);
    assert_eq!(sim.world.standby_desired, 1);
    // The same with a promotion recorded: the old primary is not fenced while paused.
    let mut sim = Sim::warmed_up();
    sim.world.primary_down();
    sim.run(10);
    assert_eq!(sim.state(), GroupState::Promoted);
    pause(&mut sim, None);
    sim.world.primary_desired = 1;
    sim.world.primary_up();
    sim.run(5);
    assert_eq!(sim.world.primary_desired, 1, "not fenced while paused");
    assert!(sim.log.last().unwrap().dual_active);
    resume(&mut sim);
    sim.run(2);
    assert_eq!(sim.world.primary_desired, 0, "fenced once resumed");
}

#[test]
fn a_failback_in_progress_is_neither_fenced_corrected_nor_promoted_over() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_down();
    sim.run(10);
    assert_eq!(sim.state(), GroupState::Promoted);
    // Step 1 recorded: the standby goes to 0 while the record still says promoted.
    let mut r = sim.world.record.clone();
    r.failback_step = Some(FailbackStep::StandbyDown);
    sim.world.store(r);
    sim.world.standby_desired = 0;
    sim.run(3);
    assert_eq!(sim.state(), GroupState::Paused);
    assert_eq!(
        sim.log.last().unwrap().reasons[0],
        ReasonCode::FailbackInProgress
    );
    // Step 2 recorded: phase primary, the primary comes up and is not yet Ready.
    let mut r = sim.world.record.clone();
    r.phase = Some(RecordPhase::Primary);
    r.failback_step = Some(FailbackStep::PrimaryUp);
    sim.world.store(r);
    sim.world.primary_desired = 1;
    sim.world.primary_api = ProbeReason::Ok;
    sim.world.primary_listable = true;
    sim.world.primary_workload = ProbeReason::Unready;
    // Someone scales the standby up in the middle: reported, not corrected.
    sim.world.standby_desired = 1;
    sim.run(20);
    let start = sim.log.len() - 23;
    assert!(sim.log[start..].iter().all(|d| {
        d.actions
            .iter()
            .all(|a| matches!(a, Action::Announce { .. }))
    }));
    assert_eq!(sim.world.primary_desired, 1, "never fenced");
    assert_eq!(sim.world.standby_desired, 1, "never corrected");
    assert_eq!(sim.promotions(), 1);
    // The failback completes: the record is released and the daemon acts again.
    sim.world.standby_desired = 0;
    let mut r = sim.world.record.clone();
    r.failback_step = None;
    sim.world.store(r);
    sim.world.primary_workload = ProbeReason::Ok;
    sim.run(3);
    assert_eq!(sim.state(), GroupState::PrimaryActive);
}

#[test]
fn a_lost_record_while_paused_is_restored_pause_included_and_nothing_scales() {
    let mut sim = Sim::warmed_up();
    pause(&mut sim, None);
    sim.tick();
    sim.world.record_exists = false;
    sim.world.primary_down();
    let d = sim.tick().clone();
    assert_eq!(d.state, GroupState::Paused);
    assert!(d.reasons.contains(&ReasonCode::RecordLost));
    assert!(
        d.actions
            .iter()
            .all(|a| matches!(a, Action::RestoreRecord { .. }))
    );
    assert!(sim.world.record_exists);
    assert_eq!(sim.world.record.paused_by.as_deref(), Some("alice"));
    sim.run(20);
    assert_eq!(sim.promotions(), 0);
}

/// Found by the fault campaign: the record deleted after a promotion, and an operator's
/// `pause` (which writes the default record when none exists) creates it again at epoch 0,
/// phase `primary`, before the daemon restores it. The record's epoch went back: the
/// daemon writes its last copy over it, the pause kept, and scales nothing meanwhile (the
/// standby is not corrected down on a `primary` it never saw a failback to).
#[test]
fn invariant2_a_record_recreated_at_a_lower_epoch_is_written_over_pause_kept() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_down();
    sim.run(5);
    assert_eq!(sim.state(), GroupState::Promoted);
    let before = sim.world.record.clone();
    assert!(before.epoch >= 1);
    // Deleted, then created again by a command that knew nothing of the promotion.
    sim.world.record_exists = false;
    sim.world.record = FailoverRecord::default();
    sim.world.store(FailoverRecord {
        paused_by: Some("alice".into()),
        pause_reason: "maintenance".into(),
        ..FailoverRecord::default()
    });
    let d = sim.tick().clone();
    assert!(
        d.reasons.contains(&ReasonCode::RecordRegressed),
        "{:?}",
        d.reasons
    );
    assert!(
        d.actions
            .iter()
            .all(|a| matches!(a, Action::RestoreRecord { .. } | Action::Announce { .. })),
        "nothing is scaled until the record is back: {:?}",
        d.actions
    );
    assert_eq!(sim.world.record.epoch, before.epoch, "the epoch is back");
    assert_eq!(sim.world.record.phase, before.phase, "and the phase");
    assert_eq!(
        sim.world.record.paused_by.as_deref(),
        Some("alice"),
        "pause kept"
    );
    assert_eq!(sim.world.record.pause_reason, "maintenance");
    sim.run(5);
    assert_eq!(sim.world.standby_desired, 1, "the standby stays active");
    assert_eq!(sim.world.record.epoch, before.epoch);
    assert_eq!(sim.promotions(), 1);
}

fn state_check(
    name: &str,
    kind: crate::checks::CheckKind,
    gate: crate::checks::Gate,
    result: crate::checks::CheckResult,
) -> crate::checks::StateCheck {
    crate::checks::StateCheck {
        name: name.into(),
        kind,
        gate,
        result,
        detail: String::new(),
        checked_at_unix: Some(0.0),
    }
}

/// Sets the result of the world's state check `name`.
fn set_check(sim: &mut Sim, name: &str, result: crate::checks::CheckResult) {
    let check = sim
        .world
        .state_checks
        .iter_mut()
        .find(|c| c.name == name)
        .expect("configured check");
    check.result = result;
}

/// The four kinds of state check, each with gate `gate`, all passing.
fn state_checks(gate: crate::checks::Gate) -> Vec<crate::checks::StateCheck> {
    use crate::checks::{CheckKind, CheckResult};
    vec![
        state_check("backend:s3", CheckKind::Backend, gate, CheckResult::Ok),
        state_check("volume", CheckKind::Volume, gate, CheckResult::Ok),
        state_check(
            "freshness:volsync",
            CheckKind::Freshness,
            gate,
            CheckResult::Ok,
        ),
        state_check("drift:image", CheckKind::Drift, gate, CheckResult::Ok),
    ]
}

#[test]
fn invariant1_each_failing_block_state_check_holds_the_promotion_with_its_reason() {
    use crate::checks::{CheckResult, Gate};
    let cases = [
        (
            "volume",
            CheckResult::Missing,
            ReasonCode::StandbyStateVolumeMissing,
        ),
        (
            "volume",
            CheckResult::Unbound,
            ReasonCode::StandbyStateVolumeUnbound,
        ),
        (
            "backend:s3",
            CheckResult::Unreachable,
            ReasonCode::StandbyStateBackendUnreachable,
        ),
        (
            "freshness:volsync",
            CheckResult::Stale,
            ReasonCode::StandbyStateStale,
        ),
        (
            "drift:image",
            CheckResult::Drift,
            ReasonCode::StandbyAgentDrift,
        ),
        // Unanswerable is a failure, never a pass: the standby cannot be shown fit.
        (
            "volume",
            CheckResult::Forbidden,
            ReasonCode::StandbyStateUnanswerable,
        ),
        (
            "freshness:volsync",
            CheckResult::NotInstalled,
            ReasonCode::StandbyStateUnanswerable,
        ),
    ];
    for (name, result, code) in cases {
        let mut sim = Sim::auto();
        sim.world.state_checks = state_checks(Gate::Block);
        sim.run(10);
        assert_eq!(sim.state(), GroupState::PrimaryActive);
        set_check(&mut sim, name, result);
        // While the primary is healthy the group stays active; the standby is unfit.
        let d = sim.tick().clone();
        assert_eq!(d.state, GroupState::PrimaryActive, "{name}");
        assert!(!d.standby_fit, "{name}");
        assert!(d.warnings.is_empty(), "{name}: block is not a warning");
        sim.world.primary_down();
        sim.run(20);
        assert_eq!(sim.promotions(), 0, "{name} {result:?}");
        let d = sim.log.last().unwrap();
        assert_eq!(d.state, GroupState::Blocked, "{name}");
        assert_eq!(
            d.reasons,
            vec![ReasonCode::PrimaryDownQuorum, code],
            "{name} {result:?}"
        );
        // Fixed during the outage: the promotion goes ahead.
        set_check(&mut sim, name, CheckResult::Ok);
        sim.run(3);
        assert_eq!(sim.promotions(), 1, "{name}");
        assert!(sim.world.standby_desired >= 1, "{name}");
    }
}

#[test]
fn failing_warn_state_checks_never_hold_a_promotion_and_are_listed() {
    use crate::checks::{CheckResult, Gate};
    let mut sim = Sim::auto();
    sim.world.state_checks = state_checks(Gate::Warn);
    sim.run(10);
    set_check(&mut sim, "volume", CheckResult::Unbound);
    set_check(&mut sim, "backend:s3", CheckResult::Unreachable);
    set_check(&mut sim, "freshness:volsync", CheckResult::NotInstalled);
    set_check(&mut sim, "drift:image", CheckResult::Drift);
    let d = sim.tick().clone();
    assert_eq!(d.state, GroupState::PrimaryActive);
    assert!(d.standby_fit, "warn gates never make the standby unfit");
    assert_eq!(
        d.warnings,
        vec![
            ReasonCode::StandbyStateBackendUnreachable,
            ReasonCode::StandbyStateVolumeUnbound,
            ReasonCode::StandbyStateUnanswerable,
            ReasonCode::StandbyAgentDrift,
        ]
    );
    assert!(
        !d.reasons.iter().any(|r| d.warnings.contains(r)),
        "warnings are not reasons of the decision"
    );
    sim.world.primary_down();
    sim.run(3);
    let promoting = sim
        .log
        .iter()
        .find(|d| {
            d.actions
                .iter()
                .any(|a| matches!(a, Action::RecordPromoting { .. }))
        })
        .expect("the promotion goes ahead")
        .clone();
    assert_eq!(promoting.state, GroupState::Promoting);
    assert_eq!(
        promoting.warnings.len(),
        4,
        "the promotion says what is missing"
    );
    // The Event that lists them is written right after the `promoting` record, before
    // anything is scaled.
    let kinds: Vec<&str> = promoting.actions.iter().map(Action::kind).collect();
    assert_eq!(
        kinds,
        ["record_promoting", "warn_state_checks", "scale_standby_up"]
    );
    sim.run(3);
    assert_eq!(sim.state(), GroupState::Promoted);
    assert_eq!(sim.promotions(), 1);
}

#[test]
fn invariant2_a_block_check_failing_after_the_promotion_started_never_stops_it() {
    use crate::checks::{CheckResult, Gate};
    let mut sim = Sim::auto();
    sim.world.state_checks = state_checks(Gate::Block);
    sim.world.standby_ready_after = Some(3);
    sim.run(10);
    sim.world.primary_down();
    while sim.promotions() == 0 {
        sim.tick();
        assert!(sim.log.len() < 40, "never promoted");
    }
    // The volume goes away while the standby scales up: the recorded promotion
    // completes, it is not undone.
    set_check(&mut sim, "volume", CheckResult::Missing);
    sim.run(6);
    assert_eq!(sim.state(), GroupState::Promoted);
    assert_eq!(sim.promotions(), 1);
    assert!(!sim.log.last().unwrap().standby_fit);
}

#[test]
fn only_the_block_checks_hold_when_both_gates_fail() {
    use crate::checks::{CheckKind, CheckResult, Gate};
    let mut sim = Sim::auto();
    sim.world.state_checks = vec![
        state_check(
            "drift:image",
            CheckKind::Drift,
            Gate::Block,
            CheckResult::Ok,
        ),
        state_check(
            "drift:settings",
            CheckKind::Drift,
            Gate::Warn,
            CheckResult::Drift,
        ),
        state_check(
            "volume",
            CheckKind::Volume,
            Gate::Warn,
            CheckResult::Missing,
        ),
    ];
    sim.run(10);
    sim.world.primary_down();
    sim.run(3);
    assert_eq!(sim.promotions(), 1, "warn-only failures promote");
    let mut sim = Sim::auto();
    sim.world.state_checks = vec![
        state_check(
            "drift:image",
            CheckKind::Drift,
            Gate::Block,
            CheckResult::Drift,
        ),
        state_check(
            "volume",
            CheckKind::Volume,
            Gate::Warn,
            CheckResult::Missing,
        ),
    ];
    sim.run(10);
    sim.world.primary_down();
    sim.run(10);
    assert_eq!(sim.promotions(), 0);
    let d = sim.log.last().unwrap();
    assert_eq!(
        d.reasons,
        vec![ReasonCode::PrimaryDownQuorum, ReasonCode::StandbyAgentDrift]
    );
    assert_eq!(d.warnings, vec![ReasonCode::StandbyStateVolumeMissing]);
}

// Event ticks: the daemon ticks at once when a watch breaks or a Pod turns unready,
// besides its schedule. Failures closer than one interval (less 5 %) to the previous
// counted one are not counted, so blip tolerance stays (threshold − 1) × interval.

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The offset (from `start`) of the first tick that started a promotion, if any.
fn promoted_at(sim: &Sim, ticks: &[(Duration, usize)]) -> Option<Duration> {
    ticks
        .iter()
        .find(|(_, i)| {
            sim.log[*i]
                .actions
                .iter()
                .any(|a| matches!(a, Action::RecordPromoting { .. }))
        })
        .map(|(at, _)| *at)
}

#[test]
fn invariant1_detection_starts_at_the_event_and_the_run_keeps_the_interval() {
    let mut sim = Sim::warmed_up();
    // The API server stops 300 ms after a scheduled tick; its watches break at once and
    // the daemon ticks then, and again whenever another event comes, and on its schedule
    // re-anchored at the event.
    sim.tick_after(ms(300));
    sim.world.primary_down();
    let mut ticks = Vec::new();
    let mut at = Duration::ZERO;
    let d = sim.tick_after(ms(1)).clone();
    ticks.push((at, sim.log.len() - 1));
    let api = |d: &Decision| d.signals[0].consecutive_failures;
    assert_eq!(api(&d), 1, "the first failure counts at the event");
    for gap in [100, 250, 400, 190, 60, 700, 240, 60] {
        at += ms(gap);
        let d = sim.tick_after(ms(gap)).clone();
        ticks.push((at, sim.log.len() - 1));
        let expected = if at >= Duration::from_secs(2) {
            3
        } else if at >= Duration::from_secs(1) {
            2
        } else {
            1
        };
        assert_eq!(api(&d), expected, "at {at:?}: {:?}", d.signals[0]);
    }
    assert_eq!(at, Duration::from_secs(2));
    assert_eq!(
        promoted_at(&sim, &ticks),
        Some(Duration::from_secs(2)),
        "promoted (threshold − 1) × interval after the event, not before"
    );
    assert_eq!(sim.promotions(), 1);
}

#[test]
fn a_late_scheduled_tick_followed_by_one_on_time_keeps_the_run() {
    // A busy runtime starts the tick due at 1 s 120 ms late; the one due at 2 s starts on
    // time, 880 ms after it. By their deadlines they are one interval apart: the failure
    // counts, and the promotion comes at the third scheduled tick, not an interval later.
    let mut sim = Sim::warmed_up();
    let base = sim.now;
    sim.world.primary_down();
    let first = sim.tick_due(base + ms(1), base + ms(1)).clone();
    assert_eq!(first.signals[0].consecutive_failures, 1);
    let late = sim.tick_due(base + ms(1001), base + ms(1121)).clone();
    assert_eq!(late.signals[0].consecutive_failures, 2);
    let on_time = sim.tick_due(base + ms(2001), base + ms(2001)).clone();
    assert_eq!(
        on_time.signals[0].consecutive_failures, 3,
        "{:?}",
        on_time.signals[0]
    );
    assert!(
        on_time
            .actions
            .iter()
            .any(|a| matches!(a, Action::RecordPromoting { .. })),
        "{:?}",
        on_time
    );
    // Measured by start times instead, the third failure would be 880 ms after the
    // second and not count: the same ticks fed with `step` (due = start) lose it.
    let mut sim = Sim::warmed_up();
    let base = sim.now;
    sim.world.primary_down();
    sim.tick_due(base + ms(1), base + ms(1));
    sim.tick_due(base + ms(1121), base + ms(1121));
    let d = sim.tick_due(base + ms(2001), base + ms(2001)).clone();
    assert_eq!(d.signals[0].consecutive_failures, 2);
}

#[test]
fn invariant1_a_blip_seen_by_ticks_every_100ms_never_promotes() {
    let mut sim = Sim::warmed_up();
    // 1.8 s down (below 2 × 0.95 s), 1.1 s up, 1,000 times; a tick every 100 ms.
    for _ in 0..1_000 {
        sim.world.primary_down();
        for _ in 0..18 {
            sim.tick_after(ms(100));
        }
        sim.world.primary_up();
        for _ in 0..11 {
            sim.tick_after(ms(100));
        }
    }
    assert_eq!(sim.promotions(), 0);
    assert!(sim.log.iter().all(|d| !d.primary_down));
    assert!(
        sim.log
            .iter()
            .all(|d| d.signals.iter().all(|s| s.consecutive_failures <= 2)),
        "never more than two counted failures in 1.8 s"
    );
}

#[test]
fn invariant1_the_spacing_tolerance_is_five_percent_of_the_interval() {
    // Ticks of one schedule arrive a little late or early relative to each other: 950 ms
    // still counts, 940 ms does not.
    for (gap, promoted) in [(950, true), (940, false)] {
        let mut sim = Sim::warmed_up();
        sim.world.primary_down();
        sim.tick_after(ms(gap));
        sim.tick_after(ms(gap));
        sim.tick_after(ms(gap));
        assert_eq!(sim.promotions() == 1, promoted, "gap {gap} ms");
        if !promoted {
            // The second failure was not counted, the third was (1.88 s after the
            // first); one more a full interval later is the third counted.
            let api = &sim.log.last().unwrap().signals[0];
            assert_eq!(api.consecutive_failures, 2, "{api:?}");
            sim.tick_after(ms(1000));
            assert_eq!(sim.promotions(), 1);
        }
    }
}

#[test]
fn invariant1_a_pass_at_an_event_tick_resets_the_run() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_down();
    sim.run(2);
    // The primary answers again 200 ms later (an event tick), then fails again.
    sim.world.primary_up();
    sim.tick_after(ms(200));
    sim.world.primary_down();
    sim.tick_after(ms(100));
    sim.run(1);
    assert_eq!(sim.promotions(), 0, "the run started again at the pass");
    sim.run(1);
    assert_eq!(sim.promotions(), 1);
}

#[test]
fn invariant5_event_ticks_during_a_freeze_count_nothing() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_api = ProbeReason::Timeout;
    sim.world.primary_workload = ProbeReason::Timeout;
    sim.world.standby_api = ProbeReason::Timeout;
    for _ in 0..30 {
        sim.tick_after(ms(100));
    }
    assert_eq!(sim.state(), GroupState::Frozen);
    sim.world.standby_api = ProbeReason::Ok;
    // Still frozen for freeze_for (20 s) whatever the number of ticks.
    for _ in 0..150 {
        sim.tick_after(ms(100));
    }
    assert_eq!(sim.promotions(), 0);
}

/// One cycle of a primary API server that resets every connection for `down` ticks and
/// answers for `up` ticks: while it is down, the workload's watch is cut too (the daemon
/// reports `error`, "cached state not trusted while /readyz fails"); for the first
/// `relist` ticks after it answers again, the watch is still being listed again.
fn flap(sim: &mut Sim, down: usize, up: usize, relist: usize) {
    sim.world.primary_api = ProbeReason::Connect;
    sim.world.primary_workload = ProbeReason::Error;
    sim.run(down);
    sim.world.primary_api = ProbeReason::Ok;
    sim.run(relist);
    sim.world.primary_workload = ProbeReason::Ok;
    sim.run(up - relist);
}

#[test]
fn invariant1_a_flapping_api_server_is_a_suspect_primary_not_a_blind_watcher() {
    let mut sim = Sim::warmed_up();
    let before = sim.log.len();
    for _ in 0..60 {
        flap(&mut sim, 2, 2, 1);
    }
    let flapping = &sim.log[before..];
    assert_eq!(
        sim.promotions(),
        0,
        "two failures of three never take the API down"
    );
    assert!(
        flapping
            .iter()
            .all(|d| d.state != GroupState::PrimaryUnobservable),
        "the API's own down evidence explains the cut watch"
    );
    assert!(
        flapping
            .iter()
            .filter(|d| d.state_changed)
            .all(|d| matches!(
                d.state,
                GroupState::PrimarySuspect | GroupState::PrimaryActive
            ))
    );
    assert!(
        flapping
            .iter()
            .any(|d| d.state == GroupState::PrimarySuspect)
    );
    assert_eq!(
        sim.count(|a| matches!(a, Action::Announce { .. })),
        0,
        "no Event"
    );
    assert!(
        flapping
            .iter()
            .filter(|d| d.state == GroupState::PrimarySuspect)
            .all(|d| d.verdict == Verdict::Suspect),
        "other instances are told suspect, not unknown"
    );
}

#[test]
fn invariant1_a_watch_that_stays_cut_after_the_api_returns_is_a_blind_watcher() {
    let mut sim = Sim::warmed_up();
    // The API server flapped once, then answers; the workload's watch never comes back.
    flap(&mut sim, 2, 1, 1);
    sim.world.primary_api = ProbeReason::Ok;
    sim.world.primary_workload = ProbeReason::Error;
    let before = sim.log.len();
    sim.run(3);
    let states: Vec<GroupState> = sim.log[before..].iter().map(|d| d.state).collect();
    // Counted from the last tick the API was down: the relisting tick above is the
    // first unknown answer of the run, the three here make it blind.
    assert_eq!(
        states,
        [
            GroupState::PrimarySuspect,
            GroupState::PrimaryUnobservable,
            GroupState::PrimaryUnobservable
        ]
    );
    assert_eq!(sim.log.last().unwrap().reasons[0], ReasonCode::PrimaryError);
    assert_eq!(
        sim.count(|a| matches!(a, Action::Announce { .. })),
        1,
        "one Event"
    );
    assert_eq!(sim.promotions(), 0);
}

#[test]
fn invariant1_watcher_side_causes_are_blind_even_while_the_api_fails() {
    for (reason, code) in [
        (ProbeReason::Forbidden, ReasonCode::PrimaryForbidden),
        (
            ProbeReason::Unauthorized,
            ReasonCode::PrimaryCredentialsRejected,
        ),
        (ProbeReason::NotFound, ReasonCode::PrimaryWorkloadMissing),
    ] {
        let mut sim = Sim::warmed_up();
        // /readyz fails on some ticks, the workload is forbidden / gone on every one:
        // the API's trouble does not explain a 403 or an empty selection.
        sim.world.primary_workload = reason;
        for _ in 0..10 {
            sim.world.primary_api = ProbeReason::Connect;
            sim.run(1);
            sim.world.primary_api = ProbeReason::Ok;
            sim.run(2);
        }
        assert_eq!(sim.state(), GroupState::PrimaryUnobservable, "{reason:?}");
        assert_eq!(sim.log.last().unwrap().reasons[0], code, "{reason:?}");
        assert_eq!(sim.promotions(), 0, "{reason:?}");
    }
}

#[test]
fn a_real_outage_behind_a_cut_watch_still_promotes() {
    let mut sim = Sim::warmed_up();
    sim.world.primary_api = ProbeReason::Connect;
    sim.world.primary_workload = ProbeReason::Error;
    sim.world.primary_listable = false;
    sim.run(3);
    assert_eq!(sim.state(), GroupState::Promoting);
    assert!(
        sim.log
            .iter()
            .all(|d| d.state != GroupState::PrimaryUnobservable)
    );
}

#[test]
fn guards_are_tallied_against_the_side_the_record_says_is_active() {
    let mut standby_running = primary_guard("s", true, Some(1), 0.5);
    standby_running.side = Side::Standby;
    let g = guards(
        2,
        vec![
            primary_guard("a", false, Some(1), 0.5),
            primary_guard("b", true, None, 30.0),
            standby_running,
        ],
    )
    .expect("guards");
    let g = GuardsObservation {
        expected_standby: 1,
        ..g
    };
    // The record says primary: one of two primary guards is fresh and stopped, one stale.
    assert_eq!(
        g.tally(Side::Primary, Side::Primary),
        GuardTally {
            running: 0,
            stopped: 1,
            stale: 1,
            missing: 1,
            stopped_while_active: 1
        }
    );
    // The standby is active: a primary guard stopped is what it should be.
    let t = g.tally(Side::Primary, Side::Standby);
    assert_eq!((t.missing, t.stopped_while_active), (0, 0));
    assert_eq!(
        g.tally(Side::Standby, Side::Standby),
        GuardTally {
            running: 1,
            ..GuardTally::default()
        }
    );
}

/// A guard beside the primary's agent with `on_isolation = "stop"`, `isolation_ttl = 10s`
/// and 3 s to stop after it: waited for at most 10 + 3 + max(1, 1) = 14 s.
fn stop_guard(identity: &str, running: bool, epoch: Option<u64>, age: f64) -> GuardBeat {
    GuardBeat {
        isolation_ttl_seconds: Some(10.0),
        stop_within_seconds: 3.0,
        form: GuardForm::Wrapper,
        reason: if running { "side_active" } else { "isolated" }.into(),
        ..primary_guard(identity, running, epoch, age)
    }
}

const STOP_GUARD_BOUND: Duration = Duration::from_secs(14);

/// The tick (index into `sim.log`) that wrote the `promoting` record, and the one that
/// scaled the standby up.
fn promotion_ticks(sim: &Sim) -> (Option<usize>, Option<usize>) {
    let find =
        |pred: &dyn Fn(&Action) -> bool| sim.log.iter().position(|d| d.actions.iter().any(pred));
    (
        find(&|a| matches!(a, Action::RecordPromoting { .. })),
        find(&|a| matches!(a, Action::ScaleStandbyUp { .. })),
    )
}

#[test]
fn the_bound_of_a_stop_mode_guard_adds_its_stop_time_and_a_clock_margin() {
    let g = stop_guard("a", true, None, 0.5);
    assert_eq!(g.isolation_bound(), Some(STOP_GUARD_BOUND));
    let long = GuardBeat {
        isolation_ttl_seconds: Some(60.0),
        ..g.clone()
    };
    // 60 + 3 + 10 % of 60.
    assert_eq!(long.isolation_bound(), Some(Duration::from_secs(69)));
    assert_eq!(
        primary_guard("a", true, None, 0.5).isolation_bound(),
        None,
        "keep"
    );
    let garbled = GuardBeat {
        isolation_ttl_seconds: Some(f64::NAN),
        ..g
    };
    assert_eq!(garbled.isolation_bound(), None);
}

#[test]
fn invariant10_a_connected_stop_mode_guard_holds_the_scale_up_until_it_says_stopped() {
    let mut sim = Sim::warmed_up();
    sim.world.standby_ready_after = None;
    sim.world.guards = guards(1, vec![stop_guard("a", true, None, 0.5)]);
    sim.world.primary_down();
    sim.run(3);
    let (recorded, scaled) = promotion_ticks(&sim);
    let recorded = recorded.expect("the promotion is recorded");
    assert_eq!(
        scaled, None,
        "no scale-up in the tick that writes the record"
    );
    assert_eq!(sim.world.record.effective_phase(), RecordPhase::Promoting);
    let d = &sim.log[recorded];
    assert!(
        d.reasons.contains(&ReasonCode::WaitingForGuardStop),
        "{d:?}"
    );
    assert_eq!(d.state, GroupState::Promoting);
    // Still running: held, tick after tick, with the reason.
    for _ in 0..5 {
        let d = sim.tick().clone();
        assert!(
            d.reasons.contains(&ReasonCode::WaitingForGuardStop),
            "{d:?}"
        );
        assert!(
            !d.actions
                .iter()
                .any(|a| matches!(a, Action::ScaleStandbyUp { .. }))
        );
    }
    assert_eq!(sim.world.standby_desired, 0);
    // Stopped, but at an older epoch: not this promotion's stop.
    sim.world.guards = guards(1, vec![stop_guard("a", false, Some(0), 0.5)]);
    let d = sim.tick().clone();
    assert!(
        d.reasons.contains(&ReasonCode::WaitingForGuardStop),
        "{d:?}"
    );
    // Its heartbeat says stopped at epoch 1: the scale-up follows in the same tick.
    sim.world.guards = guards(1, vec![stop_guard("a", false, Some(1), 0.5)]);
    let d = sim.tick().clone();
    assert!(
        !d.reasons.contains(&ReasonCode::WaitingForGuardStop),
        "{d:?}"
    );
    assert!(
        d.actions
            .iter()
            .any(|a| matches!(a, Action::ScaleStandbyUp { epoch: 1 })),
        "{d:?}"
    );
    assert_eq!(sim.world.standby_desired, 1);
}

#[test]
fn invariant10_an_isolated_stop_mode_guard_is_waited_for_its_bound_from_the_record() {
    // Its heartbeat is stale (it is cut off from the standby); however old, the wait
    // counts from the record: it last read the record before the record was written.
    for age in [20.0, 3600.0] {
        let mut sim = Sim::warmed_up();
        sim.world.guards = guards(1, vec![stop_guard("a", true, None, age)]);
        sim.world.primary_down();
        sim.run(30);
        let (recorded, scaled) = promotion_ticks(&sim);
        let (recorded, scaled) = (recorded.expect("recorded"), scaled.expect("scaled"));
        // One tick per second: the scale-up is the first tick at or past the bound.
        assert_eq!(
            Duration::from_secs((scaled - recorded) as u64),
            STOP_GUARD_BOUND,
            "age {age}"
        );
        for d in &sim.log[recorded..scaled] {
            assert!(
                d.reasons.contains(&ReasonCode::WaitingForGuardStop),
                "{d:?}"
            );
        }
        assert_eq!(sim.state(), GroupState::Promoted, "then it completes");
    }
}

#[test]
fn unreadable_heartbeats_hold_for_the_remembered_guards_and_never_seen_ones_are_not_waited_for() {
    let unreadable = |expected_primary| {
        Some(GuardsObservation {
            expected_primary,
            expected_standby: 0,
            beats: Err(ProbeOutcome {
                reason: ProbeReason::Forbidden,
                latency: Duration::ZERO,
                detail: String::new(),
            }),
        })
    };
    // Seen in stop mode, then unreadable: waited for its bound (unknown is not stopped).
    let mut sim = Sim::warmed_up();
    sim.world.guards = guards(1, vec![stop_guard("a", true, None, 0.5)]);
    sim.tick();
    sim.world.guards = unreadable(1);
    sim.world.primary_down();
    sim.run(30);
    let (recorded, scaled) = promotion_ticks(&sim);
    let (recorded, scaled) = (recorded.expect("recorded"), scaled.expect("scaled"));
    assert_eq!(
        Duration::from_secs((scaled - recorded) as u64),
        STOP_GUARD_BOUND
    );
    // Never seen: nothing to wait for (the missing-guard alert covers it).
    let mut sim = Sim::warmed_up();
    sim.world.guards = unreadable(1);
    sim.world.primary_down();
    sim.run(5);
    let (recorded, scaled) = promotion_ticks(&sim);
    assert_eq!(recorded, scaled);
}

#[test]
fn guards_in_keep_mode_and_groups_without_guards_scale_up_with_the_record() {
    for observed in [
        None,
        guards(1, vec![primary_guard("a", true, None, 0.5)]),
        // A stop-mode guard beside the standby's agent is no primary's guard.
        guards(
            1,
            vec![GuardBeat {
                side: Side::Standby,
                ..stop_guard("s", false, None, 0.5)
            }],
        ),
    ] {
        let mut sim = Sim::warmed_up();
        sim.world.guards = observed.clone();
        sim.world.primary_down();
        sim.run(5);
        let (recorded, scaled) = promotion_ticks(&sim);
        assert!(recorded.is_some(), "{observed:?}");
        assert_eq!(recorded, scaled, "{observed:?}");
        assert!(
            sim.log
                .iter()
                .all(|d| !d.reasons.contains(&ReasonCode::WaitingForGuardStop))
        );
    }
}

#[test]
fn invariant10_a_promotion_seen_in_the_record_counts_the_wait_from_the_next_tick() {
    // Another instance wrote the record; this one starts with it (a restart, a new
    // leader): the read that saw it may have come just after the write, so the bound
    // runs from the next tick.
    let mut sim = Sim::warmed_up();
    sim.world.standby_ready_after = None;
    sim.world.guards = guards(1, vec![stop_guard("a", true, None, 30.0)]);
    sim.world.store(FailoverRecord {
        phase: Some(RecordPhase::Promoting),
        epoch: 1,
        promoted_at_unix: Some(sim.wall as i64),
        ..FailoverRecord::default()
    });
    sim.world.primary_down();
    let first = sim.log.len();
    sim.run(20);
    let scaled = sim
        .log
        .iter()
        .position(|d| {
            d.actions
                .iter()
                .any(|a| matches!(a, Action::ScaleStandbyUp { .. }))
        })
        .expect("scaled");
    assert_eq!(
        Duration::from_secs((scaled - first) as u64),
        STOP_GUARD_BOUND + INTERVAL
    );
}

#[test]
fn passing_state_checks_add_no_event_to_a_promotion() {
    use crate::checks::Gate;
    let mut sim = Sim::auto();
    sim.world.state_checks = state_checks(Gate::Warn);
    sim.run(10);
    sim.world.primary_down();
    sim.run(6);
    assert_eq!(sim.promotions(), 1);
    assert_eq!(
        sim.count(|a| matches!(a, Action::WarnStateChecks { .. })),
        0,
        "every check passes: nothing to warn of"
    );
}

#[test]
fn an_instance_that_follows_decides_as_the_leader_and_acts_on_nothing() {
    let mut leader = Sim::warmed_up();
    let mut follower = Sim::warmed_up();
    follower.leadership = Leadership::Follows;
    leader.world.primary_down();
    follower.world.primary_down();
    for _ in 0..4 {
        let (l, f) = (leader.tick().clone(), follower.tick().clone());
        assert_eq!(
            l.verdict, f.verdict,
            "the same verdict for the other instances"
        );
        assert!(l.acts && !f.acts);
    }
    assert_eq!(leader.state(), GroupState::Promoting);
    assert_eq!(leader.promotions(), 1);
    // The follower would have started the same promotion, and wrote nothing.
    assert_eq!(follower.state(), GroupState::PrimaryDown);
    assert!(follower.log.iter().any(Decision::would_promote));
    assert_eq!(follower.world.standby_desired, 0);
    assert!(!follower.world.record_exists, "no record written");
    // Leadership moves to it: the next decision is carried out.
    follower.leadership = Leadership::Leads;
    let d = follower.tick().clone();
    assert!(d.acts);
    assert!(
        d.actions
            .iter()
            .any(|a| matches!(a, Action::RecordPromoting { .. })),
        "{d:?}"
    );
}

#[test]
fn observe_mode_never_acts_even_when_leading() {
    let mut sim = Sim::new(policy(), Mode::Observe);
    sim.run(10);
    sim.world.primary_down();
    sim.run(5);
    assert!(sim.log.iter().all(|d| !d.acts));
    assert!(sim.log.iter().any(Decision::would_promote));
    assert_eq!(sim.world.standby_desired, 0);
}

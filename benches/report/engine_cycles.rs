//! The pure engine (crates/core) driven with random fault schedules, with a seeded
//! generator so a run can be repeated: many cycles, each a fresh engine with a random
//! profile, past its startup grace, then a few hundred ticks of faults.
//!
//! - **Blip cycles**: every fault stays under the blip tolerance: each primary signal
//!   sees at most `failure_threshold − 1` answers of down evidence in a row (runs of
//!   exactly `threshold − 1` are the most common), mixed with unknown answers
//!   (credentials, permissions, certificates, undecodable), blips of the standby, and
//!   ticks started up to 10 % of the interval late. Any promotion is a false one (goal 0).
//! - **Outage cycles**: the same noise, then a real outage (the primary refuses, for
//!   `threshold` to `threshold + 5` ticks, the standby healthy). Each must promote
//!   (goal: all), and at the `threshold`-th failed tick.

use crate::stats::Rng;
use kube_failover_core::engine::{Engine, EngineSettings, GroupState};
use kube_failover_core::model::{
    Action, DeploymentView, FailoverRecord, Observation, PrimaryObservation, ProbeOutcome,
    ProbeReason, SignalId, StandbyObservation,
};
use kube_failover_core::policy::{Mode, PolicyConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Down evidence on the API signal.
const API_DOWN: [ProbeReason; 4] = [
    ProbeReason::Refused,
    ProbeReason::Timeout,
    ProbeReason::Connect,
    ProbeReason::HttpStatus,
];
/// Down evidence on a workload signal.
const WORKLOAD_DOWN: [ProbeReason; 5] = [
    ProbeReason::Unready,
    ProbeReason::CrashLoop,
    ProbeReason::NoPods,
    ProbeReason::Unschedulable,
    ProbeReason::ScaledToZero,
];
/// Answers that prove nothing.
const UNKNOWN: [ProbeReason; 7] = [
    ProbeReason::Unauthorized,
    ProbeReason::Forbidden,
    ProbeReason::Tls,
    ProbeReason::NotFound,
    ProbeReason::Decode,
    ProbeReason::Error,
    ProbeReason::Throttled,
];

/// The part's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineReport {
    pub meta: crate::stats::Meta,
    pub seed: u64,
    pub blip_cycles: u64,
    /// Ticks of blips, in both kinds of cycle.
    pub blip_ticks: u64,
    /// Promotions during blips, in both kinds of cycle (goal 0).
    pub false_promotions: u64,
    /// Blip episodes injected (in both kinds of cycle), and how many were
    /// `threshold − 1` long.
    pub blip_episodes: u64,
    pub blips_at_threshold_minus_one: u64,
    /// Blip cycles in which the engine left `primary_active` (it saw the blips).
    pub cycles_suspect: u64,
    pub outage_cycles: u64,
    /// Outage cycles that promoted (goal: all).
    pub outages_promoted: u64,
    /// Failed ticks of the outage at the promotion, minus the threshold (0: at the
    /// threshold-th), and how many cycles.
    pub promoted_at: BTreeMap<i64, u64>,
    /// Engine steps per second of this machine (one core).
    pub steps_per_sec: f64,
}

#[derive(Debug, Clone, Copy)]
struct Tick {
    api: ProbeReason,
    workload: ProbeReason,
    standby: ProbeReason,
}

const HEALTHY: Tick = Tick {
    api: ProbeReason::Ok,
    workload: ProbeReason::Ok,
    standby: ProbeReason::Ok,
};

fn outcome(reason: ProbeReason) -> ProbeOutcome {
    ProbeOutcome {
        reason,
        latency: Duration::from_millis(5),
        detail: String::new(),
    }
}

fn view(name: &str, desired: i32) -> DeploymentView {
    DeploymentView {
        name: name.to_string(),
        uid: Some(format!("{name}-uid")),
        desired,
        available: desired,
        ready_pods: desired,
        epoch: None,
    }
}

fn observation(wall_unix: f64, t: Tick, workload: &SignalId) -> Observation {
    let listable = matches!(t.api, ProbeReason::Ok | ProbeReason::HttpStatus);
    let standby_up = t.standby == ProbeReason::Ok;
    Observation {
        wall_unix,
        primary: PrimaryObservation {
            api: outcome(t.api),
            workloads: vec![(workload.clone(), outcome(t.workload))],
            http: vec![],
            deployments: listable.then(|| vec![view("agent-trigger", 1)]),
            absent: vec![],
            watches_starting: false,
        },
        standby: StandbyObservation {
            api: outcome(t.standby),
            workloads: outcome(t.standby),
            deployments: standby_up.then(|| vec![view("agent-trigger", 0)]),
            record: if standby_up {
                Ok(FailoverRecord::default())
            } else {
                Err(outcome(t.standby))
            },
            state_checks: vec![],
            guards: None,
        },
        observers: vec![],
    }
}

/// One engine with its simulated clocks.
struct Run {
    engine: Engine,
    now: Instant,
    /// The deadline of the latest scheduled tick.
    due: Instant,
    wall: f64,
    interval: Duration,
    workload: SignalId,
    left_active: bool,
}

impl Run {
    fn new(rng: &mut Rng) -> (Run, u32) {
        let threshold = rng.int(2, 5) as u32;
        let interval = Duration::from_secs(*rng.pick(&[1, 2, 5]));
        let workload = SignalId::Workload("env0=agent-trigger".into());
        let now = Instant::now();
        let settings = EngineSettings {
            interval,
            policy: PolicyConfig {
                failure_threshold: threshold,
                success_threshold: rng.int(1, 2) as u32,
                quorum: 1,
                startup_grace: Duration::from_secs(5),
                freeze_for: Duration::from_secs(10),
                ..PolicyConfig::default()
            },
            mode: Mode::Auto,
            signals: vec![SignalId::Api, workload.clone()],
            clear_stale_locks: false,
        };
        let run = Run {
            engine: Engine::new(settings, now),
            now,
            due: now,
            wall: 1_800_000_000.0,
            interval,
            workload,
            left_active: false,
        };
        (run, threshold)
    }

    /// One scheduled tick, due one interval after the previous one and started up to
    /// 10 % of the interval late (a busy runtime), as the daemon's runner feeds the
    /// engine (`step_due`); true when it started a promotion.
    fn tick(&mut self, t: Tick, rng: &mut Rng) -> bool {
        self.due += self.interval;
        let at = self.due + self.interval.mul_f64(rng.range(0.0, 0.1));
        let gap = at.saturating_duration_since(self.now);
        self.now += gap;
        self.wall += gap.as_secs_f64();
        let obs = observation(self.wall, t, &self.workload);
        let d = self.engine.step_due(
            self.now,
            self.due,
            &obs,
            kube_failover::engine::Leadership::Leads,
        );
        let mut promoted = false;
        for a in &d.actions {
            promoted |= matches!(a, Action::RecordPromoting { .. });
            self.engine.handle_result(self.now, a, true);
        }
        promoted
    }

    /// Healthy ticks until the engine says `primary_active` (past its grace).
    fn warm_up(&mut self, rng: &mut Rng) {
        for _ in 0..100 {
            self.tick(HEALTHY, rng);
            if self.engine.state() == GroupState::PrimaryActive {
                return;
            }
        }
        panic!("the engine did not reach primary_active in 100 healthy ticks");
    }
}

/// A schedule of `len` ticks of faults under the blip tolerance of `threshold`:
/// episodes of at most `threshold − 1` down answers on a signal, each followed by an
/// answer that breaks the run. Returns the ticks, the episodes and how many were
/// exactly `threshold − 1` long.
fn blips(rng: &mut Rng, threshold: u32, len: usize) -> (Vec<Tick>, u64, u64) {
    let mut ticks = Vec::with_capacity(len);
    let (mut episodes, mut longest) = (0, 0);
    while ticks.len() < len {
        // Healthy ticks between episodes (none, sometimes).
        let healthy = rng.int(0, 4) as usize;
        ticks.extend(std::iter::repeat_n(HEALTHY, healthy));
        let max = u64::from(threshold - 1);
        let n = if rng.chance(0.5) {
            max
        } else {
            rng.int(1, max)
        };
        episodes += 1;
        longest += u64::from(n == max);
        let kind = rng.int(0, 3);
        for _ in 0..n {
            let mut t = HEALTHY;
            match kind {
                // The API server refuses or times out; its watches are broken (unknown)
                // or the workloads fail to list (down) too.
                0 => {
                    t.api = *rng.pick(&API_DOWN);
                    t.workload = if rng.chance(0.5) {
                        ProbeReason::Error
                    } else {
                        ProbeReason::Refused
                    };
                }
                // The API answers, the workload is not serving.
                1 => t.workload = *rng.pick(&WORKLOAD_DOWN),
                // Both at once, each under the threshold.
                2 => {
                    t.api = *rng.pick(&API_DOWN);
                    t.workload = *rng.pick(&WORKLOAD_DOWN);
                }
                // `readyz` fails while the workload is fine.
                _ => t.api = ProbeReason::HttpStatus,
            }
            // The standby blips now and then (both unreachable: the watcher freezes).
            if rng.chance(0.05) {
                t.standby = *rng.pick(&[ProbeReason::Refused, ProbeReason::Timeout]);
            }
            ticks.push(t);
        }
        // What ends the run: a pass, or an unknown answer (which breaks it too).
        let mut end = HEALTHY;
        if rng.chance(0.3) {
            end.api = *rng.pick(&UNKNOWN);
            end.workload = *rng.pick(&UNKNOWN);
        }
        ticks.push(end);
    }
    ticks.truncate(len);
    // Truncation may cut an episode short, never lengthen it.
    (ticks, episodes, longest)
}

/// Runs `cycles` blip cycles and as many outage cycles.
pub fn run(cycles: u64, seed: u64, meta: crate::stats::Meta) -> EngineReport {
    let mut rng = Rng::new(seed);
    let mut r = EngineReport {
        meta,
        seed,
        blip_cycles: 0,
        blip_ticks: 0,
        false_promotions: 0,
        blip_episodes: 0,
        blips_at_threshold_minus_one: 0,
        cycles_suspect: 0,
        outage_cycles: 0,
        outages_promoted: 0,
        promoted_at: BTreeMap::new(),
        steps_per_sec: 0.0,
    };
    let started = Instant::now();
    let mut steps = 0u64;
    for _ in 0..cycles {
        // Blips only.
        let (mut run, threshold) = Run::new(&mut rng);
        run.warm_up(&mut rng);
        let (ticks, episodes, longest) = blips(&mut rng, threshold, 300);
        r.blip_cycles += 1;
        r.blip_episodes += episodes;
        r.blips_at_threshold_minus_one += longest;
        for t in ticks {
            steps += 1;
            r.blip_ticks += 1;
            if run.tick(t, &mut rng) {
                r.false_promotions += 1;
                break;
            }
            run.left_active |= run.engine.state() != GroupState::PrimaryActive;
        }
        r.cycles_suspect += u64::from(run.left_active);

        // Blips, then a real outage.
        let (mut run, threshold) = Run::new(&mut rng);
        run.warm_up(&mut rng);
        let len = rng.int(10, 200) as usize;
        let (ticks, episodes, longest) = blips(&mut rng, threshold, len);
        r.blip_episodes += episodes;
        r.blips_at_threshold_minus_one += longest;
        r.outage_cycles += 1;
        let mut promoted_early = false;
        for t in ticks {
            steps += 1;
            r.blip_ticks += 1;
            promoted_early |= run.tick(t, &mut rng);
        }
        if promoted_early {
            r.false_promotions += 1;
            continue;
        }
        // Healthy ticks, so the outage's run starts from nothing and a freeze from a
        // standby blip (both sides unreachable) is over.
        let freeze_ticks =
            run.engine.settings().policy.freeze_for.as_secs_f64() / run.interval.as_secs_f64();
        for _ in 0..=(freeze_ticks.ceil() as u32 + 1) {
            steps += 1;
            run.tick(HEALTHY, &mut rng);
        }
        let down = Tick {
            api: ProbeReason::Refused,
            workload: ProbeReason::Error,
            standby: ProbeReason::Ok,
        };
        let len = threshold + rng.int(0, 5) as u32;
        for k in 1..=len {
            steps += 1;
            if run.tick(down, &mut rng) {
                r.outages_promoted += 1;
                *r.promoted_at
                    .entry(i64::from(k) - i64::from(threshold))
                    .or_insert(0) += 1;
                break;
            }
        }
    }
    r.steps_per_sec = steps as f64 / started.elapsed().as_secs_f64().max(1e-9);
    r
}

//! Spread, not piled: which leader Leases this process takes, so that with many groups
//! leadership spreads over the instances. Pure bookkeeping, shared by the groups of one
//! process; the caller counts the live instances and writes the Leases.
//!
//! - **Fair share**: `ceil(groups ÷ live instances)`, where the live instances of a group
//!   are its fresh observer Leases (this instance included). Those are read every tick
//!   anyway, and they count exactly the instances that reach this group's standby, the
//!   only ones that can lead it.
//! - An instance below its share is **eager** ([`Take::Eager`]): it takes a missing, released or expired
//!   leader Lease at once. At or above its share it leaves such a Lease to the others
//!   for one more lease duration and takes it only if nobody did
//!   ([`super::leader::Election::plan`]), so no group stays without a leader.
//! - During its first observer ttl an instance takes nothing beyond its share of the
//!   instances meant to run (`observers.expected`: `ceil(groups ÷ max(live, expected))`,
//!   nothing when it is not set), and starts counting how long a missing or released
//!   Lease has been free only afterwards: by then every live instance has published its
//!   observer Lease, so instances started together do not pile every group onto
//!   whichever ticks first, and with `expected` set each takes its share at once, so
//!   every group is led from the first ticks instead of after the warm-up.
//! - An instance above its share **sheds**: it releases one quiet group's Lease (no
//!   failover under way) per lease duration, and only while another fresh instance says
//!   it leads less than the share, so a released Lease is taken at once.

use super::leader::Take;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The groups this process leads, and its share.
#[derive(Debug)]
pub struct Spread {
    groups: usize,
    /// Not eager before then (the first observer ttl).
    warm_from: Instant,
    /// At most one release per this long (the lease duration).
    shed_every: Duration,
    /// Groups led, or being taken (reserved before the write, so that groups ticking
    /// at the same time do not all take one more).
    leading: BTreeSet<String>,
    last_shed: Option<Instant>,
}

impl Spread {
    /// `groups` configured in this process, started at `started`; eager from
    /// `started + warm_up`; at most one release per `shed_every`.
    pub fn new(groups: usize, started: Instant, warm_up: Duration, shed_every: Duration) -> Self {
        Spread {
            groups,
            warm_from: started.checked_add(warm_up).unwrap_or(started),
            shed_every,
            leading: BTreeSet::new(),
            last_shed: None,
        }
    }

    /// `ceil(groups ÷ live)`, `live` counted at least 1.
    pub fn fair_share(&self, live: usize) -> usize {
        self.groups.div_ceil(live.max(1))
    }

    /// How many groups this process leads (or is taking).
    pub fn leading(&self) -> usize {
        self.leading.len()
    }

    /// How readily `group`'s Lease is taken: during the warm-up, eagerly while this
    /// process leads less than its share of the `expected` instances (or of the live
    /// ones, if more) without `group`, held back otherwise (always without `expected`);
    /// after it, eagerly while it leads less than its share of the live instances,
    /// patiently otherwise.
    pub fn take(&self, group: &str, now: Instant, live: usize, expected: Option<usize>) -> Take {
        let others = self.leading.iter().filter(|g| *g != group).count();
        if now < self.warm_from {
            match expected {
                Some(e) if others < self.fair_share(live.max(e)) => Take::Eager,
                _ => Take::Hold,
            }
        } else if others < self.fair_share(live) {
            Take::Eager
        } else {
            Take::Patient
        }
    }

    /// Whether this process leads (or is taking) `group`.
    pub fn set(&mut self, group: &str, leading: bool) {
        if leading {
            self.leading.insert(group.to_string());
        } else {
            self.leading.remove(group);
        }
    }

    /// Whether to release `group` now: this process leads it, leads more than its
    /// share, `quiet` (no failover under way in the group), another instance has room
    /// (`room_elsewhere`), and no release within `shed_every`. When true, `group` no
    /// longer counts as led.
    pub fn shed(
        &mut self,
        group: &str,
        now: Instant,
        live: usize,
        quiet: bool,
        room_elsewhere: bool,
    ) -> bool {
        let due = self
            .last_shed
            .is_none_or(|t| now.saturating_duration_since(t) >= self.shed_every);
        if quiet
            && room_elsewhere
            && due
            && now >= self.warm_from
            && self.leading.contains(group)
            && self.leading.len() > self.fair_share(live)
        {
            self.last_shed = Some(now);
            self.leading.remove(group);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::leader::Take;
    use crate::coord::leader::{Election, LeaderTiming, LeaseView, Plan, WriteResult};
    use std::collections::BTreeMap;

    const TIMING: LeaderTiming = LeaderTiming {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
    };
    const TICK: Duration = Duration::from_secs(1);
    const TTL: Duration = Duration::from_secs(3);

    #[test]
    fn fair_share_rounds_up_and_nothing_is_taken_during_the_warm_up() {
        let t0 = Instant::now();
        let mut s = Spread::new(20, t0, TTL, TIMING.lease_duration);
        assert_eq!(s.fair_share(3), 7);
        assert_eq!(s.fair_share(2), 10);
        assert_eq!(s.fair_share(0), 20);
        assert_eq!(
            s.take("g0", t0, 3, None),
            Take::Hold,
            "not during the first ttl"
        );
        assert_eq!(s.take("g0", t0 + TTL, 3, None), Take::Eager);
        for g in 0..7 {
            s.set(&format!("g{g}"), true);
        }
        assert_eq!(
            s.take("g7", t0 + TTL, 3, None),
            Take::Patient,
            "at its share"
        );
        assert_eq!(
            s.take("g6", t0 + TTL, 3, None),
            Take::Eager,
            "a group it leads is not one more"
        );
        assert_eq!(
            s.take("g7", t0 + TTL, 2, None),
            Take::Eager,
            "one instance fewer: share 10"
        );
    }

    #[test]
    fn sheds_one_quiet_group_per_lease_duration_while_another_has_room() {
        let t0 = Instant::now() + TTL;
        let mut s = Spread::new(20, t0 - TTL, TTL, TIMING.lease_duration);
        for g in 0..10 {
            s.set(&format!("g{g}"), true);
        }
        assert!(!s.shed("g0", t0, 2, true, true), "at its share of 10");
        assert!(!s.shed("g0", t0, 3, false, true), "not quiet");
        assert!(!s.shed("g0", t0, 3, true, false), "nobody has room");
        assert!(!s.shed("g99", t0, 3, true, true), "not led");
        assert!(s.shed("g0", t0, 3, true, true));
        assert_eq!(s.leading(), 9);
        assert!(
            !s.shed("g1", t0 + TICK, 3, true, true),
            "one per lease duration"
        );
        assert!(s.shed("g1", t0 + TIMING.lease_duration, 3, true, true));
        assert!(s.shed("g2", t0 + 2 * TIMING.lease_duration, 3, true, true));
        assert_eq!(s.leading(), 7);
        assert!(!s.shed("g3", t0 + 3 * TIMING.lease_duration, 3, true, true));
    }

    /// Instances ticking every group each second against shared Leases (a write
    /// succeeds only at the resourceVersion read), as the daemon does: each renews its
    /// observer Lease (the heartbeat of the leader Leases it holds) once per tick.
    struct Sim {
        now: Instant,
        groups: Vec<String>,
        /// Per group: (resourceVersion, holder index or None).
        leases: BTreeMap<String, (u64, Option<usize>)>,
        instances: Vec<Inst>,
        /// Per instance: its observer Lease's resourceVersion.
        beats: Vec<u64>,
    }

    struct Inst {
        alive: bool,
        spread: Spread,
        elections: BTreeMap<String, Election>,
        /// When this instance last published (its observer Leases).
        published: Option<Instant>,
        /// `observers.expected`.
        expected: Option<usize>,
    }

    impl Sim {
        fn new(groups: usize, instances: usize) -> Sim {
            let now = Instant::now();
            let groups: Vec<String> = (0..groups).map(|g| format!("g{g}")).collect();
            let instances: Vec<Inst> = (0..instances).map(|i| Inst::new(i, &groups, now)).collect();
            Sim {
                now,
                groups,
                leases: BTreeMap::new(),
                beats: vec![0; instances.len()],
                instances,
            }
        }

        fn live(&self) -> usize {
            self.instances
                .iter()
                .filter(|i| i.published.is_some_and(|p| self.now - p <= TTL))
                .count()
        }

        fn counts(&self) -> Vec<usize> {
            (0..self.instances.len())
                .map(|i| self.leases.values().filter(|(_, h)| *h == Some(i)).count())
                .collect()
        }

        fn tick(&mut self) {
            let live = self.live().max(1);
            for i in 0..self.instances.len() {
                if !self.instances[i].alive {
                    continue;
                }
                // The renewal, answered at once: it keeps every running term.
                self.beats[i] += 1;
                for e in self.instances[i].elections.values_mut() {
                    e.renewed(self.now, self.now);
                }
                let others_room = (0..self.instances.len()).any(|j| {
                    j != i
                        && self.instances[j].alive
                        && self.instances[j].spread.leading() < {
                            self.instances[j].spread.fair_share(live)
                        }
                });
                for g in self.groups.clone() {
                    let view = self.leases.get(&g).map(|(rv, h)| LeaseView {
                        resource_version: rv.to_string(),
                        holder: h.map(|h| format!("i{h}")),
                        instance: h.map(|h| format!("p{h}")),
                        transitions: 0,
                        heartbeat: h.map(|h| self.beats[h].to_string()),
                    });
                    let now = self.now;
                    let inst = &mut self.instances[i];
                    let take = inst.spread.take(&g, now, live, inst.expected);
                    let e = inst.elections.get_mut(&g).unwrap();
                    let plan = e.plan(now, view.as_ref(), take);
                    let rv = view.as_ref().map(|v| v.resource_version.clone());
                    let next = self.leases.get(&g).map_or(1, |(rv, _)| rv + 1);
                    let ours = plan == Plan::Keep;
                    if ours && inst.spread.shed(&g, now, live, true, others_room) {
                        e.step_down();
                        self.leases.insert(g.clone(), (next, None));
                        continue;
                    }
                    if matches!(plan, Plan::Follow | Plan::Keep) {
                        inst.spread.set(&g, e.may_write(now));
                        continue;
                    }
                    let current = self.leases.get(&g).map(|(rv, _)| rv.to_string());
                    if current == rv {
                        self.leases.insert(g.clone(), (next, Some(i)));
                        e.written(now, WriteResult::Ok);
                    } else {
                        e.written(now, WriteResult::Conflict);
                    }
                    inst.spread.set(&g, e.may_write(now));
                }
                self.instances[i].published = Some(self.now);
            }
            self.now += TICK;
        }

        fn run(&mut self, ticks: usize) {
            for _ in 0..ticks {
                self.tick();
            }
        }

        /// Groups whose Lease is held by a live instance.
        fn led(&self) -> usize {
            self.leases
                .values()
                .filter(|(_, h)| h.is_some_and(|h| self.instances[h].alive))
                .count()
        }
    }

    impl Inst {
        fn new(i: usize, groups: &[String], now: Instant) -> Inst {
            Inst {
                alive: true,
                spread: Spread::new(groups.len(), now, TTL, TIMING.lease_duration),
                elections: groups
                    .iter()
                    .map(|g| {
                        (
                            g.clone(),
                            Election::new(format!("i{i}"), format!("p{i}"), TIMING),
                        )
                    })
                    .collect(),
                published: None,
                expected: None,
            }
        }
    }

    #[test]
    fn twenty_groups_spread_over_three_instances_and_move_when_one_dies() {
        let mut sim = Sim::new(20, 3);
        sim.run(10);
        let counts = sim.counts();
        assert_eq!(counts.iter().sum::<usize>(), 20, "{counts:?}");
        assert!(counts.iter().all(|c| (6..=7).contains(c)), "{counts:?}");

        // One dies: its groups move within a lease duration plus two ticks (the ttl
        // that ends its observer Leases' freshness is as long).
        let dead = counts.iter().position(|c| *c == 7).unwrap();
        sim.instances[dead].alive = false;
        let mut took = None;
        for t in 1..=20 {
            sim.tick();
            if sim.led() == 20 {
                took = Some(t);
                break;
            }
        }
        let took = took.expect("every group led again");
        assert!(
            TICK * took <= TIMING.lease_duration + 2 * TICK,
            "took {took} ticks"
        );
        let counts = sim.counts();
        let alive: Vec<usize> = (0..3).filter(|i| *i != dead).map(|i| counts[i]).collect();
        assert!(alive.iter().all(|c| *c == 10), "{counts:?}");
    }

    #[test]
    fn a_returning_instance_gets_its_share_back_by_shedding() {
        let mut sim = Sim::new(20, 3);
        sim.run(10);
        sim.instances[0].alive = false;
        sim.run(10);
        assert_eq!(sim.counts()[0], 0);
        // A new process of instance 0: it starts with nothing, the others shed.
        let groups = sim.groups.clone();
        sim.instances[0] = Inst::new(0, &groups, sim.now);
        sim.run(20);
        let counts = sim.counts();
        assert_eq!(counts.iter().sum::<usize>(), 20, "{counts:?}");
        assert!(counts.iter().all(|c| (6..=7).contains(c)), "{counts:?}");
    }

    #[test]
    fn a_single_instance_leads_every_group_after_its_warm_up() {
        let mut sim = Sim::new(5, 1);
        sim.run(2);
        assert_eq!(sim.led(), 0, "waiting for other instances to show");
        sim.run(3);
        assert_eq!(sim.led(), 5);
    }

    #[test]
    fn with_the_expected_instances_known_each_takes_its_share_at_once() {
        // The warm-up's own test: one share taken during it, no more, and nothing at
        // all without `expected`.
        let t0 = Instant::now();
        let mut s = Spread::new(20, t0, TTL, TIMING.lease_duration);
        assert_eq!(s.take("g0", t0, 1, Some(3)), Take::Eager, "alone so far");
        for g in 0..7 {
            s.set(&format!("g{g}"), true);
        }
        assert_eq!(
            s.take("g7", t0, 1, Some(3)),
            Take::Hold,
            "its share of 3 is 7"
        );
        assert_eq!(
            s.take("g7", t0, 4, Some(3)),
            Take::Hold,
            "more live: smaller share"
        );
        assert_eq!(
            s.take("g7", t0, 2, Some(2)),
            Take::Eager,
            "share of 2 is 10"
        );
        assert_eq!(
            s.take("g7", t0 + TTL, 1, Some(3)),
            Take::Eager,
            "after it, by live"
        );

        // 200 groups, three instances started together, each knowing three are meant
        // to run: every group led after the first tick, none above its share.
        let mut sim = Sim::new(200, 3);
        for inst in &mut sim.instances {
            inst.expected = Some(3);
        }
        sim.tick();
        assert_eq!(sim.led(), 200);
        let counts = sim.counts();
        assert!(counts.iter().all(|c| (66..=67).contains(c)), "{counts:?}");
        // Control: without `expected`, the same start leads nothing during the warm-up.
        let mut held = Sim::new(200, 3);
        held.run(2);
        assert_eq!(held.led(), 0);
        // And the spread holds afterwards, one dying as before.
        sim.run(10);
        let counts = sim.counts();
        assert!(counts.iter().all(|c| (66..=67).contains(c)), "{counts:?}");
        sim.instances[0].alive = false;
        sim.run(10);
        assert_eq!(sim.led(), 200);
        assert_eq!(sim.counts()[1..].iter().sum::<usize>(), 200);
    }
}

//! The checker: reads both API servers every 100 ms (the agent's Deployments on each
//! side, the failover record) with the test bed's admin identity, the instances'
//! processes and RSS every second, and holds each invariant against its budget.

use crate::faults::Effect;
use crate::support::GROUP;
use crate::world::{COOLDOWN, INSTANCES, QUORUM, STARTUP_GRACE, Side, World};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams};
use kube_failover_testbed::Cluster;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Both sides with replicas, counted while the primary's API answers and an instance
/// could fence it: a tick to see the API back, the watches' resumption, the fence's
/// write, and a leader hand-over when the leader was the one cut off (lease duration).
pub const FENCE_BUDGET: Duration = Duration::from_secs(15);
/// Neither side serving while the daemon promised a promotion: `failure_threshold`
/// intervals of detection, the observers' verdicts, a leader hand-over (lease duration
/// 3 s and the tick that sees it), the promotion's writes.
pub const NO_ACTIVE_BUDGET: Duration = Duration::from_secs(15);
/// A promotion must follow, within this, a primary outage (API down, Pods unready)
/// or a cut of the primary's path for a quorum of instances.
pub const PROMOTION_LOOKBACK: Duration = Duration::from_secs(20);
/// Both agents running (each guard's agent alive where its side's Deployments want
/// replicas): the primary's guard reads the promoting record within its interval (500 ms)
/// and stops its agent, and the promotion's scale-up waits for that stop; when that guard
/// cannot read the record it stops the agent after `isolation_ttl` unless a quorum of
/// daemons vouch for the primary. The budget is the sampling's and the guards' jitter.
pub const AGENTS_BUDGET: Duration = Duration::from_secs(1);
/// Resident memory of an instance.
pub const RSS_BUDGET_KIB: u64 = 256 * 1024;
/// Reads of the checker.
const READ_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy)]
struct SideView {
    replicas: i32,
    ready: i32,
}

#[derive(Debug, Clone, Default, PartialEq)]
struct RecordView {
    phase: String,
    epoch: u64,
    promoted_at: Option<String>,
    promoted_at_unix: Option<f64>,
    failback_at: Option<String>,
    failback_at_unix: Option<f64>,
    failback_step: Option<String>,
    paused: bool,
    holder: Option<String>,
}

impl RecordView {
    fn from(cm: &ConfigMap) -> RecordView {
        let data = cm.data.clone().unwrap_or_default();
        let get = |k: &str| data.get(k).cloned();
        RecordView {
            phase: get("phase").unwrap_or_else(|| "primary".into()),
            epoch: get("epoch").and_then(|e| e.parse().ok()).unwrap_or(0),
            promoted_at: get("promoted_at"),
            promoted_at_unix: get("promoted_at_unix").and_then(|v| v.parse().ok()),
            failback_at: get("failback_at"),
            failback_at_unix: get("failback_at_unix").and_then(|v| v.parse().ok()),
            failback_step: get("failback_step"),
            paused: get("paused_by").is_some(),
            holder: get("holder"),
        }
    }

    /// The standby is named active.
    fn standby_named(&self) -> bool {
        matches!(self.phase.as_str(), "promoting" | "promoted" | "failed")
    }
}

/// A window in which a condition held, measured against a budget.
#[derive(Debug, Default)]
pub struct Window {
    since: Option<Duration>,
    last: Duration,
    pub worst: Duration,
    pub worst_at: Option<(Duration, Duration)>,
    pub count: usize,
}

impl Window {
    /// Feeds the condition at `t`; returns a window that just closed, `(from, to)`.
    fn feed(&mut self, t: Duration, cond: bool) -> Option<(Duration, Duration)> {
        if cond {
            let since = *self.since.get_or_insert_with(|| {
                self.count += 1;
                t
            });
            self.last = t;
            if t - since > self.worst {
                self.worst = t - since;
                self.worst_at = Some((since, t));
            }
            None
        } else {
            self.since.take().map(|s| (s, self.last))
        }
    }
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub invariant: &'static str,
    pub from: Duration,
    pub to: Duration,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct Promotion {
    pub epoch: u64,
    pub at: Duration,
    pub holder: String,
    pub causes: String,
    pub justified: bool,
}

#[derive(Debug, Default)]
pub struct Checker {
    pub samples: u64,
    pub gaps: Vec<Duration>,
    pub unread_primary: u64,
    pub unread_standby: u64,
    pub dual: Window,
    pub dual_raw: Window,
    /// Both agents running ([`AGENTS_BUDGET`]).
    pub agents_dual: Window,
    /// Samples with each side's agent running (primary, standby).
    pub agent_samples: [u64; 2],
    pub none: Window,
    pub none_raw: Window,
    pub promotions: Vec<Promotion>,
    pub failbacks: Vec<(Duration, u64)>,
    pub epoch_worst_drop: u64,
    pub epoch_reuses: usize,
    pub failback_undone: usize,
    pub crashes: usize,
    pub panics: usize,
    pub rss_first_kib: Vec<u64>,
    pub rss_max_kib: Vec<u64>,
    pub rss_last_kib: Vec<u64>,
    pub violations: Vec<Violation>,
    /// Samples with neither side serving, by what excused the daemon.
    pub none_excused: BTreeMap<&'static str, u64>,
    /// Windows with neither side serving longer than the budget, and what excused them.
    pub long_excused: Vec<(Duration, Duration, Vec<&'static str>)>,
    window_excuses: std::collections::BTreeSet<&'static str>,
    /// Every change of the record's phase, epoch, pause or failback step.
    pub record_changes: Vec<(Duration, String)>,
    last_primary: Option<SideView>,
    last_standby: Option<SideView>,
    last_record: Option<Option<RecordView>>,
    /// The latest sample where the primary did not serve.
    last_not_serving: Option<Duration>,
    max_epoch: Option<u64>,
    epoch_content: BTreeMap<u64, String>,
    failback_epoch: Option<u64>,
    last_failback: Option<(u64, String)>,
    seen_healthy: Vec<bool>,
    seen_since: Vec<Duration>,
    /// The leader-only writes of the audit logs ([`scan_audit`]).
    pub audit: Option<crate::audit::Findings>,
}

async fn read_side(c: &Cluster) -> Option<SideView> {
    let api: Api<Deployment> = Api::namespaced(c.client(), c.namespace());
    let list = tokio::time::timeout(READ_TIMEOUT, api.list(&ListParams::default()))
        .await
        .ok()?
        .ok()?;
    let names = c.deployment_names();
    let mut view = SideView {
        replicas: 0,
        ready: 0,
    };
    for d in list.items {
        if names.iter().any(|n| Some(n) == d.metadata.name.as_ref()) {
            view.replicas += d.spec.and_then(|s| s.replicas).unwrap_or(1);
            view.ready += d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        }
    }
    Some(view)
}

async fn read_record(c: &Cluster) -> Option<Option<RecordView>> {
    let api: Api<ConfigMap> = Api::namespaced(c.client(), c.namespace());
    let got = tokio::time::timeout(READ_TIMEOUT, api.get_opt(&format!("kube-failover-{GROUP}")))
        .await
        .ok()?
        .ok()?;
    Some(got.as_ref().map(RecordView::from))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Samples until `stop` says so; returns what it found.
pub async fn run(world: Arc<World>, mut stop: watch::Receiver<bool>) -> Checker {
    let mut c = Checker {
        seen_healthy: vec![true; INSTANCES],
        seen_since: vec![Duration::ZERO; INSTANCES],
        rss_first_kib: vec![0; INSTANCES],
        rss_max_kib: vec![0; INSTANCES],
        rss_last_kib: vec![0; INSTANCES],
        ..Checker::default()
    };
    let mut every = tokio::time::interval(Duration::from_millis(100));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut previous: Option<Duration> = None;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => break,
        }
        let t = world.now();
        if let Some(p) = previous {
            c.gaps.push(t - p);
        }
        previous = Some(t);
        let (primary, standby, record) = tokio::join!(
            read_side(&world.pair.primary),
            read_side(&world.pair.standby),
            read_record(&world.pair.standby),
        );
        c.samples += 1;
        c.sample(&world, t, primary, standby, record);
        if c.samples % 10 == 1 {
            c.processes(&world, t).await;
            c.guard_processes(&world, t).await;
        }
    }
    let end = world.now();
    c.close(end);
    c
}

impl Checker {
    fn violate(&mut self, invariant: &'static str, from: Duration, to: Duration, detail: String) {
        // The report gives its window, from the campaign's start.
        println!("chaos: VIOLATION {invariant}: {detail}");
        self.violations.push(Violation {
            invariant,
            from,
            to,
            detail,
        });
    }

    /// A window of `invariant` that just closed, `(from, to)`, against its budget: a
    /// violation when longer, said as `what` and how long.
    fn judge(
        &mut self,
        invariant: &'static str,
        closed: Option<(Duration, Duration)>,
        budget: Duration,
        what: &str,
    ) {
        if let Some((from, to)) = closed
            && to - from > budget
        {
            self.violate(
                invariant,
                from,
                to,
                format!(
                    "{what} for {:.1}s (budget {:.1}s)",
                    (to - from).as_secs_f64(),
                    budget.as_secs_f64()
                ),
            );
        }
    }

    fn sample(
        &mut self,
        world: &World,
        t: Duration,
        primary: Option<SideView>,
        standby: Option<SideView>,
        record: Option<Option<RecordView>>,
    ) {
        let eff = world.effects_at(t);
        let has = |e: Effect| eff.contains(&e);
        let primary_reachable = primary.is_some();
        let standby_reachable = standby.is_some() && record.is_some();
        if primary.is_none() {
            self.unread_primary += 1;
        }
        if !standby_reachable {
            self.unread_standby += 1;
        }
        if primary.is_some() {
            self.last_primary = primary;
        }
        if standby.is_some() {
            self.last_standby = standby;
        }
        if let Some(r) = &record {
            let summary = |r: &Option<RecordView>| {
                r.as_ref().map(|r| {
                    format!(
                        "{} epoch {}{}{}{}",
                        r.phase,
                        r.epoch,
                        r.failback_at
                            .as_ref()
                            .map(|f| format!(", failback_at {f}"))
                            .unwrap_or_default(),
                        if r.paused { ", paused" } else { "" },
                        r.failback_step
                            .as_ref()
                            .map(|s| format!(", failback step {s}"))
                            .unwrap_or_default()
                    )
                })
            };
            let now = summary(r);
            if self.last_record.as_ref().map(summary) != Some(now.clone()) {
                self.record_changes
                    .push((t, now.unwrap_or_else(|| "missing".to_string())));
            }
            self.check_record(world, t, r.as_ref());
            self.last_record = Some(r.clone());
        }
        let (Some(p), Some(s)) = (self.last_primary, self.last_standby) else {
            return;
        };
        let rec = self.last_record.clone().flatten();
        let held = rec
            .as_ref()
            .is_some_and(|r| r.paused || r.failback_step.is_some());

        // Instances: up, not stopped, and (for the promise) seen the primary healthy since
        // their start.
        let primary_serving = primary.is_some_and(|p| p.replicas > 0 && p.ready > 0);
        if !primary_serving {
            self.last_not_serving = Some(t);
        }
        let mut fit = 0;
        let mut able_to_fence = false;
        for i in 0..INSTANCES {
            let since = world.running_since(i, t);
            if since != self.seen_since[i] {
                self.seen_since[i] = since;
                self.seen_healthy[i] = false;
            }
            let up = !has(Effect::DaemonDown(i)) && !has(Effect::DaemonStopped(i));
            // A token being rotated: 401 there, which the instance cannot tell from
            // anything (unknown, never down).
            let unknown_primary = has(Effect::Credentials(i, Side::Primary));
            let unknown_standby = has(Effect::Credentials(i, Side::Standby));
            if up
                && !self.seen_healthy[i]
                && t >= since + STARTUP_GRACE + Duration::from_secs(10)
                && primary_serving
                && !has(Effect::PrimaryPath(i))
                && !unknown_primary
                && !has(Effect::Rbac)
                && !has(Effect::Relabel)
            {
                self.seen_healthy[i] = true;
            }
            if up
                && !has(Effect::StandbyPath(i))
                && !unknown_primary
                && !unknown_standby
                && self.seen_healthy[i]
            {
                fit += 1;
            }
            if up
                && !has(Effect::StandbyPath(i))
                && !has(Effect::PrimaryPath(i))
                && !unknown_primary
                && !unknown_standby
            {
                able_to_fence = true;
            }
        }

        // Both agents running: a guard's agent runs where its side's Deployments want
        // replicas (kwok's Pods run nothing: the guards' agents are processes here; the
        // primary's last answer stands while its API is down, as its kubelets keep Pods).
        let agents = [
            world.guards[0].agent_alive() && p.replicas > 0,
            world.guards[1].agent_alive() && s.replicas > 0,
        ];
        for (n, running) in agents.iter().enumerate() {
            self.agent_samples[n] += u64::from(*running);
        }
        let closed = self.agents_dual.feed(t, agents[0] && agents[1]);
        self.judge("agents_dual", closed, AGENTS_BUDGET, "both agents ran");

        // Both sides active.
        let dual = p.replicas > 0 && s.replicas > 0;
        self.dual_raw.feed(t, dual);
        let counted = dual
            && primary_reachable
            && standby_reachable
            && !held
            && !has(Effect::Rbac)
            && able_to_fence;
        if let Some((from, to)) = self.dual.feed(t, counted)
            && to - from > FENCE_BUDGET
        {
            self.violate(
                "dual_active",
                from,
                to,
                format!(
                    "both sides had replicas for {:.1}s while the primary's API answered and an instance could fence (budget {}s)",
                    (to - from).as_secs_f64(),
                    FENCE_BUDGET.as_secs()
                ),
            );
        }

        // No side active while a promotion is promised.
        let none = !primary_serving && s.replicas == 0;
        if let Some((from, to)) = self.none_raw.feed(t, none) {
            let excuses = std::mem::take(&mut self.window_excuses);
            if to - from > NO_ACTIVE_BUDGET {
                self.long_excused
                    .push((from, to, excuses.into_iter().collect()));
            }
        }
        let cooling = rec.as_ref().is_some_and(|r| {
            let last = r
                .promoted_at_unix
                .unwrap_or(0.0)
                .max(r.failback_at_unix.unwrap_or(0.0));
            unix_now() < last + COOLDOWN.as_secs_f64() + 2.0
        });
        let blockers = [
            ("standby unreadable", !standby_reachable),
            ("paused or failback step", held),
            ("cooldown", cooling),
            ("primary RBAC revoked", has(Effect::Rbac)),
            ("primary relabelled", has(Effect::Relabel)),
            ("fewer than a quorum of fit instances", fit < QUORUM),
        ];
        let promised = none && blockers.iter().all(|(_, b)| !b);
        if none {
            for (name, blocking) in blockers {
                if blocking {
                    *self.none_excused.entry(name).or_default() += 1;
                    self.window_excuses.insert(name);
                }
            }
        }
        if let Some((from, to)) = self.none.feed(t, promised)
            && to - from > NO_ACTIVE_BUDGET
        {
            self.violate(
                "no_active_side",
                from,
                to,
                format!(
                    "neither side served for {:.1}s while a promotion was due: standby fit, nothing paused, no cooldown, {fit} instances fit (budget {}s)",
                    (to - from).as_secs_f64(),
                    NO_ACTIVE_BUDGET.as_secs()
                ),
            );
        }
    }

    fn check_record(&mut self, world: &World, t: Duration, r: Option<&RecordView>) {
        let Some(r) = r else {
            // No record yet: nothing was promoted before the campaign.
            self.max_epoch.get_or_insert(0);
            return;
        };
        let max = *self.max_epoch.get_or_insert(r.epoch);
        if r.epoch < max {
            self.epoch_worst_drop = self.epoch_worst_drop.max(max - r.epoch);
            self.violate(
                "epochs",
                t,
                t,
                format!("the record's epoch went from {max} down to {}", r.epoch),
            );
        }
        if r.epoch >= 1 {
            let content = r.promoted_at.clone().unwrap_or_default();
            match self.epoch_content.get(&r.epoch) {
                Some(seen) if *seen != content => {
                    self.epoch_reuses += 1;
                    self.violate(
                        "epochs",
                        t,
                        t,
                        format!(
                            "epoch {} reused: promoted_at {seen:?} then {content:?}",
                            r.epoch
                        ),
                    );
                    self.epoch_content.insert(r.epoch, content);
                }
                Some(_) => {}
                None => {
                    self.epoch_content.insert(r.epoch, content);
                }
            }
        }
        if r.epoch > max {
            self.max_epoch = Some(r.epoch);
            self.promotion(world, t, r);
        }
        // Failbacks, and what must never undo them.
        if !r.standby_named() && r.failback_step.is_none() && r.failback_at.is_some() {
            let key = (r.epoch, r.failback_at.clone().unwrap_or_default());
            if self.last_failback.as_ref() != Some(&key) {
                self.last_failback = Some(key);
                self.failbacks.push((t, r.epoch));
            }
            self.failback_epoch = Some(self.failback_epoch.unwrap_or(0).max(r.epoch));
        }
        if let Some(fb) = self.failback_epoch
            && r.standby_named()
            && r.epoch <= fb
        {
            self.failback_undone += 1;
            self.violate(
                "failback_undone",
                t,
                t,
                format!(
                    "the record says {} at epoch {} after a failback at epoch {fb}",
                    r.phase, r.epoch
                ),
            );
        }
    }

    /// A new epoch: was there a primary outage a quorum could see?
    fn promotion(&mut self, world: &World, t: Duration, r: &RecordView) {
        let from = t.saturating_sub(PROMOTION_LOOKBACK);
        let mut causes = Vec::new();
        if world.any_effect_between(from, t, |e| *e == Effect::PrimaryApiDown) {
            causes.push("primary API down".to_string());
        }
        if world.any_effect_between(from, t, |e| *e == Effect::PodsUnready) {
            causes.push("primary Pods unready".to_string());
        }
        if self.last_not_serving.is_some_and(|n| n >= from) {
            causes.push("primary not serving (seen by the checker)".to_string());
        }
        let global = !causes.is_empty();
        let mut seeing = Vec::new();
        for (i, inst) in world.instances.iter().enumerate() {
            let cut = world.any_effect_between(from, t, |e| *e == Effect::PrimaryPath(i));
            if cut {
                causes.push(format!("{} cut from the primary", inst.identity));
            }
            if global || cut {
                seeing.push(inst.identity.clone());
            }
        }
        let holder = r.holder.clone().unwrap_or_default();
        let justified = seeing.len() >= QUORUM && seeing.contains(&holder);
        let causes = if causes.is_empty() {
            "none".to_string()
        } else {
            causes.join(", ")
        };
        if !justified {
            self.violate(
                "promotion_justified",
                from,
                t,
                format!(
                    "epoch {} written by {holder:?} with no primary outage a quorum could see in the {}s before (causes: {causes})",
                    r.epoch,
                    PROMOTION_LOOKBACK.as_secs()
                ),
            );
        }
        self.promotions.push(Promotion {
            epoch: r.epoch,
            at: t,
            holder,
            causes,
            justified,
        });
    }

    /// Processes: an exit the campaign did not cause is a crash (the instance is started
    /// again); RSS.
    async fn processes(&mut self, world: &World, t: Duration) {
        for (i, inst) in world.instances.iter().enumerate() {
            if let Some(pid) = *inst.pid.lock().unwrap_or_else(|p| p.into_inner())
                && let Some(kib) = rss_kib(pid)
            {
                if self.rss_first_kib[i] == 0 {
                    self.rss_first_kib[i] = kib;
                }
                self.rss_last_kib[i] = kib;
                if kib > self.rss_max_kib[i] {
                    self.rss_max_kib[i] = kib;
                }
            }
            if *inst.exit_expected.lock().unwrap_or_else(|p| p.into_inner()) {
                continue;
            }
            let exited = {
                let Ok(mut slot) = inst.process.try_lock() else {
                    continue;
                };
                match slot.as_mut() {
                    Some(d) => d.wait_exit(Duration::ZERO).await,
                    None => None,
                }
            };
            if let Some(status) = exited {
                self.crashes += 1;
                self.violate(
                    "no_crash",
                    t,
                    t,
                    format!("{} exited by itself: {status}", inst.identity),
                );
                inst.spawn(world.pair.primary.dir()).await;
            }
        }
    }

    /// Guards: an exit the campaign did not cause is a crash (the guard is started again).
    async fn guard_processes(&mut self, world: &World, t: Duration) {
        for g in &world.guards {
            let exited = {
                let Ok(mut slot) = g.current.try_lock() else {
                    continue;
                };
                slot.as_mut().and_then(|g| g.exited())
            };
            if let Some(status) = exited {
                self.crashes += 1;
                self.violate(
                    "no_crash",
                    t,
                    t,
                    format!("the {}'s guard exited by itself: {status}", g.side.name()),
                );
                g.spawn(&world.pair).await;
            }
        }
    }

    fn close(&mut self, end: Duration) {
        let closed = self.dual.feed(end, false);
        self.judge(
            "dual_active",
            closed,
            FENCE_BUDGET,
            "both sides had replicas at the end",
        );
        let closed = self.none.feed(end, false);
        self.judge(
            "no_active_side",
            closed,
            NO_ACTIVE_BUDGET,
            "neither side served at the end",
        );
        let closed = self.agents_dual.feed(end, false);
        self.judge(
            "agents_dual",
            closed,
            AGENTS_BUDGET,
            "both agents ran at the end",
        );
        self.dual_raw.feed(end, false);
        self.none_raw.feed(end, false);
        for i in 0..INSTANCES {
            if self.rss_max_kib[i] > RSS_BUDGET_KIB {
                self.violate(
                    "memory",
                    Duration::ZERO,
                    end,
                    format!(
                        "instance {i}: RSS {} KiB over the budget",
                        self.rss_max_kib[i]
                    ),
                );
            }
        }
    }
}

/// Every log of every instance and guard: a `panicked` line is a violation.
pub fn scan_logs(world: &World, c: &mut Checker) {
    for (identity, logs) in world.log_sets() {
        let logs = logs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains("panicked")) {
                c.panics += 1;
                let end = world.now();
                c.violate(
                    "no_panic",
                    Duration::ZERO,
                    end,
                    format!("{identity} ({}): {line}", log.display()),
                );
            }
        }
    }
}

/// The leader-only writes of every instance, from both API servers' audit logs
/// ([`crate::audit`]): one reaching a server more than the lease duration after the
/// instance's last renewal, or after another instance took the Lease over, is a
/// violation; so is a campaign with promotions in which no such write was checked.
pub fn scan_audit(world: &World, c: &mut Checker) {
    let daemon = kube_failover::config::DaemonConfig {
        probe_interval: crate::world::INTERVAL,
        ..kube_failover::config::DaemonConfig::default()
    };
    let pair = &world.pair;
    let spec = crate::audit::Spec {
        identities: world.instances.iter().map(|i| i.identity.clone()).collect(),
        coordination_cluster: pair.standby.name().to_string(),
        namespace: pair.standby.namespace().to_string(),
        leader_lease: kube_failover::coord::leader_lease_name(GROUP),
        observer_lease: kube_failover::coord::presence::observer_lease_name,
        lease_duration: daemon.lease_duration(),
        renew_deadline: daemon.renew_deadline(),
    };
    let end = world.now();
    let mut events = Vec::new();
    for cluster in [&pair.primary, &pair.standby] {
        match cluster.audit_events_where(|e| e.is_successful_write()) {
            Ok(got) => events.extend(got.into_iter().map(|e| (cluster.name().to_string(), e))),
            Err(e) => {
                c.violate(
                    "leader_writes",
                    Duration::ZERO,
                    end,
                    format!("the audit log could not be read: {e}"),
                );
                return;
            }
        }
    }
    let found = crate::audit::check(&spec, events);
    let offset = |t: SystemTime| t.duration_since(world.wall_started).unwrap_or_default();
    for late in &found.late {
        let at = offset(late.received);
        let renewal = match &late.renewal {
            Some(r) => format!(
                "its last renewal ({}) received {:.3}s before, landed {:.3}s before (lease duration {}s)",
                if r.leader_lease {
                    "leader Lease"
                } else {
                    "heartbeat"
                },
                late.received
                    .duration_since(r.received)
                    .unwrap_or_default()
                    .as_secs_f64(),
                late.received
                    .duration_since(r.landed)
                    .unwrap_or_default()
                    .as_secs_f64(),
                spec.lease_duration.as_secs_f64()
            ),
            None => "it had never written the leader Lease".to_string(),
        };
        let taken = match &late.taken_over {
            Some((by, t)) => format!(
                "; {by} had taken the leader Lease over {:.3}s before",
                late.received
                    .duration_since(*t)
                    .unwrap_or_default()
                    .as_secs_f64()
            ),
            None => String::new(),
        };
        c.violate(
            "leader_writes",
            late.renewal
                .map(|r| offset(r.received))
                .unwrap_or(at.saturating_sub(spec.lease_duration)),
            at,
            format!(
                "{} wrote {} at {} (received): {renewal}{taken}",
                late.identity,
                late.write,
                humantime::format_rfc3339_micros(late.received)
            ),
        );
    }
    if !c.promotions.is_empty() && found.checked() == 0 {
        c.violate(
            "leader_writes",
            Duration::ZERO,
            end,
            format!(
                "{} promotions, but no leader-only write of an instance in the audit logs: the check saw nothing",
                c.promotions.len()
            ),
        );
    }
    c.audit = Some(found);
}

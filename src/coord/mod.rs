//! Several daemon instances on the same groups, coordinated on Leases in the standby
//! namespace (where the record lives), so no other coordination service is needed:
//!
//! - one leader per group, on the Lease `kube-failover-<group>-leader`: only the leader
//!   carries out the engine's actions (record, scaling, Events);
//! - every instance publishes its verdict on the primary each tick in its own Lease
//!   `kube-failover-<group>-observer-<identity>`; the leader promotes only when
//!   `policy.observers.quorum` fresh observers say `down` (decided by the engine).
//!
//! - leadership spreads over the instances: each takes about its fair share of the
//!   groups (see `spread`);
//! - on shutdown a leader releases its Leases, so another instance takes over at once.
//!
//! Leases are written with plain create/replace against a resourceVersion (verbs get,
//! list, create, update), renewed in the group's tick.

pub mod leader;
mod metrics;
pub mod observer;
pub mod spread;

pub use metrics::CoordMetrics;

use crate::config::{Config, DaemonConfig, GroupConfig};
use crate::engine::{Decision, GroupState};
use crate::kube_call::{CallError, bounded};
use crate::model::{ObserverReport, Verdict};
use crate::record::{APP_LABEL_VALUE, GROUP_LABEL};
use crate::status::{CoordStatus, Named, ObserverStatus};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use leader::{Election, LeaderTiming, LeaseView, Plan, WriteResult};
use observer::{ObserverLease, Observers};
use spread::Spread;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// Label telling a leader Lease from an observer Lease.
pub const ROLE_LABEL: &str = "kube-failover/role";
/// Annotation: the per-process instance id of the writer.
pub const INSTANCE_ANNOTATION: &str = "kube-failover/instance";
/// Annotation: the observer's verdict (`up`, `suspect`, `down`, `unknown`).
pub const VERDICT_ANNOTATION: &str = "kube-failover/verdict";
/// Annotation: the signals the observer sees down, comma-separated.
pub const DOWN_SIGNALS_ANNOTATION: &str = "kube-failover/down-signals";
/// Annotation: since when (Unix seconds) the observer says `down`.
pub const DOWN_SINCE_ANNOTATION: &str = "kube-failover/down-since";
/// Annotation: how many groups the observer's process leads (see [`spread`]).
pub const LEADING_ANNOTATION: &str = "kube-failover/leading";

/// The spread of this process's leadership over its groups, shared by them; created
/// with the first group's coordination (one process runs one config).
fn shared_spread(config: &Config, warm_up: Duration) -> Arc<Mutex<Spread>> {
    static SPREAD: OnceLock<Arc<Mutex<Spread>>> = OnceLock::new();
    SPREAD
        .get_or_init(|| {
            Arc::new(Mutex::new(Spread::new(
                config.groups.len(),
                Instant::now(),
                warm_up,
                config.daemon.lease_duration(),
            )))
        })
        .clone()
}

/// A random id of this process, written with every Lease, so that two processes with
/// the same `daemon.identity` are told apart.
pub fn instance_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(nanos);
        format!("{:016x}", h.finish())
    })
}

/// The leader timing, defaults applied: lease duration `max(3 × probe_interval, 3 s)`,
/// renew deadline two thirds of it (see [`DaemonConfig::lease_duration`]).
pub fn leader_timing(daemon: &DaemonConfig) -> LeaderTiming {
    LeaderTiming {
        lease_duration: daemon.lease_duration(),
        renew_deadline: daemon.renew_deadline(),
    }
}

/// `kube-failover-<group>-leader`.
pub fn leader_lease_name(group: &str) -> String {
    format!("kube-failover-{group}-leader")
}

/// `kube-failover-<group>-observer-<identity>` (identity made DNS-safe, the whole name at
/// most 253 characters).
pub fn observer_lease_name(group: &str, identity: &str) -> String {
    let prefix = format!("kube-failover-{group}-observer-");
    let room = 253usize.saturating_sub(prefix.len()).max(1);
    format!("{prefix}{}", observer::name_part(identity, room))
}

/// Starting refused: another live process publishes under this identity.
#[derive(Debug, thiserror::Error)]
#[error(
    "daemon.identity {identity:?} is already in use: another kube-failover process renews the \
     Lease {namespace}/{lease} (group {group}); give every instance its own daemon.identity"
)]
pub struct IdentityClash {
    /// The clashing identity.
    pub identity: String,
    /// The group whose observer Lease showed it.
    pub group: String,
    /// The standby namespace.
    pub namespace: String,
    /// The Lease name.
    pub lease: String,
}

/// This instance's role for one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds the leader Lease within its renew deadline: may write.
    Leader,
    /// Does not hold it: decides and reports, never writes.
    Follower,
    /// Another process publishes under this identity: never writes.
    IdentityClash,
}

impl Role {
    /// The `/status` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::IdentityClash => "identity_clash",
        }
    }
}

#[derive(Debug)]
struct State {
    election: Election,
    observers: Observers,
    /// The others' verdicts, as of the last sync.
    reports: Vec<ObserverReport>,
    /// This instance's observer Lease's resourceVersion after its last write, and
    /// whether it existed at the last read.
    own_rv: Option<String>,
    own_exists: bool,
    clash: bool,
    /// The renewal is failing (reported once per episode).
    renew_failing: bool,
    /// This instance's last verdict and since when it says down.
    own: (Verdict, Option<f64>, Vec<String>),
    /// No failover under way at the last decision (a group that may be handed over).
    quiet: bool,
    /// The leader Lease's resourceVersion after this instance's last write of it.
    leader_rv: Option<String>,
}

/// One group's coordination in this instance.
pub struct GroupCoord {
    group: String,
    namespace: String,
    api: Api<Lease>,
    identity: String,
    timeout: Duration,
    timing: LeaderTiming,
    ttl: Duration,
    quorum: u32,
    expected: Option<u32>,
    own_lease: String,
    metrics: CoordMetrics,
    state: Mutex<State>,
    spread: Arc<Mutex<Spread>>,
}

fn micro_now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

fn seconds_i32(d: Duration) -> i32 {
    i32::try_from(d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))).unwrap_or(i32::MAX)
}

fn conflict(e: &CallError) -> bool {
    matches!(e.status_code(), Some(409 | 404))
}

impl GroupCoord {
    /// The coordination of `group` in `standby` (its namespace holds the Leases).
    pub fn new(
        group: &GroupConfig,
        config: &Config,
        standby: kube::Client,
        identity: String,
        metrics: CoordMetrics,
    ) -> Self {
        let namespace = group.standby.namespace.clone();
        let timing = leader_timing(&config.daemon);
        let observers = &group.policy.observers;
        metrics.init_group(&group.name, observers.expected);
        let ttl = observers.ttl_or_default(config.daemon.probe_interval);
        GroupCoord {
            spread: shared_spread(config, ttl),
            api: Api::namespaced(standby, &namespace),
            own_lease: observer_lease_name(&group.name, &identity),
            state: Mutex::new(State {
                election: Election::new(identity.clone(), instance_id().to_string(), timing),
                observers: Observers::default(),
                reports: Vec::new(),
                own_rv: None,
                own_exists: false,
                clash: false,
                renew_failing: false,
                own: (Verdict::Unknown, None, Vec::new()),
                quiet: false,
                leader_rv: None,
            }),
            group: group.name.clone(),
            namespace,
            identity,
            timeout: config.daemon.probe_timeout,
            timing,
            ttl,
            quorum: observers.quorum,
            expected: observers.expected,
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locked after [`Self::lock`] when both are needed, never before.
    fn spread(&self) -> std::sync::MutexGuard<'_, Spread> {
        self.spread.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// At start: refuses when another live process renews this identity's observer
    /// Lease. A Lease renewed recently by a process that is gone (a restart) is waited
    /// out: the clash is only reported when it is renewed again within the ttl.
    pub async fn check_identity(&self, poll: Duration) -> Result<(), IdentityClash> {
        let started = Instant::now();
        let mut first_rv: Option<String> = None;
        loop {
            let lease = match bounded(self.timeout, self.api.get_opt(&self.own_lease)).await {
                Ok(l) => l,
                // Unreadable now: the tick reports it; a clash is still caught there.
                Err(_) => return Ok(()),
            };
            let Some(lease) = lease.as_ref().map(parse_observer) else {
                return Ok(());
            };
            if lease.instance.as_deref() == Some(instance_id()) {
                return Ok(());
            }
            let wall_age = lease.renewed_unix.map(|t| now_unix() - t);
            if wall_age.is_none_or(|a| a > self.ttl.as_secs_f64()) && first_rv.is_none() {
                return Ok(());
            }
            match &first_rv {
                None => first_rv = Some(lease.resource_version.clone()),
                Some(rv) if *rv != lease.resource_version => {
                    return Err(IdentityClash {
                        identity: self.identity.clone(),
                        group: self.group.clone(),
                        namespace: self.namespace.clone(),
                        lease: self.own_lease.clone(),
                    });
                }
                Some(_) => {}
            }
            if started.elapsed() > self.ttl {
                return Ok(());
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// Once per tick, before the decision: reads the group's Leases, renews or takes
    /// the leader Lease, and returns the other observers' verdicts for the observation.
    pub async fn sync(&self, now: Instant, wall: f64) -> Vec<ObserverReport> {
        let params = ListParams::default().labels(&format!("{GROUP_LABEL}={}", self.group));
        let listed = bounded(self.timeout, self.api.list(&params)).await;
        let leases = match listed {
            Ok(list) => list.items,
            Err(e) => {
                self.renew_failed(&format!("cannot list Leases: {e}"));
                self.lock().reports.clear();
                // The term still runs out at its deadline, and is reported when it does.
                self.check_deadline(Instant::now());
                let st = self.lock();
                self.spread()
                    .set(&self.group, st.election.may_write(Instant::now()));
                return Vec::new();
            }
        };
        let leader_name = leader_lease_name(&self.group);
        let leader_lease = leases
            .iter()
            .find(|l| l.metadata.name.as_deref() == Some(leader_name.as_str()));
        let leader = leader_lease.map(parse_leader);
        let acquired = leader_lease
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.acquire_time.clone());
        let observers: Vec<ObserverLease> = leases
            .iter()
            .filter(|l| {
                l.metadata
                    .labels
                    .as_ref()
                    .and_then(|m| m.get(ROLE_LABEL))
                    .is_some_and(|r| r == "observer")
            })
            .map(parse_observer)
            .collect();
        let plan = {
            let mut st = self.lock();
            let own = observers.iter().find(|l| l.name == self.own_lease);
            st.own_exists = own.is_some();
            if observer::clashes(own, instance_id(), st.own_rv.as_deref()) && !st.clash {
                error!(
                    group = %self.group,
                    identity = %self.identity,
                    lease = %self.own_lease,
                    "another process publishes under this daemon.identity: this instance \
                     stops leading and writing until the clash ends"
                );
                st.clash = true;
                self.metrics.identity_clash(&self.group, true);
            }
            // The clash ends when nobody renews this identity's Lease for a ttl.
            let ttl = self.ttl.as_secs_f64();
            if st.clash && own.is_none_or(|l| l.renewed_unix.is_none_or(|t| wall - t > ttl)) {
                info!(group = %self.group, identity = %self.identity, "identity clash over");
                st.clash = false;
                self.metrics.identity_clash(&self.group, false);
            }
            if let Some(own) = own {
                st.own_rv = Some(own.resource_version.clone());
            }
            st.reports = st.observers.reports(now, wall, &observers, &self.own_lease);
            // Live instances: this one and the fresh observers of this group.
            let others: Vec<(&ObserverLease, &ObserverReport)> = observers
                .iter()
                .filter(|l| l.name != self.own_lease)
                .zip(&st.reports)
                .filter(|(_, r)| r.age.is_some_and(|a| a <= self.ttl))
                .collect();
            let live = 1 + others.len();
            let mut spread = self.spread();
            let share = spread.fair_share(live);
            let room_elsewhere = others
                .iter()
                .any(|(l, _)| l.leading.is_some_and(|n| n < share));
            if st.clash {
                st.election.step_down();
                spread.set(&self.group, false);
                None
            } else {
                let take = spread.take(&self.group, now, live);
                let mut plan = st.election.plan(now, leader.as_ref(), take);
                if plan == Plan::Follow {
                    st.renew_failing = false;
                }
                match &plan {
                    Plan::Replace {
                        resource_version,
                        acquire: false,
                        ..
                    } if spread.shed(&self.group, now, live, st.quiet, room_elsewhere) => {
                        // Above its share: stop writing now, then hand the group over.
                        st.election.step_down();
                        info!(
                            group = %self.group,
                            leading = spread.leading(),
                            share,
                            "leading more than the fair share: releasing this group's \
                             leader Lease"
                        );
                        plan = Plan::Release {
                            resource_version: resource_version.clone(),
                        };
                    }
                    Plan::Create | Plan::Replace { acquire: true, .. } => {
                        spread.set(&self.group, true)
                    }
                    _ => {}
                }
                Some(plan)
            }
        };
        if let Some(Plan::Release { resource_version }) = &plan {
            if let Err(e) = self.write_release(resource_version.clone()).await {
                warn!(group = %self.group, error = %e, "leader Lease not released (it expires)");
            }
        } else if let Some(plan) = plan
            && plan != Plan::Follow
        {
            let sent_at = Instant::now();
            let result = self.write_leader(&plan, acquired).await;
            let mut st = self.lock();
            let was = st.election.term(sent_at).is_some();
            match &result {
                Ok(rv) => {
                    st.leader_rv = rv.clone();
                    st.election.written(sent_at, WriteResult::Ok);
                    if !was {
                        info!(group = %self.group, identity = %self.identity, "leading this group");
                    }
                    if std::mem::take(&mut st.renew_failing) {
                        info!(group = %self.group, "leader Lease written again");
                    }
                }
                Err(e) if conflict(e) => st.election.written(sent_at, WriteResult::Conflict),
                Err(e) => {
                    st.election.written(sent_at, WriteResult::Failed);
                    drop(st);
                    self.renew_failed(&e.to_string());
                }
            }
        }
        self.check_deadline(Instant::now());
        let st = self.lock();
        self.spread()
            .set(&self.group, st.election.may_write(Instant::now()));
        self.metrics
            .set_observers(&self.group, &self.fresh_verdicts(&st));
        st.reports.clone()
    }

    fn fresh_verdicts(&self, st: &State) -> Vec<Verdict> {
        std::iter::once(st.own.0)
            .chain(
                st.reports
                    .iter()
                    .filter(|r| r.age.is_some_and(|a| a <= self.ttl))
                    .map(|r| r.verdict),
            )
            .collect()
    }

    /// A write of the leader Lease failed (not a lost race): said once per episode.
    fn renew_failed(&self, why: &str) {
        let mut st = self.lock();
        if std::mem::replace(&mut st.renew_failing, true) {
            return;
        }
        if st.election.term(Instant::now()).is_some() {
            warn!(
                group = %self.group,
                error = %why,
                deadline = %humantime::format_duration(self.timing.renew_deadline),
                "cannot renew the leader Lease: writing stops at the renew deadline"
            );
        } else {
            warn!(
                group = %self.group,
                error = %why,
                "cannot write the leader Lease: this instance cannot lead (it writes nothing)"
            );
        }
    }

    /// A term whose deadline passed: stop writing and say so.
    fn check_deadline(&self, now: Instant) {
        let mut st = self.lock();
        if st.election.term(now) == Some(false) {
            st.election.step_down();
            warn!(
                group = %self.group,
                identity = %self.identity,
                "leader Lease not renewed within the renew deadline: stopped writing"
            );
        }
        let leading = st.election.may_write(now);
        self.metrics.set_leader(&self.group, leading);
    }

    async fn write_leader(
        &self,
        plan: &Plan,
        acquired: Option<MicroTime>,
    ) -> Result<Option<String>, CallError> {
        let name = leader_lease_name(&self.group);
        let now = micro_now();
        let (rv, acquire, transitions) = match plan {
            Plan::Follow | Plan::Release { .. } => return Ok(None),
            Plan::Create => (None, true, 0),
            Plan::Replace {
                resource_version,
                acquire,
                transitions,
            } => (Some(resource_version.clone()), *acquire, *transitions),
        };
        // A renewal keeps the acquire time of the running term.
        let current = if acquire { None } else { acquired };
        let lease = Lease {
            metadata: self.meta(&name, "leader", rv.clone(), BTreeMap::new()),
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(seconds_i32(self.timing.lease_duration)),
                acquire_time: current.or_else(|| Some(now.clone())),
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        };
        self.store(&name, lease, rv.is_none()).await
    }

    fn meta(
        &self,
        name: &str,
        role: &str,
        rv: Option<String>,
        mut annotations: BTreeMap<String, String>,
    ) -> ObjectMeta {
        annotations.insert(INSTANCE_ANNOTATION.into(), instance_id().to_string());
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.clone()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_string(),
                    APP_LABEL_VALUE.to_string(),
                ),
                (GROUP_LABEL.to_string(), self.group.clone()),
                (ROLE_LABEL.to_string(), role.to_string()),
            ])),
            annotations: Some(annotations),
            resource_version: rv,
            ..ObjectMeta::default()
        }
    }

    /// Writes the leader Lease with no holder, at `resource_version` (so that a Lease
    /// someone else took meanwhile is left alone). The transition count stays: the
    /// next holder counts its term.
    async fn write_release(&self, resource_version: String) -> Result<(), CallError> {
        let name = leader_lease_name(&self.group);
        let transitions = {
            let st = self.lock();
            st.election.transitions()
        };
        let lease = Lease {
            metadata: self.meta(&name, "leader", Some(resource_version), BTreeMap::new()),
            spec: Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(seconds_i32(self.timing.lease_duration)),
                acquire_time: None,
                renew_time: Some(micro_now()),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        };
        self.store(&name, lease, false).await?;
        self.lock().leader_rv = None;
        Ok(())
    }

    /// On shutdown: stops writing, releases the leader Lease if this instance holds it
    /// (so that another instance takes the group at once instead of after a lease
    /// duration) and withdraws this instance's verdict (its observer Lease loses its
    /// renew time, so it no longer counts as fresh).
    pub async fn release(&self) {
        let (held, own_rv) = {
            let mut st = self.lock();
            let held = st.election.term(Instant::now()).is_some();
            st.election.step_down();
            self.metrics.set_leader(&self.group, false);
            let held = if held { st.leader_rv.clone() } else { None };
            (
                held,
                st.own_rv.clone().filter(|_| st.own_exists && !st.clash),
            )
        };
        self.spread().set(&self.group, false);
        if let Some(rv) = held {
            match self.write_release(rv).await {
                Ok(()) => info!(group = %self.group, "leader Lease released"),
                Err(e) => {
                    warn!(group = %self.group, error = %e, "leader Lease not released (it expires)")
                }
            }
        }
        if let Some(rv) = own_rv {
            let mut lease = self.observer_lease(Some(rv), BTreeMap::new());
            if let Some(spec) = lease.spec.as_mut() {
                spec.renew_time = None;
            }
            if let Err(e) = self.store(&self.own_lease, lease, false).await {
                tracing::debug!(group = %self.group, error = %e, "observer Lease not withdrawn");
            }
        }
    }

    fn observer_lease(&self, rv: Option<String>, annotations: BTreeMap<String, String>) -> Lease {
        Lease {
            metadata: self.meta(&self.own_lease, "observer", rv, annotations),
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(seconds_i32(self.ttl)),
                renew_time: Some(micro_now()),
                ..LeaseSpec::default()
            }),
        }
    }

    /// Creates or replaces a Lease; returns the stored resourceVersion.
    async fn store(
        &self,
        name: &str,
        lease: Lease,
        create: bool,
    ) -> Result<Option<String>, CallError> {
        let params = PostParams {
            field_manager: Some(APP_LABEL_VALUE.to_string()),
            ..PostParams::default()
        };
        let stored = if create {
            bounded(self.timeout, self.api.create(&params, &lease)).await?
        } else {
            bounded(self.timeout, self.api.replace(name, &params, &lease)).await?
        };
        Ok(stored.metadata.resource_version)
    }

    /// After the decision: publishes this instance's verdict in its observer Lease.
    pub async fn publish(&self, decision: &Decision, wall: f64) {
        let verdict = decision.verdict;
        let down_signals: Vec<String> = decision
            .signals
            .iter()
            .filter(|s| !s.up)
            .map(|s| s.id.to_string())
            .collect();
        let (rv, exists, clash, since) = {
            let mut st = self.lock();
            let since = st.observers.own_verdict(verdict, wall);
            st.own = (verdict, since, down_signals.clone());
            st.quiet = matches!(
                decision.state,
                GroupState::PrimaryActive | GroupState::Promoted
            );
            (st.own_rv.clone(), st.own_exists, st.clash, since)
        };
        let leading = self.spread().leading();
        if clash {
            return;
        }
        let mut annotations = BTreeMap::from([
            (VERDICT_ANNOTATION.to_string(), verdict.as_str().to_string()),
            (DOWN_SIGNALS_ANNOTATION.to_string(), down_signals.join(",")),
            (LEADING_ANNOTATION.to_string(), leading.to_string()),
        ]);
        if let Some(since) = since {
            annotations.insert(DOWN_SINCE_ANNOTATION.to_string(), format!("{since:.3}"));
        }
        let rv = rv.filter(|_| exists);
        let create = rv.is_none();
        let lease = self.observer_lease(rv, annotations);
        let result = self.store(&self.own_lease, lease, create).await;
        let mut st = self.lock();
        match result {
            Ok(stored) => {
                st.own_rv = stored;
                st.own_exists = true;
            }
            Err(e) => {
                // Retried next tick with what is read then; the verdict ages meanwhile.
                if conflict(&e) {
                    st.own_exists = !create;
                }
                tracing::debug!(group = %self.group, error = %e, "observer Lease not written");
            }
        }
    }

    /// This instance may write now (holds the leader Lease within its deadline).
    pub fn may_write(&self, now: Instant) -> bool {
        let st = self.lock();
        !st.clash && st.election.may_write(now)
    }

    /// This instance's role now.
    pub fn role(&self, now: Instant) -> Role {
        let st = self.lock();
        if st.clash {
            Role::IdentityClash
        } else if st.election.may_write(now) {
            Role::Leader
        } else {
            Role::Follower
        }
    }

    /// The `/status` part.
    pub fn status(&self, now: Instant) -> CoordStatus {
        let role = self.role(now);
        let st = self.lock();
        let own = ObserverStatus {
            identity: self.identity.clone(),
            verdict: Named::Known(st.own.0),
            age_seconds: Some(0.0),
            fresh: true,
            this_instance: true,
            down_signals: st.own.2.clone(),
            down_since_unix: st.own.1,
        };
        let others = st.reports.iter().map(|r| ObserverStatus {
            identity: r.identity.clone(),
            verdict: Named::Known(r.verdict),
            age_seconds: r.age.map(|a| a.as_secs_f64()),
            fresh: r.age.is_some_and(|a| a <= self.ttl),
            this_instance: false,
            down_signals: r.down_signals.clone(),
            down_since_unix: r.down_since_unix,
        });
        CoordStatus {
            leader: if role == Role::Leader {
                Some(self.identity.clone())
            } else {
                st.election.holder().map(str::to_string)
            },
            role: role.as_str().to_string(),
            quorum: self.quorum,
            expected: self.expected,
            observers: std::iter::once(own).chain(others).collect(),
        }
    }
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn annotation<'a>(lease: &'a Lease, key: &str) -> Option<&'a String> {
    lease.metadata.annotations.as_ref().and_then(|a| a.get(key))
}

fn parse_leader(lease: &Lease) -> LeaseView {
    let spec = lease.spec.as_ref();
    LeaseView {
        resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
        holder: spec
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty()),
        instance: annotation(lease, INSTANCE_ANNOTATION).cloned(),
        transitions: spec.and_then(|s| s.lease_transitions).unwrap_or(0),
    }
}

fn parse_observer(lease: &Lease) -> ObserverLease {
    let spec = lease.spec.as_ref();
    ObserverLease {
        name: lease.metadata.name.clone().unwrap_or_default(),
        resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
        identity: spec
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default(),
        instance: annotation(lease, INSTANCE_ANNOTATION).cloned(),
        verdict: annotation(lease, VERDICT_ANNOTATION)
            .map_or(Verdict::Unknown, |v| Verdict::parse(v)),
        down_signals: annotation(lease, DOWN_SIGNALS_ANNOTATION)
            .map(|s| {
                s.split(',')
                    .filter(|p| !p.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        down_since_unix: annotation(lease, DOWN_SINCE_ANNOTATION).and_then(|s| s.parse().ok()),
        leading: annotation(lease, LEADING_ANNOTATION).and_then(|s| s.parse().ok()),
        renewed_unix: spec
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.as_millisecond() as f64 / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_and_default_timing() {
        assert_eq!(leader_lease_name("env0"), "kube-failover-env0-leader");
        assert_eq!(
            observer_lease_name("env0", "Host_1"),
            "kube-failover-env0-observer-host-1"
        );
        assert!(observer_lease_name("g", &"a".repeat(400)).len() <= 253);
        let mut d = DaemonConfig::default();
        let t = leader_timing(&d);
        assert_eq!(t.lease_duration, Duration::from_secs(15));
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        d.probe_interval = Duration::from_millis(500);
        let t = leader_timing(&d);
        assert_eq!(t.lease_duration, Duration::from_secs(3));
        assert_eq!(t.renew_deadline, Duration::from_secs(2));
        assert_eq!(seconds_i32(Duration::from_millis(2500)), 3);
    }

    #[test]
    fn observer_leases_parse_their_annotations() {
        let mut lease = Lease {
            metadata: ObjectMeta {
                name: Some("kube-failover-env0-observer-b".into()),
                resource_version: Some("9".into()),
                annotations: Some(BTreeMap::from([
                    (VERDICT_ANNOTATION.into(), "down".into()),
                    (DOWN_SIGNALS_ANNOTATION.into(), "api,workload:x".into()),
                    (DOWN_SINCE_ANNOTATION.into(), "1700000000.5".into()),
                    (INSTANCE_ANNOTATION.into(), "abc".into()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("b".into()),
                renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                ..LeaseSpec::default()
            }),
        };
        let o = parse_observer(&lease);
        assert_eq!(o.identity, "b");
        assert_eq!(o.verdict, Verdict::Down);
        assert_eq!(o.down_signals, vec!["api", "workload:x"]);
        assert_eq!(o.down_since_unix, Some(1_700_000_000.5));
        assert_eq!(o.renewed_unix, Some(0.0));
        assert_eq!(o.instance.as_deref(), Some("abc"));
        lease.metadata.annotations = None;
        assert_eq!(parse_observer(&lease).verdict, Verdict::Unknown);
    }
}

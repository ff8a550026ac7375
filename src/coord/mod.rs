//! Several daemon instances on the same groups, coordinated on Leases in one namespace
//! of each standby cluster (`coordination.namespace`, by default the groups' standby
//! namespace), so no other coordination service is needed:
//!
//! - one leader per group, on the Lease `kube-failover-<group>-leader`: only the leader
//!   carries out the engine's actions (record, scaling, Events);
//! - every instance publishes its verdict on the primary for each group in its
//!   observer Lease, one per standby cluster, `kube-failover.observer.<identity>`
//!   ([`presence`]); the leader promotes only when `policy.observers.quorum` fresh
//!   observers say `down` (decided by the engine). That Lease is also the heartbeat of
//!   the leader Leases the instance holds there, so one renewal keeps all of them, and
//!   the writes of an instance to a standby cluster do not grow with its groups or their
//!   namespaces;
//! - leadership spreads over the instances: each takes about its fair share of the
//!   groups (see `spread`);
//! - on shutdown a leader releases its Leases, so another instance takes over at once.
//!
//! The Leases are read from one watch of the coordination namespace's Leases, shared by
//! every group of the cluster ([`crate::watch_cache`]): a tick reads memory. A cache whose watch is not
//! established makes the view unknown in the safe direction: no other observer counts,
//! and no Lease is taken over (the clock of a take-over starts again from the next
//! view); the leader keeps its term only while its own renewals succeed. Leases are
//! written with plain create/replace against a resourceVersion (verbs get, list, watch,
//! create, update); the cache is never trusted for a take-over without a fresh read of
//! the holder's heartbeat, nor after a 409 without a fresh read of the Lease. Writes of
//! the leader Lease shed under load rather than pile up: a few in flight per cluster at
//! most, and none for a while after one failed for another reason than a lost race
//! ([`presence::Presence::leader_write_permit`]).

#[cfg(test)]
mod fake_api;
pub mod leader;
mod metrics;
pub mod observer;
pub mod presence;
pub mod spread;

pub use metrics::{CoordMetrics, RoleNow, Roles};

use crate::config::{Config, DaemonConfig, GroupConfig};
use crate::engine::{Decision, GroupState};
use crate::kube_call::{CallError, bounded};
use crate::model::{ObserverReport, Verdict};
use crate::record::{APP_LABEL_VALUE, GROUP_LABEL};
use crate::status::{CoordStatus, Named, ObserverStatus};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use leader::{Election, LeaderTiming, LeaseView, Plan, WriteResult};
use observer::{GroupVerdict, ObserverLease, Observers};
use presence::{Member, Presence};
use spread::Spread;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Label telling a leader Lease from an observer Lease.
pub const ROLE_LABEL: &str = "kube-failover/role";
/// Annotation: the per-process instance id of the writer.
pub const INSTANCE_ANNOTATION: &str = "kube-failover/instance";
/// Annotation of an observer Lease: each group's verdict, a JSON object by group name
/// ([`observer::GroupVerdict`]).
pub const VERDICTS_ANNOTATION: &str = "kube-failover/verdicts";
/// Annotation of a leader Lease: the name of its holder's observer Lease, whose
/// renewals are the holder's sign of life.
pub const HEARTBEAT_ANNOTATION: &str = "kube-failover/heartbeat";
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

/// Starting refused: another live process publishes under this identity.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "daemon.identity {identity:?} is already in use: another kube-failover process renews the \
     Lease {namespace}/{lease} (group {group}); give every instance its own daemon.identity"
)]
pub struct IdentityClash {
    /// The clashing identity.
    pub identity: String,
    /// The (first) group of the standby cluster that showed it.
    pub group: String,
    /// The coordination namespace.
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
    clash: bool,
    /// The renewal is failing (reported once per episode).
    renew_failing: bool,
    /// The Lease cache was not current at the last sync (said once per episode).
    unseen: bool,
    /// This instance's last verdict and since when it says down.
    own: (Verdict, Option<f64>, Vec<String>),
    /// No failover under way at the last decision (a group that may be handed over).
    quiet: bool,
    /// The leader Lease's resourceVersion after this instance's last write of it.
    leader_rv: Option<String>,
    /// Since when this instance has seen no live leader of the group (itself included).
    leaderless_since: Option<Instant>,
    /// When the last sync started: a heartbeat extends the term only while the group's
    /// loop keeps ticking.
    last_sync: Option<Instant>,
    renew_deadline: Duration,
    /// The leader Lease as this instance last learnt it from the API, not yet from the
    /// cache: the resourceVersion the cache showed then (`""`: missing) and the Lease
    /// (as stored by this instance's own write, or read fresh after a 409). It stands in
    /// for the cache while the cache still shows that resourceVersion.
    stand_in: Option<(String, Option<Lease>)>,
}

impl State {
    /// The role at `now`, from the term as it stands: a term whose renew deadline passed
    /// is over at that instant, whether or not a tick has seen it yet.
    fn role_at(&self, now: Instant) -> Role {
        if self.clash {
            Role::IdentityClash
        } else if self.election.may_write(now) {
            Role::Leader
        } else {
            Role::Follower
        }
    }

    /// [`Self::role_at`] and the leader as this instance knows it.
    fn role_now(&self, now: Instant) -> RoleNow {
        let role = self.role_at(now);
        RoleNow {
            role,
            leader: if role == Role::Leader {
                Some(self.election.identity().to_string())
            } else {
                self.election.holder().map(str::to_string)
            },
        }
    }
}

impl Member for Mutex<State> {
    fn renewed(&self, sent_at: Instant, answered_at: Instant) {
        let mut st = self.lock().unwrap_or_else(|p| p.into_inner());
        let ticking = st
            .last_sync
            .is_some_and(|t| answered_at.saturating_duration_since(t) < st.renew_deadline);
        if ticking {
            st.election.renewed(sent_at, answered_at);
        }
    }
}

/// One group's coordination in this instance.
pub struct GroupCoord {
    group: String,
    api: Api<Lease>,
    identity: String,
    timeout: Duration,
    timing: LeaderTiming,
    ttl: Duration,
    quorum: u32,
    expected: Option<u32>,
    metrics: CoordMetrics,
    state: Arc<Mutex<State>>,
    spread: Arc<Mutex<Spread>>,
    presence: Arc<Presence>,
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

/// A write of the leader Lease held by this instance: a create (no resourceVersion) or a
/// replace.
struct LeaderWrite {
    resource_version: Option<String>,
    acquire: bool,
    transitions: i32,
}

impl LeaderWrite {
    /// The write `plan` asks for, if any (a release is written apart).
    fn of(plan: &Plan) -> Option<LeaderWrite> {
        match plan {
            Plan::Create => Some(LeaderWrite {
                resource_version: None,
                acquire: true,
                transitions: 0,
            }),
            Plan::Replace {
                resource_version,
                acquire,
                transitions,
            } => Some(LeaderWrite {
                resource_version: Some(resource_version.clone()),
                acquire: *acquire,
                transitions: *transitions,
            }),
            Plan::Follow | Plan::Keep | Plan::Release { .. } => None,
        }
    }
}

/// What one sync reads of the group's Leases.
struct View {
    leader: Option<LeaseView>,
    /// The leader Lease's acquire time (kept by a renewal).
    acquired: Option<MicroTime>,
    /// The holder's heartbeat Lease and process, for the fresh read before a take-over.
    heartbeat: Option<(String, Option<String>)>,
    observers: Vec<ObserverLease>,
}

impl GroupCoord {
    /// The coordination of `group` in its standby cluster: Leases read from the cache of
    /// the coordination namespace's Leases and written through `client` (the group's).
    pub fn new(
        group: &GroupConfig,
        config: &Config,
        standby: &crate::clusters::ClusterHandle,
        client: kube::Client,
        identity: String,
        metrics: CoordMetrics,
    ) -> Self {
        let namespace = config.coordination_namespace(group);
        // Only this daemon's Leases (every one carries the label): others in the
        // namespace are neither listed nor held.
        let store = standby.leases(
            namespace,
            &format!("app.kubernetes.io/name={APP_LABEL_VALUE}"),
        );
        let presence = Presence::shared(
            standby.client().clone(),
            &store,
            namespace,
            &identity,
            config.daemon.probe_timeout,
            leader_timing(&config.daemon),
        );
        presence.prove_writes_to(standby.write_proof());
        let ttl = group
            .policy
            .observers
            .ttl_or_default(config.daemon.probe_interval);
        GroupCoord::with_parts(
            group,
            config,
            client,
            presence,
            shared_spread(config, ttl),
            identity,
            metrics,
        )
    }

    fn with_parts(
        group: &GroupConfig,
        config: &Config,
        client: kube::Client,
        presence: Arc<Presence>,
        spread: Arc<Mutex<Spread>>,
        identity: String,
        metrics: CoordMetrics,
    ) -> Self {
        let timing = leader_timing(&config.daemon);
        let observers = &group.policy.observers;
        metrics.init_group(&group.name, observers.expected);
        let ttl = observers.ttl_or_default(config.daemon.probe_interval);
        let state = Arc::new(Mutex::new(State {
            election: Election::new(identity.clone(), instance_id().to_string(), timing),
            observers: Observers::default(),
            reports: Vec::new(),
            clash: false,
            renew_failing: false,
            unseen: false,
            own: (Verdict::Unknown, None, Vec::new()),
            quiet: false,
            leader_rv: None,
            leaderless_since: Some(Instant::now()),
            last_sync: None,
            renew_deadline: timing.renew_deadline,
            stand_in: None,
        }));
        metrics.roles.join(&group.name, &state);
        let member: Arc<dyn Member> = state.clone();
        presence.join(&group.name, ttl, Arc::downgrade(&member));
        GroupCoord {
            spread,
            api: Api::namespaced(client, config.coordination_namespace(group)),
            state,
            presence,
            group: group.name.clone(),
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
    /// Lease (see [`Presence::check_identity`]).
    pub async fn check_identity(&self, poll: Duration) -> Result<(), IdentityClash> {
        self.presence.check_identity(poll, &self.group).await
    }

    /// The group's Leases as the cache holds them (`leases`, by name).
    fn read_view(&self, leases: &BTreeMap<String, Arc<Lease>>) -> View {
        let leader_name = leader_lease_name(&self.group);
        let mut leader_lease = leases.get(&leader_name).map(|l| (**l).clone());
        {
            // A cache that has not caught up with this instance's own write, or with a
            // fresh read after a 409, is not trusted.
            let mut st = self.lock();
            if let Some((stale_rv, fresh)) = st.stand_in.take() {
                let cached_rv = leader_lease
                    .as_ref()
                    .and_then(|l| l.metadata.resource_version.clone())
                    .unwrap_or_default();
                if cached_rv == stale_rv {
                    leader_lease = fresh.clone();
                    st.stand_in = Some((stale_rv, fresh));
                }
            }
        }
        let heartbeat = leader_lease.as_ref().and_then(|l| {
            let name = annotation(l, HEARTBEAT_ANNOTATION)?.clone();
            Some((name, annotation(l, INSTANCE_ANNOTATION).cloned()))
        });
        let leader = leader_lease.as_ref().map(|l| {
            let mut view = parse_leader(l);
            view.heartbeat = heartbeat.as_ref().and_then(|(name, instance)| {
                heartbeat_rv(leases.get(name).map(|l| &**l), instance.as_deref())
            });
            view
        });
        let acquired = leader_lease
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.acquire_time.clone());
        // The observer Leases that carry a verdict on this group.
        let observers: Vec<ObserverLease> = leases
            .range(presence::OBSERVER_PREFIX.to_string()..)
            .take_while(|(name, _)| presence::is_observer_lease(name))
            .filter_map(|(_, l)| {
                let verdicts = self.presence.verdicts_of(l);
                let v = verdicts.get(&self.group)?;
                Some(parse_observer(l, v))
            })
            .collect();
        View {
            leader,
            acquired,
            heartbeat,
            observers,
        }
    }

    /// Once per tick, before the decision: reads the group's Leases from the cache,
    /// takes or releases the leader Lease when a term starts or ends, and returns the
    /// other observers' verdicts for the observation.
    pub async fn sync(&self, now: Instant, wall: f64) -> Vec<ObserverReport> {
        self.presence.start();
        self.lock().last_sync = Some(now);
        self.follow_clash();
        let read = self.presence.store().read(|leases| self.read_view(leases));
        let view = match read {
            Ok(view) => {
                if std::mem::take(&mut self.lock().unseen) {
                    debug!(group = %self.group, "Leases seen current again");
                }
                view
            }
            Err((_, why)) => {
                self.unseen(&why);
                return Vec::new();
            }
        };
        let plan = self.plan(now, wall, &view);
        let plan = match plan {
            // A take-over of a held Lease: only on a fresh read of the holder's
            // heartbeat, never on the cache alone.
            Some(Plan::Replace { acquire: true, .. })
                if view.leader.as_ref().is_some_and(|l| l.holder.is_some()) =>
            {
                if self.confirm_silent(now, &view).await {
                    plan
                } else {
                    None
                }
            }
            other => other,
        };
        if let Some(Plan::Release { resource_version }) = &plan {
            if let Err(e) = self.write_release(resource_version.clone()).await {
                warn!(group = %self.group, error = %e, "leader Lease not released (it expires)");
            }
        } else if let Some(plan) = plan {
            self.write_plan(&plan, view.acquired.clone()).await;
        }
        self.check_deadline(Instant::now());
        let st = self.lock();
        self.spread()
            .set(&self.group, st.election.may_write(Instant::now()));
        self.metrics
            .set_observers(&self.group, &self.fresh_verdicts(&st));
        st.reports.clone()
    }

    /// Writes the leader Lease as `plan` says (a create or a replace; nothing for the
    /// others) and tells the election how it went.
    async fn write_plan(&self, plan: &Plan, acquired: Option<MicroTime>) {
        let Some(write) = LeaderWrite::of(plan) else {
            return;
        };
        let sent_at = Instant::now();
        // Shed, not piled: the group tries again at a later tick.
        let Some(_permit) = self.presence.leader_write_permit(sent_at) else {
            debug!(group = %self.group, "leader Lease not written now: this cluster's leader Lease writes are at their bound or paused after a failure");
            return;
        };
        let result = self.write_leader(write, acquired).await;
        self.presence
            .leader_written(Instant::now(), result.as_ref().is_err_and(|e| !conflict(e)));
        if let Err(e) = &result
            && conflict(e)
        {
            self.read_after_conflict(plan).await;
        }
        let mut st = self.lock();
        let was = st.election.term(sent_at).is_some();
        match &result {
            Ok(stored) => {
                st.leader_rv = stored.metadata.resource_version.clone();
                st.stand_in = Some((precondition(plan), Some(stored.clone())));
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

    /// Mirrors the observer Lease's identity clash into this group.
    fn follow_clash(&self) {
        let clash = self.presence.clash();
        let mut st = self.lock();
        if st.clash != clash {
            st.clash = clash;
            self.metrics.identity_clash(&self.group, clash);
            if clash {
                st.election.step_down();
                self.spread().set(&self.group, false);
            }
        }
    }

    /// The Lease cache is not current: nobody else's verdict counts, nothing is taken
    /// over (the take-over clock starts again from the next view), and a term runs on
    /// only with this instance's own renewals.
    fn unseen(&self, why: &str) {
        {
            let mut st = self.lock();
            st.reports.clear();
            st.election.unseen();
            if !std::mem::replace(&mut st.unseen, true) {
                debug!(group = %self.group, why, "Leases not seen current: no take-over, no other observer counts");
            }
        }
        self.check_deadline(Instant::now());
        let st = self.lock();
        self.spread()
            .set(&self.group, st.election.may_write(Instant::now()));
        self.metrics
            .set_observers(&self.group, &self.fresh_verdicts(&st));
    }

    /// The election's plan for this tick, from `view`; `None` during a clash.
    fn plan(&self, now: Instant, wall: f64, view: &View) -> Option<Plan> {
        let mut st = self.lock();
        let pairs = st
            .observers
            .reports(now, wall, &view.observers, self.presence.name());
        // Live instances: this one and the fresh observers of this group.
        let fresh: Vec<(&ObserverLease, &ObserverReport)> = pairs
            .iter()
            .filter(|(_, r)| r.age.is_some_and(|a| a <= self.ttl))
            .map(|(l, r)| (*l, r))
            .collect();
        let live = 1 + fresh.len();
        let mut spread = self.spread();
        let share = spread.fair_share(live);
        let room_elsewhere = fresh
            .iter()
            .any(|(l, _)| l.leading.is_some_and(|n| n < share));
        let reports: Vec<ObserverReport> = pairs.into_iter().map(|(_, r)| r).collect();
        st.reports = reports;
        if st.clash {
            st.election.step_down();
            spread.set(&self.group, false);
            return None;
        }
        let expected = self.expected.and_then(|e| usize::try_from(e).ok());
        let take = spread.take(&self.group, now, live, expected);
        let mut plan = st.election.plan(now, view.leader.as_ref(), take);
        if plan == Plan::Follow {
            st.renew_failing = false;
        }
        match &plan {
            Plan::Keep if spread.shed(&self.group, now, live, st.quiet, room_elsewhere) => {
                // Above its share: stop writing now, then hand the group over.
                st.election.step_down();
                info!(
                    group = %self.group,
                    leading = spread.leading(),
                    share,
                    "leading more than the fair share: releasing this group's leader Lease"
                );
                plan = Plan::Release {
                    resource_version: view
                        .leader
                        .as_ref()
                        .map(|l| l.resource_version.clone())
                        .unwrap_or_default(),
                };
            }
            Plan::Create | Plan::Replace { acquire: true, .. } => spread.set(&self.group, true),
            _ => {}
        }
        Some(plan)
    }

    /// Before taking over a held Lease: reads the holder's heartbeat from the API. True
    /// when it is what the cache showed (the holder is silent); otherwise the election
    /// sees the fresh value, which starts its clock again.
    async fn confirm_silent(&self, now: Instant, view: &View) -> bool {
        let Some(leader) = &view.leader else {
            return true;
        };
        let fresh = match &view.heartbeat {
            None => None,
            Some((name, instance)) => match bounded(self.timeout, self.api.get_opt(name)).await {
                Ok(l) => heartbeat_rv(l.as_ref(), instance.as_deref()),
                Err(e) => {
                    debug!(group = %self.group, error = %e, "heartbeat not read: no take-over");
                    return false;
                }
            },
        };
        if fresh == leader.heartbeat {
            return true;
        }
        let seen = LeaseView {
            heartbeat: fresh,
            ..leader.clone()
        };
        let mut st = self.lock();
        // The holder is alive: follow, and the clock starts again.
        let _ = st.election.plan(now, Some(&seen), leader::Take::Hold);
        self.spread().set(&self.group, false);
        false
    }

    /// A write of the leader Lease failed with 409 (or 404): reads it fresh, so that a
    /// cache that has not caught up is not written against again.
    async fn read_after_conflict(&self, plan: &Plan) {
        if let Ok(fresh) = bounded(
            self.timeout,
            self.api.get_opt(&leader_lease_name(&self.group)),
        )
        .await
        {
            self.lock().stand_in = Some((precondition(plan), fresh));
        }
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
        end_lapsed_term(&mut st, &self.group, &self.identity, now);
        if st.election.led(now) {
            st.leaderless_since = None;
        } else {
            st.leaderless_since.get_or_insert(now);
        }
    }

    /// Whether a peer's verdict on this group turned `down` since the last sync while
    /// this instance says `down` itself, so that the observer quorum may be met now.
    /// Reads the Lease cache (memory only); false while it is not current.
    pub fn peer_down_news(&self) -> bool {
        let known: Vec<String> = {
            let st = self.lock();
            if st.own.0 != Verdict::Down || st.clash {
                return false;
            }
            st.reports
                .iter()
                .filter(|r| r.verdict == Verdict::Down && r.age.is_some_and(|a| a <= self.ttl))
                .map(|r| r.identity.clone())
                .collect()
        };
        let wall = now_unix();
        let ttl = self.ttl.as_secs_f64();
        let own = self.presence.name();
        self.presence
            .store()
            .read(|leases| {
                leases
                    .range(presence::OBSERVER_PREFIX.to_string()..)
                    .take_while(|(name, _)| presence::is_observer_lease(name))
                    .filter(|(name, _)| name.as_str() != own)
                    .any(|(_, l)| {
                        let verdicts = self.presence.verdicts_of(l);
                        let Some(v) = verdicts.get(&self.group) else {
                            return false;
                        };
                        let o = parse_observer(l, v);
                        o.verdict == Verdict::Down
                            && o.renewed_unix.is_some_and(|t| wall - t <= ttl)
                            && !known.contains(&o.identity)
                    })
            })
            .unwrap_or(false)
    }

    /// Changes of the coordination namespace's Leases (every instance's renewals):
    /// followed by the group's loop for [`GroupCoord::peer_down_news`].
    pub fn lease_wakes(&self) -> tokio::sync::watch::Receiver<crate::watch_cache::Wakes> {
        self.presence.store().wakes()
    }

    /// Writes the leader Lease, held by this instance; returns it as stored.
    async fn write_leader(
        &self,
        write: LeaderWrite,
        acquired: Option<MicroTime>,
    ) -> Result<Lease, CallError> {
        let name = leader_lease_name(&self.group);
        let now = micro_now();
        let LeaderWrite {
            resource_version: rv,
            acquire,
            transitions,
        } = write;
        // A renewal keeps the acquire time of the running term.
        let current = if acquire { None } else { acquired };
        let lease = Lease {
            metadata: self.meta(&name, rv.clone()),
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

    /// The leader Lease's metadata: this process and its heartbeat.
    fn meta(&self, name: &str, rv: Option<String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_string(),
                    APP_LABEL_VALUE.to_string(),
                ),
                (GROUP_LABEL.to_string(), self.group.clone()),
                (ROLE_LABEL.to_string(), "leader".to_string()),
            ])),
            annotations: Some(BTreeMap::from([
                (INSTANCE_ANNOTATION.to_string(), instance_id().to_string()),
                (
                    HEARTBEAT_ANNOTATION.to_string(),
                    self.presence.name().to_string(),
                ),
            ])),
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
            metadata: self.meta(&name, Some(resource_version.clone())),
            spec: Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(seconds_i32(self.timing.lease_duration)),
                acquire_time: None,
                renew_time: Some(micro_now()),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        };
        let stored = self.store(&name, lease, false).await?;
        let mut st = self.lock();
        st.leader_rv = None;
        st.stand_in = Some((resource_version, Some(stored)));
        Ok(())
    }

    /// On shutdown: stops writing, releases the leader Lease if this instance holds it
    /// (so that another instance takes the group at once instead of after a lease
    /// duration), and leaves the observer Lease, which the last group to leave withdraws
    /// (it loses its renew time, so its verdicts no longer count as fresh).
    pub async fn release(&self) {
        let held = {
            let mut st = self.lock();
            let held = st.election.term(Instant::now()).is_some();
            st.election.step_down();
            if held { st.leader_rv.clone() } else { None }
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
        self.presence.leave(&self.group).await;
    }

    /// Creates or replaces a Lease; returns it as stored.
    async fn store(&self, name: &str, lease: Lease, create: bool) -> Result<Lease, CallError> {
        let params = PostParams {
            field_manager: Some(APP_LABEL_VALUE.to_string()),
            ..PostParams::default()
        };
        let stored = if create {
            bounded(self.timeout, self.api.create(&params, &lease)).await?
        } else {
            bounded(self.timeout, self.api.replace(name, &params, &lease)).await?
        };
        Ok(stored)
    }

    /// After the decision: publishes this instance's verdict in its observer Lease (at
    /// once when it becomes or stops being `down`, otherwise with the next renewal).
    pub async fn publish(&self, decision: &Decision, wall: f64) {
        let verdict = decision.verdict;
        let down_signals: Vec<String> = decision
            .signals
            .iter()
            .filter(|s| !s.up)
            .map(|s| s.id.to_string())
            .collect();
        let (clash, since) = {
            let mut st = self.lock();
            let since = st.observers.own_verdict(verdict, wall);
            st.own = (verdict, since, down_signals.clone());
            st.quiet = matches!(
                decision.state,
                GroupState::PrimaryActive | GroupState::Promoted
            );
            (st.clash, since)
        };
        if clash {
            return;
        }
        let leading = self.spread().leading();
        self.presence.start();
        self.presence
            .publish(
                &self.group,
                GroupVerdict {
                    verdict: verdict.as_str().to_string(),
                    down_signals,
                    down_since: since,
                },
                leading,
            )
            .await;
    }

    /// This instance may write now (holds the leader Lease within its deadline).
    pub fn may_write(&self, now: Instant) -> bool {
        let st = self.lock();
        !st.clash && st.election.may_write(now)
    }

    /// This instance's role now.
    pub fn role(&self, now: Instant) -> Role {
        self.lock().role_now(now).role
    }

    /// The `/status` part. Its role and leader are as of `now`; the admin server reads
    /// them again when asked (see [`Roles`]).
    pub fn status(&self, now: Instant) -> CoordStatus {
        let st = self.lock();
        let RoleNow { role, leader } = st.role_now(now);
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
            no_leader_seconds: no_leader_for(&st, now, self.timing.lease_duration)
                .map(|d| d.as_secs_f64()),
            leader,
            role: role.as_str().to_string(),
            quorum: self.quorum,
            expected: self.expected,
            observers: std::iter::once(own).chain(others).collect(),
        }
    }
}

/// Ends a term whose renew deadline passed at `now`, and says so.
fn end_lapsed_term(st: &mut State, group: &str, identity: &str, now: Instant) {
    if st.election.term(now) == Some(false) {
        st.election.step_down();
        warn!(
            group = %group,
            identity = %identity,
            "leader Lease not renewed within the renew deadline: stopped writing"
        );
    }
}

/// How long the group has had no live leader in this instance's view, once that is
/// longer than a lease duration (the time a take-over may legitimately need).
fn no_leader_for(st: &State, now: Instant, lease_duration: Duration) -> Option<Duration> {
    st.leaderless_since
        .map(|since| now.saturating_duration_since(since))
        .filter(|d| *d > lease_duration)
}

/// The resourceVersion a plan writes against (`""`: a create).
fn precondition(plan: &Plan) -> String {
    match plan {
        Plan::Replace {
            resource_version, ..
        }
        | Plan::Release { resource_version } => resource_version.clone(),
        _ => String::new(),
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

/// The heartbeat a leader Lease's holder gives in `lease` (its observer Lease): the
/// resourceVersion while the holder's process (`instance`) writes it, else none.
fn heartbeat_rv(lease: Option<&Lease>, instance: Option<&str>) -> Option<String> {
    let lease = lease?;
    if instance.is_some() && annotation(lease, INSTANCE_ANNOTATION).map(String::as_str) == instance
    {
        lease.metadata.resource_version.clone()
    } else {
        None
    }
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
        heartbeat: None,
    }
}

/// An observer Lease as one group sees it, with the group's `verdict` in it.
fn parse_observer(lease: &Lease, verdict: &GroupVerdict) -> ObserverLease {
    let spec = lease.spec.as_ref();
    ObserverLease {
        name: lease.metadata.name.clone().unwrap_or_default(),
        resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
        identity: spec
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default(),
        instance: annotation(lease, INSTANCE_ANNOTATION).cloned(),
        verdict: verdict.verdict(),
        down_signals: verdict.down_signals.clone(),
        down_since_unix: verdict.down_since,
        leading: annotation(lease, LEADING_ANNOTATION).and_then(|s| s.parse().ok()),
        renewed_unix: spec
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.as_millisecond() as f64 / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch_cache::WatchStore;
    use fake_api::FakeLeases;
    use kube_failover_core::engine::GroupState;

    #[test]
    fn lease_names_and_default_timing() {
        assert_eq!(leader_lease_name("env0"), "kube-failover-env0-leader");
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
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some("kube-failover.observer.b".into()),
                resource_version: Some("9".into()),
                annotations: Some(BTreeMap::from([
                    (INSTANCE_ANNOTATION.into(), "abc".into()),
                    (LEADING_ANNOTATION.into(), "4".into()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("b".into()),
                renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                ..LeaseSpec::default()
            }),
        };
        let entry = GroupVerdict {
            verdict: "down".into(),
            down_signals: vec!["api".into(), "workload:x".into()],
            down_since: Some(1_700_000_000.5),
        };
        let o = parse_observer(&lease, &entry);
        assert_eq!(o.identity, "b");
        assert_eq!(o.verdict, Verdict::Down);
        assert_eq!(o.down_signals, vec!["api", "workload:x"]);
        assert_eq!(o.down_since_unix, Some(1_700_000_000.5));
        assert_eq!(o.renewed_unix, Some(0.0));
        assert_eq!(o.instance.as_deref(), Some("abc"));
        assert_eq!(o.leading, Some(4));
        let garbled = GroupVerdict {
            verdict: "sideways".into(),
            down_signals: vec![],
            down_since: None,
        };
        assert_eq!(parse_observer(&lease, &garbled).verdict, Verdict::Unknown);
    }

    // The coordination against an in-memory Lease API (src/coord/fake_api.rs), with a
    // short timing: interval 100 ms, lease duration 600 ms, renew deadline 400 ms,
    // observer ttl 300 ms, so renewals every 100 ms.

    const LEASE: Duration = Duration::from_millis(600);

    fn config(groups: usize) -> Config {
        config_with(groups, "600ms", "400ms", "300ms")
    }

    fn config_with(groups: usize, lease: &str, deadline: &str, ttl: &str) -> Config {
        let mut text = format!(
            "[daemon]\nprobe_interval = \"100ms\"\nprobe_timeout = \"1s\"\n\
             [daemon.leader]\nlease_duration = \"{lease}\"\nrenew_deadline = \"{deadline}\"\n"
        );
        for g in 0..groups {
            text.push_str(&format!(
                "[[groups]]\nname = \"g{g}\"\nprimary = {{ namespace = \"p\" }}\n\
                 standby = {{ namespace = \"ns\" }}\nworkloads = [{{ name = \"w\" }}]\n\
                 policy.observers.ttl = \"{ttl}\"\n"
            ));
        }
        toml::from_str(&text).expect("test config")
    }

    /// One instance: the groups of `config`, its observer Lease, and the Lease cache
    /// the tests fill from the fake (as its watch would).
    struct Instance {
        coords: Vec<GroupCoord>,
        presence: Arc<Presence>,
        store: Arc<WatchStore<Lease>>,
        metrics: CoordMetrics,
        /// Where `kube_failover_leader` is gathered.
        live: prometheus::Registry,
    }

    fn instance(fake: &FakeLeases, config: &Config, identity: &str) -> Instance {
        let store = WatchStore::<Lease>::new("Leases in ns");
        let timing = leader_timing(&config.daemon);
        let presence = Presence::new(
            fake.client(),
            store.clone(),
            "ns",
            identity,
            config.daemon.probe_timeout,
            timing,
        );
        // Eager from the start (no warm-up): the tests decide who runs.
        let spread = Arc::new(Mutex::new(Spread::new(
            config.groups.len(),
            Instant::now(),
            Duration::ZERO,
            timing.lease_duration,
        )));
        let live = prometheus::Registry::new();
        let metrics = CoordMetrics::new(&prometheus::Registry::new(), &live).unwrap();
        let coords = config
            .groups
            .iter()
            .map(|g| {
                GroupCoord::with_parts(
                    g,
                    config,
                    fake.client(),
                    presence.clone(),
                    spread.clone(),
                    identity.to_string(),
                    metrics.clone(),
                )
            })
            .collect();
        Instance {
            coords,
            presence,
            store,
            metrics,
            live,
        }
    }

    fn decision(verdict: Verdict) -> Decision {
        Decision {
            state: GroupState::PrimaryActive,
            reasons: vec![],
            actions: vec![],
            primary_down: verdict == Verdict::Down,
            standby_fit: true,
            unexpected_standby_replicas: 0,
            dual_active: false,
            no_active_side: false,
            signals: vec![],
            state_changed: false,
            verdict,
            warnings: vec![],
        }
    }

    impl Instance {
        /// One tick of every group, the cache listed from the fake first when `seen`.
        async fn tick(&self, fake: &FakeLeases, seen: bool, verdict: Verdict) {
            if seen {
                fake.mirror(&self.store);
            }
            for c in &self.coords {
                c.sync(Instant::now(), now_unix()).await;
                c.publish(&decision(verdict), now_unix()).await;
            }
        }

        fn leading(&self) -> usize {
            let now = Instant::now();
            self.coords.iter().filter(|c| c.may_write(now)).count()
        }
    }

    fn count(requests: &[String], what: &str) -> usize {
        requests.iter().filter(|r| r.as_str() == what).count()
    }

    fn held(holder: &str, instance: &str, heartbeat: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(leader_lease_name("g0")),
                annotations: Some(BTreeMap::from([
                    (INSTANCE_ANNOTATION.into(), instance.into()),
                    (HEARTBEAT_ANNOTATION.into(), heartbeat.into()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                ..LeaseSpec::default()
            }),
        }
    }

    fn beat(identity: &str, instance: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(presence::observer_lease_name(identity)),
                annotations: Some(BTreeMap::from([(
                    INSTANCE_ANNOTATION.into(),
                    instance.into(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.into()),
                renew_time: Some(micro_now()),
                ..LeaseSpec::default()
            }),
        }
    }

    async fn ticks_for(i: &Instance, fake: &FakeLeases, seen: bool, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            i.tick(fake, seen, Verdict::Up).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ticks `i` every `poll` until it leads `n` groups; how long that took, or `None`
    /// when it did not within `within`.
    async fn ticks_until_leading(
        i: &Instance,
        fake: &FakeLeases,
        seen: bool,
        n: usize,
        within: Duration,
        poll: Duration,
    ) -> Option<Duration> {
        let from = Instant::now();
        while from.elapsed() < within {
            i.tick(fake, seen, Verdict::Up).await;
            if i.leading() == n {
                return Some(from.elapsed());
            }
            tokio::time::sleep(poll).await;
        }
        None
    }

    #[tokio::test]
    async fn renewals_are_spaced_and_shared_by_every_group() {
        let fake = FakeLeases::new();
        let cfg = config(10);
        let me = instance(&fake, &cfg, "me");
        assert_eq!(me.presence.spacing(), Duration::from_millis(100));
        // The groups take their Leases, then tick for 3 renew deadlines.
        ticks_for(&me, &fake, true, Duration::from_millis(200)).await;
        assert_eq!(me.leading(), 10);
        let first = fake.take_requests();
        assert_eq!(
            count(&first, "POST"),
            11,
            "ten leader Leases and one observer Lease: {first:?}"
        );
        let started = Instant::now();
        let mut syncs = 0;
        while started.elapsed() < Duration::from_millis(1200) {
            me.tick(&fake, true, Verdict::Up).await;
            syncs += me.coords.len();
            assert_eq!(me.leading(), 10, "every term kept by the heartbeat alone");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        let requests = fake.take_requests();
        let observer = format!("PUT {}", presence::observer_lease_name("me"));
        let renewals = count(&requests, &observer);
        // One write per spacing for all ten groups (a tick's worth of slack); nothing
        // else: no leader Lease write, no read.
        let most = (elapsed.as_millis() / 100 + 2) as usize;
        assert!(
            (elapsed.as_millis() / 100 / 2) as usize <= renewals && renewals <= most,
            "{renewals} renewals in {elapsed:?} for {syncs} group ticks"
        );
        assert_eq!(renewals, requests.len(), "{requests:?}");
        // Every group's verdict is in the one Lease.
        let lease = fake.lease(&presence::observer_lease_name("me")).unwrap();
        let verdicts = observer::decode_verdicts(annotation(&lease, VERDICTS_ANNOTATION).unwrap());
        assert_eq!(verdicts.len(), 10);
        assert!(verdicts.values().all(|v| v.verdict() == Verdict::Up));
    }

    #[tokio::test]
    async fn a_verdict_turning_down_is_published_at_once() {
        let fake = FakeLeases::new();
        // Renewals every 10 s: none during the test but the first.
        let cfg = config_with(2, "60s", "40s", "30s");
        let me = instance(&fake, &cfg, "me");
        assert_eq!(me.presence.spacing(), Duration::from_secs(10));
        me.tick(&fake, true, Verdict::Up).await;
        let name = presence::observer_lease_name("me");
        let verdict_of = |g: &str| {
            let lease = fake.lease(&name)?;
            let v = observer::decode_verdicts(annotation(&lease, VERDICTS_ANNOTATION)?);
            v.get(g).map(GroupVerdict::verdict)
        };
        // Wait for the first renewal, then change within the spacing.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(verdict_of("g0"), Some(Verdict::Up));
        fake.take_requests();
        me.coords[0]
            .publish(&decision(Verdict::Suspect), now_unix())
            .await;
        assert_eq!(
            fake.take_requests(),
            Vec::<String>::new(),
            "suspect waits for the renewal"
        );
        me.coords[0]
            .publish(&decision(Verdict::Down), now_unix())
            .await;
        assert_eq!(
            verdict_of("g0"),
            Some(Verdict::Down),
            "down is written before publish returns"
        );
        me.coords[0]
            .publish(&decision(Verdict::Up), now_unix())
            .await;
        assert_eq!(
            verdict_of("g0"),
            Some(Verdict::Up),
            "and so is the end of down"
        );
    }

    #[tokio::test]
    async fn no_take_over_while_the_lease_cache_is_not_established() {
        let fake = FakeLeases::new();
        // A holder that died: its leader Lease and heartbeat never change again.
        fake.put(beat("other", "p-other"));
        fake.put(held(
            "other",
            "p-other",
            &presence::observer_lease_name("other"),
        ));
        let cfg = config(1);
        let me = instance(&fake, &cfg, "me");
        // Never listed: for two lease durations, nothing of the group is read or written.
        ticks_for(&me, &fake, false, 2 * LEASE).await;
        assert_eq!(me.leading(), 0);
        assert_eq!(me.coords[0].role(Instant::now()), Role::Follower);
        let requests = fake.take_requests();
        assert!(
            requests
                .iter()
                .all(|r| r.ends_with(&presence::observer_lease_name("me")) || r == "POST"),
            "only this instance's own observer Lease: {requests:?}"
        );
        // Listed now, then lost again (a relist after a lost watch): the clock starts
        // again from the next view, so the take-over needs a whole lease duration of
        // established views.
        me.tick(&fake, true, Verdict::Up).await;
        me.store.suspect("test");
        ticks_for(&me, &fake, false, LEASE).await;
        fake.mirror(&me.store);
        let took = ticks_until_leading(&me, &fake, false, 1, 3 * LEASE, Duration::from_millis(20))
            .await
            .expect("taken over once seen silent for a lease duration");
        assert!(took >= LEASE, "took over after {took:?}");
        let requests = fake.take_requests();
        // The heartbeat was read fresh before the write.
        let heartbeat = format!("GET {}", presence::observer_lease_name("other"));
        let write = format!("PUT {}", leader_lease_name("g0"));
        let read_at = requests.iter().position(|r| *r == heartbeat);
        let write_at = requests.iter().position(|r| *r == write);
        assert!(read_at.is_some() && read_at < write_at, "{requests:?}");
    }

    #[tokio::test]
    async fn a_take_over_backs_off_when_the_fresh_heartbeat_moved() {
        let fake = FakeLeases::new();
        let other = presence::observer_lease_name("other");
        fake.put(beat("other", "p-other"));
        fake.put(held("other", "p-other", &other));
        let cfg = config(1);
        let me = instance(&fake, &cfg, "me");
        me.tick(&fake, true, Verdict::Up).await;
        // From now on the cache misses every change (a watch silently stuck), while the
        // holder keeps beating: never taken over.
        let until = Instant::now() + 3 * LEASE;
        while Instant::now() < until {
            fake.put(beat("other", "p-other"));
            me.tick(&fake, false, Verdict::Up).await;
            assert_eq!(me.leading(), 0);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let requests = fake.take_requests();
        assert!(
            count(&requests, &format!("GET {other}")) >= 1,
            "{requests:?}"
        );
        assert_eq!(
            count(&requests, &format!("PUT {}", leader_lease_name("g0"))),
            0
        );
        // The holder stops; the cache catches up: taken after a lease duration.
        fake.mirror(&me.store);
        ticks_for(&me, &fake, false, 4 * LEASE).await;
        assert_eq!(me.leading(), 1, "{:?}", fake.take_requests());
    }

    #[tokio::test]
    async fn accepted_renewals_stand_for_the_standby_readyz_and_failed_ones_do_not() {
        let fake = FakeLeases::new();
        let cfg = config(2);
        let me = instance(&fake, &cfg, "me");
        let proof = Arc::new(crate::clusters::WriteProof::default());
        me.presence.prove_writes_to(proof.clone());
        let before = Instant::now();
        ticks_for(&me, &fake, true, Duration::from_millis(300)).await;
        let (sent, _) = proof.since(before).expect("a renewal reported");
        let requests = fake.take_requests();
        assert!(
            count(
                &requests,
                &format!("PUT {}", presence::observer_lease_name("me"))
            ) >= 2,
            "{requests:?}"
        );
        // Failing writes prove nothing: the last accepted one stays the proof.
        fake.fail_with(Some(503));
        let cut = Instant::now();
        ticks_for(&me, &fake, false, Duration::from_millis(300)).await;
        assert!(!fake.take_requests().is_empty(), "renewals were tried");
        assert_eq!(proof.since(cut), None);
        assert!(proof.since(sent).is_some_and(|(at, _)| at < cut));
    }

    #[tokio::test]
    async fn a_holder_whose_renewals_fail_stops_at_the_deadline() {
        let fake = FakeLeases::new();
        let cfg = config(2);
        let me = instance(&fake, &cfg, "me");
        ticks_for(&me, &fake, true, Duration::from_millis(200)).await;
        assert_eq!(me.leading(), 2);
        // The API answers 500 to everything now; the cache still shows the Leases.
        fake.fail_with(Some(500));
        let stopped =
            ticks_until_leading(&me, &fake, false, 0, 3 * LEASE, Duration::from_millis(10))
                .await
                .expect("stopped leading");
        // At the renew deadline (400 ms) after the last renewal sent before the cut, a
        // spacing (100 ms) before it at most: not at the first failed renewal, and not
        // later than the deadline (slack for a loaded machine's ticks).
        assert!(stopped >= Duration::from_millis(150), "{stopped:?}");
        assert!(stopped <= Duration::from_millis(600), "{stopped:?}");
        // Back: the groups write their Leases again to lead.
        fake.fail_with(None);
        ticks_for(&me, &fake, true, Duration::from_millis(300)).await;
        assert_eq!(me.leading(), 2);
    }

    /// The leader gauge of each group, as gathered now.
    fn leader_gauge(i: &Instance) -> Vec<i64> {
        i.live
            .gather()
            .iter()
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_gauge().value() as i64)
            .collect()
    }

    /// A leader whose tick is blocked (no sync runs) and whose renewals fail: its role
    /// and the leader gauge end at the renew deadline, read when asked, not at the next
    /// tick.
    #[tokio::test]
    async fn a_blocked_leader_stops_saying_leader_at_its_deadline() {
        let fake = FakeLeases::new();
        let cfg = config(2);
        let me = instance(&fake, &cfg, "me");
        ticks_for(&me, &fake, true, Duration::from_millis(200)).await;
        assert_eq!(me.leading(), 2);
        assert_eq!(leader_gauge(&me), vec![1, 1]);
        let role = |g: &str| me.metrics.roles.of(g, Instant::now()).map(|r| r.role);
        assert_eq!(role("g0"), Some(Role::Leader));
        // Cut: every renewal fails, and no tick runs from now on.
        fake.fail_with(Some(500));
        let cut = Instant::now();
        while cut.elapsed() < 3 * LEASE && role("g0") == Some(Role::Leader) {
            // Role and gauge say the same at every reading (the deadline may pass
            // between two readings, never back).
            let before = leader_gauge(&me)[0];
            let now = role("g0");
            let after = leader_gauge(&me)[0];
            assert!(before >= after);
            if now == Some(Role::Leader) {
                assert_eq!(before, 1);
            } else {
                assert_eq!(after, 0);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stopped = cut.elapsed();
        assert_eq!(role("g0"), Some(Role::Follower));
        assert_eq!(role("g1"), Some(Role::Follower));
        assert_eq!(leader_gauge(&me), vec![0, 0]);
        // Renew deadline 400 ms after the last renewal sent, which is at most a spacing
        // (100 ms) before the cut; slack for a loaded machine.
        assert!(stopped <= Duration::from_millis(900), "{stopped:?}");
        // The next tick ends the term (and says so in the log).
        me.tick(&fake, false, Verdict::Up).await;
        assert_eq!(me.coords[0].lock().election.term(Instant::now()), None);
    }

    #[tokio::test]
    async fn another_process_writing_the_observer_lease_is_a_clash() {
        let fake = FakeLeases::new();
        let cfg = config(2);
        let me = instance(&fake, &cfg, "me");
        ticks_for(&me, &fake, true, Duration::from_millis(200)).await;
        assert_eq!(me.leading(), 2);
        // A twin with the same identity writes the Lease, every tick.
        let mut clash = false;
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until && !clash {
            fake.put(beat("me", "a-twin"));
            me.tick(&fake, true, Verdict::Up).await;
            clash = me
                .coords
                .iter()
                .all(|c| c.role(Instant::now()) == Role::IdentityClash);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(clash, "clash not seen");
        assert_eq!(me.leading(), 0);
        // Nothing is written while it lasts.
        fake.take_requests();
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            fake.put(beat("me", "a-twin"));
            me.tick(&fake, true, Verdict::Up).await;
            assert_eq!(me.leading(), 0);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let requests = fake.take_requests();
        assert!(
            requests.iter().all(|r| r.starts_with("GET")),
            "{requests:?}"
        );
        // The twin stops: after a ttl of silence this instance publishes and leads again.
        ticks_for(&me, &fake, true, 3 * LEASE).await;
        assert!(
            me.coords
                .iter()
                .all(|c| c.role(Instant::now()) != Role::IdentityClash)
        );
        assert_eq!(me.leading(), 2);
    }

    #[tokio::test]
    async fn an_api_that_fails_every_write_gets_no_more_writes_than_a_healthy_one() {
        let fake = FakeLeases::new();
        // Ten groups, renewals every 500 ms (lease duration 3 s), and an API server that
        // answers 500 to everything from the start (overloaded): every group wants to
        // create its leader Lease at every tick.
        let cfg = config_with(10, "3s", "2s", "1500ms");
        let lease = Duration::from_secs(3);
        let me = instance(&fake, &cfg, "me");
        let spacing = me.presence.spacing();
        assert_eq!(spacing, Duration::from_millis(500));
        fake.fail_with(Some(500));
        let started = Instant::now();
        let mut syncs = 0;
        while started.elapsed() < Duration::from_millis(1600) {
            me.tick(&fake, true, Verdict::Up).await;
            syncs += me.coords.len();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        let requests = fake.take_requests();
        assert_eq!(me.leading(), 0);
        let observer = presence::observer_lease_name("me");
        let renewals = requests.iter().filter(|r| r.ends_with(&observer)).count();
        let leader_writes = requests.len() - renewals;
        // The observer Lease: one attempt per spacing, and one early retry (a quarter
        // spacing) of the episode's first failure; every failure retried early was 13.
        let most = (elapsed.as_millis() / spacing.as_millis()) as usize + 2;
        assert!(renewals <= most, "{renewals} in {elapsed:?}: {requests:?}");
        // The leader Leases: after a failure, none for a spacing, then twice that, up to
        // the lease duration, less a quarter at most: at most four in 1.6 s, where every
        // group's tick wrote one before (hundreds).
        assert!(
            (1..=4).contains(&leader_writes),
            "{leader_writes} leader Lease writes for {syncs} group ticks: {requests:?}"
        );
        // Back to health: every group is led again within a lease duration.
        fake.fail_with(None);
        let led = ticks_until_leading(&me, &fake, true, 10, 2 * lease, Duration::from_millis(20))
            .await
            .expect("every group led once the API answers again");
        assert!(led <= lease, "{led:?}");
    }

    #[tokio::test]
    async fn a_group_nobody_leads_is_reported_after_a_lease_duration() {
        let fake = FakeLeases::new();
        let cfg = config(1);
        let me = instance(&fake, &cfg, "me");
        // The leader Lease cannot be written (say, no grant on the coordination
        // namespace): nobody leads.
        fake.fail_with(Some(403));
        ticks_for(&me, &fake, true, LEASE / 2).await;
        assert_eq!(
            me.coords[0].status(Instant::now()).no_leader_seconds,
            None,
            "not within a lease duration"
        );
        ticks_for(&me, &fake, true, LEASE).await;
        let status = me.coords[0].status(Instant::now());
        assert!(
            status
                .no_leader_seconds
                .is_some_and(|s| s > LEASE.as_secs_f64()),
            "{status:?}"
        );
        assert_eq!(status.leader, None);
        // Writable again: led, and said so.
        fake.fail_with(None);
        ticks_until_leading(&me, &fake, true, 1, 3 * LEASE, Duration::from_millis(20))
            .await
            .expect("led");
        me.tick(&fake, true, Verdict::Up).await;
        assert_eq!(me.coords[0].status(Instant::now()).no_leader_seconds, None);
    }

    #[tokio::test]
    async fn a_peers_down_verdict_is_news_only_to_an_instance_that_says_down() {
        let fake = FakeLeases::new();
        let cfg = config(1);
        let a = instance(&fake, &cfg, "a");
        let b = instance(&fake, &cfg, "b");
        for _ in 0..3 {
            a.tick(&fake, true, Verdict::Up).await;
            b.tick(&fake, true, Verdict::Up).await;
        }
        // b says down (published at once); a does not yet: no news for a.
        b.tick(&fake, true, Verdict::Down).await;
        fake.mirror(&a.store);
        assert!(!a.coords[0].peer_down_news(), "a says up itself");
        // a says down too, and saw b's down at its sync: no news either.
        a.tick(&fake, true, Verdict::Down).await;
        assert!(
            !a.coords[0].peer_down_news(),
            "b's down was seen by the sync"
        );
        // b goes up and down again after a's sync: news until a syncs again.
        b.tick(&fake, true, Verdict::Up).await;
        a.tick(&fake, true, Verdict::Down).await;
        b.tick(&fake, true, Verdict::Down).await;
        assert!(!a.coords[0].peer_down_news(), "not in a's cache yet");
        fake.mirror(&a.store);
        assert!(a.coords[0].peer_down_news());
        a.tick(&fake, true, Verdict::Down).await;
        assert!(!a.coords[0].peer_down_news());
    }

    #[tokio::test]
    async fn release_hands_the_leader_leases_over_and_withdraws_the_verdicts() {
        let fake = FakeLeases::new();
        let cfg = config(2);
        let me = instance(&fake, &cfg, "me");
        ticks_for(&me, &fake, true, Duration::from_millis(200)).await;
        assert_eq!(me.leading(), 2);
        let name = presence::observer_lease_name("me");
        me.coords[0].release().await;
        let l = fake.lease(&leader_lease_name("g0")).unwrap();
        assert_eq!(l.spec.unwrap().holder_identity, None, "released");
        assert!(
            fake.lease(&name)
                .unwrap()
                .spec
                .unwrap()
                .renew_time
                .is_some(),
            "still renewed for g1"
        );
        me.coords[1].release().await;
        assert_eq!(fake.lease(&name).unwrap().spec.unwrap().renew_time, None);
        fake.take_requests();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            fake.take_requests(),
            Vec::<String>::new(),
            "renewals stopped"
        );
    }

    #[tokio::test]
    async fn two_instances_see_each_other_and_lead_once() {
        let fake = FakeLeases::new();
        let cfg = config(4);
        let a = instance(&fake, &cfg, "a");
        let b = instance(&fake, &cfg, "b");
        let until = Instant::now() + 4 * LEASE;
        while Instant::now() < until {
            a.tick(&fake, true, Verdict::Up).await;
            b.tick(&fake, true, Verdict::Up).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(a.leading() + b.leading(), 4, "every group led once");
        let status = a.coords[0].status(Instant::now());
        assert!(
            status
                .observers
                .iter()
                .any(|o| o.identity == "b" && o.fresh),
            "{status:?}"
        );
        // b stops without a word (killed: its renewals end with it): its groups move to
        // a after a lease duration.
        drop(b);
        let moved = ticks_until_leading(&a, &fake, true, 4, 4 * LEASE, Duration::from_millis(20))
            .await
            .expect("a leads every group");
        assert!(moved >= Duration::from_millis(400), "{moved:?}");
    }
}

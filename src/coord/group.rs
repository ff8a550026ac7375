//! One group's coordination in this instance: each tick reads the group's Leases from
//! the cache, runs the election ([`super::leader`]) with the spread's share
//! ([`super::spread`]) and writes the leader Lease when a term starts, is renewed by a
//! write or ends; after the decision it publishes the verdict in the observer Lease
//! ([`super::presence`]).

use super::clock::Clock;
use super::leader::{self, Election, LeaderTiming, LeaseView, Plan, WriteResult};
use super::lease::{
    HEARTBEAT_ANNOTATION, INSTANCE_ANNOTATION, ROLE_LABEL, annotation, heartbeat_rv,
    leader_lease_name, parse_leader, parse_observer, seconds_i32,
};
use super::observer::{GroupVerdict, ObserverLease, Observers};
use super::presence::{self, Member, Presence};
use super::spread::Spread;
use super::{CoordMetrics, Coordination, IdentityClash, Role, RoleNow, conflict, leader_timing};
use crate::config::{Config, GroupConfig};
use crate::engine::{Decision, GroupState};
use crate::kube::call::{CallError, bounded};
use crate::model::{ObserverReport, Verdict};
use crate::record::{APP_LABEL_VALUE, GROUP_LABEL};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// One group's coordination state in this instance, behind the group's lock.
#[derive(Debug)]
pub(super) struct State {
    pub(super) election: Election,
    pub(super) observers: Observers,
    /// The others' verdicts, as of the last sync.
    pub(super) reports: Vec<ObserverReport>,
    pub(super) clash: bool,
    /// The renewal is failing (reported once per episode).
    pub(super) renew_failing: bool,
    /// The Lease cache was not current at the last sync (said once per episode).
    pub(super) unseen: bool,
    /// This instance's last verdict and since when it says down.
    pub(super) own: (Verdict, Option<f64>, Vec<String>),
    /// No failover under way at the last decision (a group that may be handed over).
    pub(super) quiet: bool,
    /// The leader Lease's resourceVersion after this instance's last write of it.
    pub(super) leader_rv: Option<String>,
    /// Since when this instance has seen no live leader of the group (itself included).
    pub(super) leaderless_since: Option<Instant>,
    /// When the last sync started: a heartbeat extends the term only while the group's
    /// loop keeps ticking.
    pub(super) last_sync: Option<Instant>,
    pub(super) renew_deadline: Duration,
    /// The leader Lease as this instance last learnt it from the API, not yet from the
    /// cache: the resourceVersion the cache showed then (`""`: missing) and the Lease
    /// (as stored by this instance's own write, or read fresh after a 409). It stands in
    /// for the cache while the cache still shows that resourceVersion.
    pub(super) stand_in: Option<(String, Option<Arc<Lease>>)>,
}

impl State {
    /// The role at `now`, from the term as it stands: a term whose renew deadline passed
    /// is over at that instant, whether or not a tick has seen it yet.
    pub(super) fn role_at(&self, now: Instant) -> Role {
        if self.clash {
            Role::IdentityClash
        } else if self.election.may_write(now) {
            Role::Leader
        } else {
            Role::Follower
        }
    }

    /// [`Self::role_at`] and the leader as this instance knows it.
    pub(super) fn role_now(&self, now: Instant) -> RoleNow {
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
    pub(super) group: String,
    pub(super) api: Api<Lease>,
    pub(super) identity: String,
    pub(super) timeout: Duration,
    pub(super) timing: LeaderTiming,
    pub(super) ttl: Duration,
    pub(super) quorum: u32,
    pub(super) expected: Option<u32>,
    pub(super) metrics: CoordMetrics,
    pub(super) state: Arc<Mutex<State>>,
    pub(super) process: Arc<Coordination>,
    pub(super) presence: Arc<Presence>,
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
        standby: &crate::kube::cluster::ClusterHandle,
        client: kube::Client,
        identity: String,
        metrics: CoordMetrics,
        process: &Arc<Coordination>,
    ) -> Self {
        let namespace = config.coordination_namespace(group);
        // Only this daemon's Leases (every one carries the label): others in the
        // namespace are neither listed nor held.
        let store = standby.leases(
            namespace,
            &format!("app.kubernetes.io/name={APP_LABEL_VALUE}"),
        );
        let presence = process.presence(
            standby.client().clone(),
            &store,
            namespace,
            &identity,
            config.daemon.probe_timeout,
            leader_timing(&config.daemon),
        );
        presence.prove_writes_to(standby.write_proof());
        GroupCoord::with_parts(group, config, client, presence, identity, metrics)
    }

    /// With the observer Lease `presence` (which knows its process).
    pub(super) fn with_parts(
        group: &GroupConfig,
        config: &Config,
        client: kube::Client,
        presence: Arc<Presence>,
        identity: String,
        metrics: CoordMetrics,
    ) -> Self {
        let process = presence.process().clone();
        let timing = leader_timing(&config.daemon);
        let observers = &group.policy.observers;
        metrics.init_group(&group.name, observers.expected);
        let ttl = observers.ttl_or_default(config.daemon.probe_interval);
        let state = Arc::new(Mutex::new(State {
            election: Election::new(identity.clone(), process.instance().to_string(), timing),
            observers: Observers::default(),
            reports: Vec::new(),
            clash: false,
            renew_failing: false,
            unseen: false,
            own: (Verdict::Unknown, None, Vec::new()),
            quiet: false,
            leader_rv: None,
            leaderless_since: Some(process.clock().now()),
            last_sync: None,
            renew_deadline: timing.renew_deadline,
            stand_in: None,
        }));
        metrics.roles.join(&group.name, &state, process.clock());
        let member: Arc<dyn Member> = state.clone();
        presence.join(&group.name, ttl, Arc::downgrade(&member));
        GroupCoord {
            process,
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

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn clock(&self) -> Clock {
        self.process.clock()
    }

    /// Locked after [`Self::lock`] when both are needed, never before.
    fn spread(&self) -> std::sync::MutexGuard<'_, Spread> {
        self.process
            .spread()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// At start: refuses when another live process renews this identity's observer
    /// Lease (see [`Presence::check_identity`]).
    pub async fn check_identity(&self, poll: Duration) -> Result<(), IdentityClash> {
        self.presence.check_identity(poll, &self.group).await
    }

    /// The group's Leases as the cache holds them (`leases`, by name).
    fn read_view(&self, leases: &BTreeMap<String, Arc<Lease>>) -> View {
        let leader_name = leader_lease_name(&self.group);
        // Shared with the cache, not copied: read by every group at every tick.
        let mut leader_lease = leases.get(&leader_name).cloned();
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
        self.settle();
        self.lock().reports.clone()
    }

    /// Writes the leader Lease as `plan` says (a create or a replace; nothing for the
    /// others) and tells the election how it went.
    async fn write_plan(&self, plan: &Plan, acquired: Option<MicroTime>) {
        let Some(write) = LeaderWrite::of(plan) else {
            return;
        };
        // Shed, not piled: the group tries again at a later tick.
        let Some(_permit) = self.presence.leader_write_permit(self.clock().now()).await else {
            debug!(group = %self.group, "leader Lease not written now: this cluster's leader Lease writes stayed at their bound or are paused after a failure");
            return;
        };
        // After the wait for a permit: a term counts from when its write was sent.
        let sent_at = self.clock().now();
        let result = self.write_leader(write, acquired).await;
        self.presence.leader_written(
            self.clock().now(),
            result.as_ref().is_err_and(|e| !conflict(e)),
        );
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
                st.stand_in = Some((precondition(plan), Some(Arc::new(stored.clone()))));
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
        self.settle();
    }

    /// The end of a sync: a lapsed term ended, the spread and the observers' metrics
    /// told where this instance stands now.
    fn settle(&self) {
        self.check_deadline(self.clock().now());
        let st = self.lock();
        self.spread()
            .set(&self.group, st.election.may_write(self.clock().now()));
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
            self.lock().stand_in = Some((precondition(plan), fresh.map(Arc::new)));
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
        if st.election.term(self.clock().now()).is_some() {
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
        let wall = self.clock().unix();
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
    pub fn lease_wakes(&self) -> tokio::sync::watch::Receiver<crate::kube::watch_cache::Wakes> {
        self.presence.store().wakes()
    }

    /// Writes the leader Lease, held by this instance; returns it as stored.
    async fn write_leader(
        &self,
        write: LeaderWrite,
        acquired: Option<MicroTime>,
    ) -> Result<Lease, CallError> {
        let name = leader_lease_name(&self.group);
        let now = self.clock().micro();
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
                (
                    INSTANCE_ANNOTATION.to_string(),
                    self.process.instance().to_string(),
                ),
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
                renew_time: Some(self.clock().micro()),
                lease_transitions: Some(transitions),
                ..LeaseSpec::default()
            }),
        };
        let stored = self.store(&name, lease, false).await?;
        let mut st = self.lock();
        st.leader_rv = None;
        st.stand_in = Some((resource_version, Some(Arc::new(stored))));
        Ok(())
    }

    /// On shutdown: stops writing, releases the leader Lease if this instance holds it
    /// (so that another instance takes the group at once instead of after a lease
    /// duration), and leaves the observer Lease, which the last group to leave withdraws
    /// (it loses its renew time, so its verdicts no longer count as fresh).
    pub async fn release(&self) {
        let held = {
            let mut st = self.lock();
            let held = st.election.term(self.clock().now()).is_some();
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
}

/// Ends a term whose renew deadline passed at `now`, and says so.
pub(super) fn end_lapsed_term(st: &mut State, group: &str, identity: &str, now: Instant) {
    if st.election.term(now) == Some(false) {
        st.election.step_down();
        warn!(
            group = %group,
            identity = %identity,
            "leader Lease not renewed within the renew deadline: stopped writing"
        );
    }
}

/// The resourceVersion a plan writes against (`""`: a create).
pub(super) fn precondition(plan: &Plan) -> String {
    match plan {
        Plan::Replace {
            resource_version, ..
        }
        | Plan::Release { resource_version } => resource_version.clone(),
        _ => String::new(),
    }
}

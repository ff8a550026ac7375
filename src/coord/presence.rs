//! This instance's observer Lease in the coordination namespace of one standby cluster,
//! `kube-failover.observer.<identity>`, shared by every group of the instance whose
//! standby is that cluster, whatever their namespaces. It carries each group's verdict
//! (annotation `kube-failover/verdicts`) and is the heartbeat of every leader Lease the
//! instance holds there ([`super::leader`]), so one write renews all of them and the
//! writes to the standby do not grow with the number of groups:
//!
//! - renewed every [`renewal_spacing`]: `min(renew_deadline ÷ 2, observers.ttl ÷ 3)`, the
//!   probe interval at the defaults. A verdict read by another instance is then at most
//!   one spacing old (plus the write's way through its watch), two when a renewal is
//!   lost: always below the ttl, so a live observer never looks stale. One write at a
//!   time: a renewal that is late (a slow API server) is not queued behind the one in
//!   flight, the next one is due a spacing after it was sent. The first failed renewal
//!   of an episode is retried after a quarter of the spacing (one lost renewal does not
//!   cost the leadership); further failures wait a whole spacing, so an overloaded API
//!   server sees no more writes than a healthy one;
//! - written at once when a group's verdict becomes or stops being `down`
//!   ([`super::observer::urgent`]), since promotion by a quorum of observers counts
//!   those; any other change goes with the next renewal. Changes that arrive while a
//!   write is on its way go together with the next one;
//! - written with plain create/replace against the resourceVersion of this instance's
//!   own last write or of a fresh read: a 409 is answered by a fresh GET (never by the
//!   watch cache), and shows an identity clash when another process wrote the Lease.
//!
//! A renewal extends the term of each group this instance leads here, from its send
//! time, when its answer came while that term still ran and the group's loop ticked
//! within the renew deadline ([`Member::renewed`]): a group whose loop is stuck loses its
//! leadership as it did when every group renewed its own Lease.

use super::lease::{
    INSTANCE_ANNOTATION, LEADING_ANNOTATION, ROLE_LABEL, VERDICTS_ANNOTATION, annotation,
    seconds_i32,
};
use super::observer::{GroupVerdict, decode_verdicts, encode_verdicts, name_part, urgent};
use super::{Coordination, IdentityClash, LeaderTiming, conflict};
use crate::kube::call::{CallError, bounded};
use crate::kube::cluster::WriteProof;
use crate::kube::watch_cache::WatchStore;
use crate::record::APP_LABEL_VALUE;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, ObjectMeta, PostParams};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// The shortest spacing of renewals, whatever the settings.
const MIN_SPACING: Duration = Duration::from_millis(100);

/// Writes of leader Leases (a term starting or ending) in flight at once per cluster, at
/// most: beyond that a write waits for one to end, up to half the call timeout
/// ([`Presence::leader_write_permit`]), and its group tries again at its next tick when
/// none did. At a start, each instance takes its share of every group at once (a third
/// of 200 with three instances) while the API server answers the lists of every
/// namespace: with 4 and no wait, writes of about a quarter second each left the last
/// groups without a leader for 5 s, more than a lease duration (BENCHMARKS.md, "Lighter
/// stores, tasks and ticks"); with 16 and no wait, the writes a tick could not send went
/// a whole interval later, in steps, the last one 3.3 s after the start. A failed write
/// (not a lost race) still pauses them all.
pub const LEADER_WRITES_IN_FLIGHT: usize = 16;

/// `kube-failover.observer.<identity>` (identity made DNS-safe, the whole name at most
/// 253 characters). The dot keeps it apart from every per-group name
/// (`kube-failover-<group>-…`: group names are DNS labels, without dots).
pub fn observer_lease_name(identity: &str) -> String {
    format!(
        "{OBSERVER_PREFIX}{}",
        name_part(identity, 253 - OBSERVER_PREFIX.len())
    )
}

/// What every observer Lease's name starts with.
pub const OBSERVER_PREFIX: &str = "kube-failover.observer.";

/// Whether `name` is an observer Lease of this release (any instance's).
pub fn is_observer_lease(name: &str) -> bool {
    name.starts_with(OBSERVER_PREFIX)
}

/// How often an observer Lease is renewed: `min(renew_deadline ÷ 2, ttl ÷ 3)` for the
/// shortest ttl of its groups, at least 100 ms.
pub fn renewal_spacing(timing: LeaderTiming, ttl: Duration) -> Duration {
    (timing.renew_deadline / 2).min(ttl / 3).max(MIN_SPACING)
}

/// The verdicts of one observer Lease, by group.
pub type Verdicts = Arc<BTreeMap<String, GroupVerdict>>;

/// A group whose leader term the renewals extend.
pub trait Member: Send + Sync {
    /// A renewal sent at `sent_at` succeeded, answered at `answered_at`.
    fn renewed(&self, sent_at: Instant, answered_at: Instant);
}

/// What a write is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// A change up to this generation must have been sent.
    Change(u64),
    /// The periodic renewal, if due.
    Renewal,
}

struct Inner {
    /// Renewal spacing (shortest over the groups).
    every: Duration,
    /// The longest ttl of the groups: the Lease's `leaseDurationSeconds`, and how long a
    /// clashing writer must stay silent for the clash to end.
    ttl: Duration,
    verdicts: BTreeMap<String, GroupVerdict>,
    leading: usize,
    /// Bumped by every change that must go out at once.
    wanted: u64,
    /// The generation the last write attempt carried.
    sent: u64,
    /// The Lease's resourceVersion after this instance's last write or fresh read.
    rv: Option<String>,
    /// Whether the Lease exists; `None` until read or written.
    exists: Option<bool>,
    last_attempt: Option<Instant>,
    /// Consecutive failed writes (said once per episode).
    failures: u32,
    /// No leader Lease is written before then: one failed (not a lost race) lately.
    leader_writes_after: Option<Instant>,
    /// The pause after the last failed leader Lease write (doubles, reset by a success).
    leader_backoff: Duration,
    clash: bool,
    members: Vec<(String, Weak<dyn Member>)>,
    joined: usize,
    task: Option<JoinHandle<()>>,
    withdrawn: bool,
}

impl Inner {
    /// How long until the next renewal: a spacing after the last attempt, a quarter of
    /// it after the first failure of an episode.
    fn due_in(&self, now: Instant) -> Duration {
        let spacing = if self.failures == 1 {
            (self.every / 4).max(MIN_SPACING)
        } else {
            self.every
        };
        self.last_attempt.map_or(Duration::ZERO, |t| {
            (t + spacing).saturating_duration_since(now)
        })
    }
}

/// This instance's observer Lease in one namespace of one cluster.
pub struct Presence {
    api: Api<Lease>,
    store: Arc<WatchStore<Lease>>,
    name: String,
    namespace: String,
    identity: String,
    timeout: Duration,
    timing: LeaderTiming,
    inner: Mutex<Inner>,
    /// One write at a time.
    writing: tokio::sync::Mutex<()>,
    /// Leader Lease writes in flight ([`LEADER_WRITES_IN_FLIGHT`]).
    leader_writes: Arc<tokio::sync::Semaphore>,
    identity_checked: tokio::sync::OnceCell<Result<(), IdentityClash>>,
    /// Decoded verdicts of the Leases read, by name, with the resourceVersion decoded.
    decoded: Mutex<HashMap<String, (String, Verdicts)>>,
    /// Where an accepted write is reported: the cluster's `/readyz` is not asked in an
    /// interval that saw one ([`crate::kube::cluster::ClusterHandle::write_proof`]).
    proof: OnceLock<Arc<WriteProof>>,
    /// The process this Lease speaks for: its instance id and clock.
    process: Arc<Coordination>,
}

impl Presence {
    /// The observer Lease of `identity` in `namespace`, written through `client` (the
    /// cluster's own, not a group's: its renewals are no group's progress) and read from
    /// `store`, the namespace's Lease cache; each call bounded by `timeout`. One per
    /// process and namespace: see [`Coordination::presence`].
    pub fn new(
        client: kube::Client,
        store: Arc<WatchStore<Lease>>,
        namespace: &str,
        identity: &str,
        (timeout, timing): (Duration, LeaderTiming),
        process: Arc<Coordination>,
    ) -> Arc<Self> {
        Arc::new(Presence {
            api: Api::namespaced(client, namespace),
            store,
            name: observer_lease_name(identity),
            namespace: namespace.to_string(),
            identity: identity.to_string(),
            timeout,
            timing,
            inner: Mutex::new(Inner {
                every: renewal_spacing(timing, Duration::MAX),
                ttl: Duration::ZERO,
                verdicts: BTreeMap::new(),
                leading: 0,
                wanted: 0,
                sent: 0,
                rv: None,
                exists: None,
                last_attempt: None,
                failures: 0,
                leader_writes_after: None,
                leader_backoff: Duration::ZERO,
                clash: false,
                members: Vec::new(),
                joined: 0,
                task: None,
                withdrawn: false,
            }),
            writing: tokio::sync::Mutex::new(()),
            leader_writes: Arc::new(tokio::sync::Semaphore::new(LEADER_WRITES_IN_FLIGHT)),
            identity_checked: tokio::sync::OnceCell::new(),
            decoded: Mutex::new(HashMap::new()),
            proof: OnceLock::new(),
            process,
        })
    }

    /// The process this Lease speaks for.
    pub fn process(&self) -> &Arc<Coordination> {
        &self.process
    }

    /// Reports every accepted write to `proof` from now on (the first one given counts).
    pub fn prove_writes_to(&self, proof: Arc<WriteProof>) {
        let _ = self.proof.set(proof);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The Lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The Lease cache of the namespace.
    pub fn store(&self) -> &Arc<WatchStore<Lease>> {
        &self.store
    }

    /// Adds `group`, whose verdicts count while renewed within `ttl` and whose term
    /// `member` keeps.
    pub fn join(&self, group: &str, ttl: Duration, member: Weak<dyn Member>) {
        let mut inner = self.lock();
        inner.every = inner.every.min(renewal_spacing(self.timing, ttl));
        inner.ttl = inner.ttl.max(ttl);
        inner.members.push((group.to_string(), member));
        inner.joined += 1;
    }

    /// The renewal spacing.
    pub fn spacing(&self) -> Duration {
        self.lock().every
    }

    /// Another process publishes under this identity: nothing is written until the
    /// clash ends.
    pub fn clash(&self) -> bool {
        self.lock().clash
    }

    /// Starts the renewals (once; from the groups' loops, inside the runtime).
    pub fn start(self: &Arc<Self>) {
        let mut inner = self.lock();
        if inner.task.is_none() && !inner.withdrawn {
            inner.task = Some(tokio::spawn(renew(Arc::downgrade(self))));
        }
    }

    /// Sets `group`'s verdict and the process's count of groups led; publishes at once
    /// (returning when the write was tried) when the verdict becomes or stops being
    /// `down`, otherwise with the next renewal.
    pub async fn publish(&self, group: &str, verdict: GroupVerdict, leading: usize) {
        let urgent_now = {
            let mut inner = self.lock();
            inner.leading = leading;
            let before = inner.verdicts.get(group).map(GroupVerdict::verdict);
            let now = verdict.verdict();
            inner.verdicts.insert(group.to_string(), verdict);
            if urgent(before, now) {
                inner.wanted += 1;
                Some(inner.wanted)
            } else {
                None
            }
        };
        if let Some(generation) = urgent_now {
            self.write(Need::Change(generation)).await;
        }
    }

    /// The verdicts an observer Lease carries, decoded once per resourceVersion.
    pub fn verdicts_of(&self, lease: &Lease) -> Verdicts {
        // Every group asks at every tick: nothing is allocated unless the Lease changed.
        let name = lease.metadata.name.as_deref().unwrap_or_default();
        let rv = lease
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or_default();
        let mut decoded = self.decoded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, v)) = decoded.get(name)
            && seen == rv
        {
            return v.clone();
        }
        let v = Arc::new(
            annotation(lease, VERDICTS_ANNOTATION)
                .map(|t| decode_verdicts(t))
                .unwrap_or_default(),
        );
        decoded.insert(name.to_string(), (rv.to_string(), v.clone()));
        v
    }

    /// Leave to write a leader Lease (a term starting or ending), held while the write
    /// is on its way. When [`LEADER_WRITES_IN_FLIGHT`] are already, it waits for one to
    /// end, up to half the call timeout; `None` when none ended by then, or at once
    /// while the pause after a failed write runs (`now` is before its end): the group
    /// tries again at a later tick instead of piling writes onto a slow or overloaded
    /// API server. The writes in flight stay bounded either way.
    pub async fn leader_write_permit(
        &self,
        now: Instant,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        if self
            .lock()
            .leader_writes_after
            .is_some_and(|after| now < after)
        {
            return None;
        }
        let wait = self.timeout / 2;
        tokio::time::timeout(wait, self.leader_writes.clone().acquire_owned())
            .await
            .ok()?
            .ok()
    }

    /// How a leader Lease write ended: `failed` for anything but a success or a lost
    /// race. A failure pauses every leader Lease write of the cluster for a spacing at
    /// first, doubling up to the lease duration, with jitter; a success ends the pause.
    pub fn leader_written(&self, at: Instant, failed: bool) {
        let mut inner = self.lock();
        if !failed {
            inner.leader_backoff = Duration::ZERO;
            inner.leader_writes_after = None;
            return;
        }
        let backoff = (inner.leader_backoff * 2)
            .max(inner.every)
            .min(self.timing.lease_duration);
        inner.leader_backoff = backoff;
        inner.leader_writes_after = Some(at + jittered(backoff));
    }

    /// When the next renewal is due (or, during a clash, the next look at whether it
    /// ended).
    fn until_due(&self, now: Instant) -> Duration {
        let inner = self.lock();
        if inner.clash {
            (inner.ttl / 3).max(MIN_SPACING)
        } else {
            inner.due_in(now)
        }
    }

    fn lease(&self, inner: &Inner, withdraw: bool) -> Lease {
        let annotations = BTreeMap::from([
            (
                INSTANCE_ANNOTATION.to_string(),
                self.process.instance().to_string(),
            ),
            (
                VERDICTS_ANNOTATION.to_string(),
                encode_verdicts(&inner.verdicts),
            ),
            (LEADING_ANNOTATION.to_string(), inner.leading.to_string()),
        ]);
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (
                        "app.kubernetes.io/name".to_string(),
                        APP_LABEL_VALUE.to_string(),
                    ),
                    (ROLE_LABEL.to_string(), "observer".to_string()),
                ])),
                annotations: Some(annotations),
                resource_version: inner.rv.clone().filter(|_| inner.exists == Some(true)),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(seconds_i32(inner.ttl)),
                renew_time: (!withdraw).then(|| self.process.clock().micro()),
                ..LeaseSpec::default()
            }),
        }
    }

    async fn store_lease(&self, lease: Lease, create: bool) -> Result<Option<String>, CallError> {
        let params = PostParams {
            field_manager: Some(APP_LABEL_VALUE.to_string()),
            ..PostParams::default()
        };
        let stored = if create {
            bounded(self.timeout, self.api.create(&params, &lease)).await?
        } else {
            bounded(self.timeout, self.api.replace(&self.name, &params, &lease)).await?
        };
        Ok(stored.metadata.resource_version)
    }

    /// Reads the Lease from the API (not the cache). False when the read failed or
    /// showed a clash.
    async fn read_fresh(&self) -> bool {
        let read = bounded(self.timeout, self.api.get_opt(&self.name)).await;
        let mut inner = self.lock();
        match read {
            Ok(None) => {
                inner.exists = Some(false);
                inner.rv = None;
                true
            }
            Ok(Some(lease)) => {
                let rv = lease.metadata.resource_version.clone();
                let foreign = annotation(&lease, INSTANCE_ANNOTATION).map(String::as_str)
                    != Some(self.process.instance());
                // Written by another process since this one last wrote or read it. (A
                // Lease left by a previous process, seen first, is taken over.)
                if foreign && inner.rv.is_some() && inner.rv != rv {
                    if !inner.clash {
                        error!(
                            identity = %self.identity,
                            lease = %self.name,
                            namespace = %self.namespace,
                            "another process publishes under this daemon.identity: this \
                             instance stops leading and writing until the clash ends"
                        );
                    }
                    inner.clash = true;
                    return false;
                }
                inner.exists = Some(true);
                inner.rv = rv;
                true
            }
            Err(e) => {
                tracing::debug!(lease = %self.name, error = %e, "observer Lease not read");
                false
            }
        }
    }

    /// Writes the Lease when `need` says so.
    async fn write(&self, need: Need) {
        let _one = self.writing.lock().await;
        {
            let inner = self.lock();
            if inner.clash || inner.withdrawn {
                return;
            }
            match need {
                Need::Change(generation) if inner.sent >= generation => return,
                Need::Renewal if inner.due_in(self.process.clock().now()) > Duration::ZERO => {
                    return;
                }
                _ => {}
            }
        }
        if self.lock().exists.is_none() && !self.read_fresh().await {
            self.attempted(self.process.clock().now(), None, "cannot read it");
            return;
        }
        for first in [true, false] {
            let (lease, create, generation) = {
                let inner = self.lock();
                if inner.clash {
                    return;
                }
                (
                    self.lease(&inner, false),
                    inner.exists != Some(true),
                    inner.wanted,
                )
            };
            let sent_at = self.process.clock().now();
            let result = self.store_lease(lease, create).await;
            let answered_at = self.process.clock().now();
            match result {
                Ok(rv) => {
                    {
                        let mut inner = self.lock();
                        inner.rv = rv;
                        inner.exists = Some(true);
                        inner.sent = inner.sent.max(generation);
                        inner.last_attempt = Some(sent_at);
                        if std::mem::take(&mut inner.failures) > 0 {
                            info!(lease = %self.name, "observer Lease renewed again");
                        }
                    }
                    self.credit(sent_at, answered_at);
                    return;
                }
                // Someone else wrote it, or it is gone: read it fresh, and try once more
                // unless another process publishes there.
                Err(e) if first && conflict(&e) => {
                    if !self.read_fresh().await {
                        self.attempted(sent_at, Some(generation), &e.to_string());
                        return;
                    }
                }
                Err(e) => {
                    self.attempted(sent_at, Some(generation), &e.to_string());
                    return;
                }
            }
        }
    }

    /// A write failed: retried sooner; said once per episode.
    fn attempted(&self, at: Instant, generation: Option<u64>, why: &str) {
        let mut inner = self.lock();
        inner.last_attempt = Some(at);
        if let Some(g) = generation {
            inner.sent = inner.sent.max(g);
        }
        inner.failures = inner.failures.saturating_add(1);
        if inner.clash || inner.failures > 1 {
            return;
        }
        warn!(
            lease = %self.name,
            namespace = %self.namespace,
            error = %why,
            deadline = %humantime::format_duration(self.timing.renew_deadline),
            "cannot renew the observer Lease: this instance's verdicts age, and the groups \
             it leads stop writing at the renew deadline unless a renewal succeeds first"
        );
    }

    fn credit(&self, sent_at: Instant, answered_at: Instant) {
        if let Some(proof) = self.proof.get() {
            proof.accepted(sent_at, answered_at);
        }
        let members: Vec<Arc<dyn Member>> = {
            let mut inner = self.lock();
            inner.members.retain(|(_, m)| m.strong_count() > 0);
            inner
                .members
                .iter()
                .filter_map(|(_, m)| m.upgrade())
                .collect()
        };
        for m in members {
            m.renewed(sent_at, answered_at);
        }
    }

    /// During a clash: it ends when nobody renewed the Lease for the ttl (read from the
    /// cache when it is current, else from the API).
    async fn check_clash_over(&self) {
        let ttl = self.lock().ttl.as_secs_f64();
        let cached = self.store.read(|m| m.get(&self.name).cloned());
        let lease = match cached {
            Ok(lease) => lease.map(|l| (*l).clone()),
            Err(_) => match bounded(self.timeout, self.api.get_opt(&self.name)).await {
                Ok(lease) => lease,
                Err(_) => return,
            },
        };
        let renewed = lease
            .as_ref()
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref())
            .map(|t| t.0.as_millisecond() as f64 / 1000.0);
        if renewed.is_none_or(|t| self.process.clock().unix() - t > ttl) {
            let mut inner = self.lock();
            inner.clash = false;
            // Read it fresh before the next write.
            inner.exists = None;
            inner.rv = None;
            info!(identity = %self.identity, lease = %self.name, "identity clash over");
        }
    }

    /// At start: refuses when another live process renews this identity's observer
    /// Lease. A Lease renewed recently by a process that is gone (a restart) is waited
    /// out: the clash is only reported when it is renewed again within the ttl. Done
    /// once for every group sharing the Lease; `group` names the first in the error.
    pub async fn check_identity(&self, poll: Duration, group: &str) -> Result<(), IdentityClash> {
        self.identity_checked
            .get_or_init(|| self.check_identity_once(poll, group))
            .await
            .clone()
    }

    async fn check_identity_once(&self, poll: Duration, group: &str) -> Result<(), IdentityClash> {
        let started = self.process.clock().now();
        let ttl = self.lock().ttl;
        let mut first_rv: Option<String> = None;
        let result = loop {
            let lease = match bounded(self.timeout, self.api.get_opt(&self.name)).await {
                Ok(l) => l,
                // Unreadable now: a clash is still caught by the first renewal.
                Err(_) => break Ok(()),
            };
            let Some(lease) = lease else { break Ok(()) };
            if annotation(&lease, INSTANCE_ANNOTATION).map(String::as_str)
                == Some(self.process.instance())
            {
                break Ok(());
            }
            let rv = lease.metadata.resource_version.clone().unwrap_or_default();
            let renewed = lease
                .spec
                .as_ref()
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| t.0.as_millisecond() as f64 / 1000.0);
            let wall_age = renewed.map(|t| self.process.clock().unix() - t);
            if wall_age.is_none_or(|a| a > ttl.as_secs_f64()) && first_rv.is_none() {
                break Ok(());
            }
            match &first_rv {
                None => first_rv = Some(rv),
                Some(seen) if *seen != rv => {
                    break Err(IdentityClash {
                        identity: self.identity.clone(),
                        group: group.to_string(),
                        namespace: self.namespace.clone(),
                        lease: self.name.clone(),
                    });
                }
                Some(_) => {}
            }
            if self.process.clock().now() - started > ttl {
                break Ok(());
            }
            tokio::time::sleep(poll).await;
        };
        // The groups' first ticks read the Leases from the cache: let it list first.
        self.store.wait_started(self.timeout).await;
        result
    }

    /// `group` stops (shutdown). When it is the last one, the renewals stop and the
    /// Lease is withdrawn: its renew time is cleared, so its verdicts no longer count as
    /// fresh and the leader Leases it kept expire (those released meanwhile are taken
    /// at once).
    pub async fn leave(&self, group: &str) {
        let last = {
            let mut inner = self.lock();
            inner.members.retain(|(g, _)| g != group);
            inner.joined = inner.joined.saturating_sub(1);
            inner.joined == 0
        };
        if !last {
            return;
        }
        let _one = self.writing.lock().await;
        let lease = {
            let mut inner = self.lock();
            if let Some(task) = inner.task.take() {
                task.abort();
            }
            inner.withdrawn = true;
            if inner.clash || inner.exists != Some(true) {
                return;
            }
            self.lease(&inner, true)
        };
        if let Err(e) = self.store_lease(lease, false).await {
            tracing::debug!(lease = %self.name, error = %e, "observer Lease not withdrawn");
        }
    }
}

/// `d` less up to a quarter, at random: instances whose writes failed together do not
/// come back together.
fn jittered(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_nanos()),
    );
    let fraction = (h.finish() % 1000) as f64 / 4000.0;
    d.mul_f64(1.0 - fraction)
}

/// Renews `presence` while it lives and is not withdrawn.
async fn renew(presence: Weak<Presence>) {
    loop {
        let wait = match presence.upgrade() {
            Some(p) => p.until_due(p.process.clock().now()),
            None => return,
        };
        tokio::time::sleep(wait).await;
        let Some(p) = presence.upgrade() else { return };
        if p.clash() {
            p.check_clash_over().await;
        } else {
            p.write(Need::Renewal).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coord::clock::Clock;

    const TIMING: LeaderTiming = LeaderTiming {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
    };

    /// Beyond the writes in flight, a leader Lease write waits for one to end, up to half
    /// the call timeout; none at all while the pause after a failed write runs.
    #[tokio::test(start_paused = true)]
    async fn a_leader_write_waits_a_moment_for_a_free_slot_and_none_while_paused() {
        let fake = crate::kube::fake_api::FakeApi::new();
        let config: crate::config::Config = toml::from_str(
            "[[groups]]\nname = \"g\"\nprimary = { namespace = \"p\" }\n\
             standby = { namespace = \"ns\" }\nworkloads = [{ name = \"w\" }]\n",
        )
        .unwrap();
        let process = Coordination::with_clock(&config, Clock::tokio(), Duration::ZERO);
        let presence = Presence::new(
            fake.client(),
            WatchStore::new("Leases in ns"),
            "ns",
            "a",
            (Duration::from_millis(800), TIMING),
            process,
        );
        let now = Instant::now();
        let mut held = Vec::new();
        for _ in 0..LEADER_WRITES_IN_FLIGHT {
            held.push(
                presence
                    .leader_write_permit(now)
                    .await
                    .expect("a free slot"),
            );
        }
        // All taken and none ends: no permit, after waiting 400 ms.
        let asked = tokio::time::Instant::now();
        assert!(presence.leader_write_permit(now).await.is_none());
        assert_eq!(asked.elapsed(), Duration::from_millis(400));
        // One ends 100 ms into the wait: the waiting write goes then.
        let last = held.pop().unwrap();
        let ends = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(last);
        });
        let asked = tokio::time::Instant::now();
        let permit = presence.leader_write_permit(now).await;
        assert!(permit.is_some());
        assert_eq!(asked.elapsed(), Duration::from_millis(100));
        ends.await.unwrap();
        drop((permit, held));
        // A failed write pauses them all, slots free or not: no wait, no permit.
        presence.leader_written(now, true);
        let asked = tokio::time::Instant::now();
        assert!(presence.leader_write_permit(now).await.is_none());
        assert_eq!(asked.elapsed(), Duration::ZERO);
        // A success ends the pause.
        presence.leader_written(now, false);
        assert!(presence.leader_write_permit(now).await.is_some());
    }

    #[test]
    fn names_and_spacing() {
        assert_eq!(
            observer_lease_name("Host_1"),
            "kube-failover.observer.host-1"
        );
        assert!(observer_lease_name(&"a".repeat(400)).len() <= 253);
        assert!(is_observer_lease(&observer_lease_name("x")));
        assert!(!is_observer_lease("kube-failover-env0-observer-x"));
        // The defaults at a 1 s interval: renew deadline 2 s, ttl 3 s → every second.
        assert_eq!(
            renewal_spacing(TIMING, Duration::from_secs(3)),
            Duration::from_secs(1)
        );
        // A short ttl sets the pace; so does a short renew deadline.
        assert_eq!(
            renewal_spacing(TIMING, Duration::from_millis(1500)),
            Duration::from_millis(500)
        );
        let long = LeaderTiming {
            lease_duration: Duration::from_secs(60),
            renew_deadline: Duration::from_secs(40),
        };
        assert_eq!(
            renewal_spacing(long, Duration::from_secs(15)),
            Duration::from_secs(5)
        );
        assert_eq!(
            renewal_spacing(TIMING, Duration::from_millis(30)),
            MIN_SPACING
        );
    }
}

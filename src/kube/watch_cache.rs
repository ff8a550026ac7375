//! Watch-backed object caches: one per cluster, namespace and kind (Deployments, Pods,
//! ConfigMaps, PersistentVolumeClaims; one object of a kind named in the config), shared by every group that reads that namespace, so a tick reads memory
//! instead of listing.
//!
//! Freshness is part of the answer. A store serves its objects only while its watch is
//! established: the initial list (or a relist) completed and no error was seen since.
//! Anything else (starting, relisting, a failed watch or list, a restart) makes
//! [`WatchStore::read`] fail with a reason that is never down evidence, so a signal fed
//! by a cache is `unknown` then: never a stale `ok`, never a stale failure.
//!
//! How a watch is kept, and what it costs (one namespace per group is the usual shape, so
//! a cluster holds hundreds of watches):
//! - a watch lasts: each request asks the API server to end it after a time drawn
//!   between `daemon.watch_timeout` and a fifth more (so the watches of a cluster do not
//!   end together) and asks for bookmarks, which an idle watch receives about once a
//!   minute; it is then resumed from its last resourceVersion, without a list. Unset,
//!   that time is 30 minutes while the cluster's watch connections speak HTTP/2 (each
//!   connection is PINGed, so how long a watch lasts plays no part in noticing a dead
//!   one: one request per watch every 30 to 36 minutes) and 4 minutes over HTTP/1.1
//!   ([`WatchTimeout`]);
//! - a list is made only at the start and when a resumed watch is told its
//!   resourceVersion is too old (410 Gone), never to prove anything;
//! - a stopped or restarted API server closes the connection: the watch's stream ends,
//!   its resumption fails at once and the store is broken within milliseconds;
//! - a connection that dies without a word: the cluster's `/readyz`, asked once per
//!   probe interval, times out as well, which makes that tick's cached signals unknown;
//!   from the third such answer in a row (the cluster handle's `SUSPECT_AFTER`), every
//!   store of the cluster is *unverified* ([`WatchStore::suspect`]) and serves nothing
//!   (its signals are unknown) until its watch has been started again and the API server
//!   answered that request, so the bound that matters for judgement is the probe
//!   timeout. A single late answer (an overloaded server) restarts no watch. The objects
//!   are kept: a watch resumed from the last resourceVersion delivers every change since,
//!   so proving the connection costs one watch request, not a list.
//! - a watch connection that dies alone while `/readyz` keeps passing: over HTTP/2 it is
//!   PINGed after a probe interval of silence and closed when the PING is not answered
//!   within the probe timeout ([`crate::kube::client::Http2`]); its watches end (with an
//!   error, or with the end of stream kube makes of a cut connection) and are resumed on
//!   a new connection like any other. Over HTTP/1.1 it goes silent and is dropped by
//!   the watch client's read timeout ([`crate::kube::client::WATCH_READ_TIMEOUT`]), longer
//!   than the bookmarks' spacing.
//! - an API server that is slow or overloaded is not made slower: no list or watch is
//!   started while the cluster's last `/readyz` said it could not be reached, at most a
//!   few lists and a few watch requests are in flight per cluster at once
//!   ([`Upkeep::starts`], [`Upkeep::watch_starts`]: apart, so a listed store's watch does
//!   not wait behind every other list), and a failure is retried after an exponential
//!   backoff with jitter. The permissions of a watch are
//!   checked when it starts: a revoked grant shows when the watch is resumed next.
//!
use crate::kube::call::{classify, describe};
use crate::model::{Evidence, ProbeReason};
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use kube::Resource;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore, watch};
use tracing::{debug, warn};

/// First delay before a failed list or watch is tried again; doubles (with jitter) up to
/// the cap.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// How long a live store whose watch ended stays live while the watch is resumed (the
/// request waits its turn, then its answer): beyond this it is unverified until the
/// answer comes.
const RESUME_GRACE: Duration = Duration::from_secs(1);

/// Pages of a list.
const LIST_PAGE: u32 = 500;

/// Pages of a cluster-wide list ([`Fanout`]): every object of the kind in the cluster
/// comes through it, most of them dropped; a page is held whole while it is decoded, and
/// the daemon's memory keeps the high-water mark, so smaller pages cost more requests
/// per list and less resident memory (BENCHMARKS.md, "Watch scope").
const FANOUT_LIST_PAGE: u32 = 100;

/// A watch that ends this soon after it started without a word counts as a failure: the
/// next one waits for the backoff rather than following at once.
const SHORT_WATCH: Duration = Duration::from_secs(1);

/// What a store's readers are woken for: counters that only grow, so a reader compares
/// them with the values it saw last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wakes {
    /// How many times the established watch was lost (an error while live).
    pub lost: u64,
    /// When it was lost the last time.
    pub lost_at: Option<Instant>,
    /// How many objects changed or went away while the watch was established.
    pub changed: u64,
}

/// The state of one store's watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// The first list has not completed yet.
    Starting,
    /// A (re)list is under way after the watch was lost or restarted.
    Relisting(String),
    /// Listed and watching: the objects are current.
    Live,
    /// Listed, but the watch's connection must prove itself again (the cluster's
    /// `/readyz` went unanswered): the watch is being resumed.
    Unverified(String),
    /// The last list or watch failed; it is being retried.
    Broken {
        /// The failure's reason code.
        reason: ProbeReason,
        /// A short description (names the kind and namespace, never a secret).
        detail: String,
    },
}

struct Inner<K> {
    objects: BTreeMap<String, Arc<K>>,
    /// Objects of a list in progress, swapped in when it completes.
    pending: Option<BTreeMap<String, Arc<K>>>,
    freshness: Freshness,
    /// A list has completed once: the store has been live.
    listed_once: bool,
}

/// The objects of one kind in one namespace of one cluster, kept current by a watch.
pub struct WatchStore<K> {
    /// `Pods in ns`, for messages.
    what: String,
    inner: RwLock<Inner<K>>,
    /// Bumped on every change of freshness or of the objects, for
    /// [`WatchStore::wait_started`] and [`WatchStore::subscribe`].
    changed: watch::Sender<u64>,
    /// Asks the watch task to drop its watch and start it again.
    recheck: Notify,
    /// Wakes the readers (see [`Wakes`]).
    wakes: watch::Sender<Wakes>,
}

impl<K> WatchStore<K> {
    /// An empty store that has not listed yet; `what` reads like `Pods in ns`.
    pub fn new(what: impl Into<String>) -> Arc<Self> {
        Arc::new(WatchStore {
            what: what.into(),
            inner: RwLock::new(Inner {
                objects: BTreeMap::new(),
                pending: None,
                freshness: Freshness::Starting,
                listed_once: false,
            }),
            changed: watch::channel(0).0,
            recheck: Notify::new(),
            wakes: watch::channel(Wakes::default()).0,
        })
    }

    /// Follows what should wake this store's readers: a lost watch, a changed object.
    pub fn wakes(&self) -> watch::Receiver<Wakes> {
        self.wakes.subscribe()
    }

    /// What the store holds, e.g. `Pods in ns`.
    pub fn what(&self) -> &str {
        &self.what
    }

    fn lock_read(&self) -> std::sync::RwLockReadGuard<'_, Inner<K>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_write(&self) -> std::sync::RwLockWriteGuard<'_, Inner<K>> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The watch's state now.
    pub fn freshness(&self) -> Freshness {
        self.lock_read().freshness.clone()
    }

    /// The first list has not completed yet and nothing on the watcher's side failed
    /// it (no 401, 403, certificate or decoding error: only a list still on its way, or
    /// one that timed out or failed on the server, is retried): what the store serves
    /// is unknown because it was not read yet, not because the watcher is blind.
    pub fn first_list_pending(&self) -> bool {
        let inner = self.lock_read();
        !inner.listed_once
            && match &inner.freshness {
                Freshness::Starting | Freshness::Relisting(_) => true,
                Freshness::Broken { reason, .. } => *reason == ProbeReason::Error,
                Freshness::Live | Freshness::Unverified(_) => false,
            }
    }

    /// Runs `f` on the objects (by name) when the watch is established; otherwise the
    /// reason (never down evidence) and a detail naming the store.
    pub fn read<R>(
        &self,
        f: impl FnOnce(&BTreeMap<String, Arc<K>>) -> R,
    ) -> Result<R, (ProbeReason, String)> {
        let inner = self.lock_read();
        match &inner.freshness {
            Freshness::Live => Ok(f(&inner.objects)),
            Freshness::Starting => Err((
                ProbeReason::Error,
                format!("watch of {} not established yet", self.what),
            )),
            Freshness::Relisting(why) => Err((
                ProbeReason::Error,
                format!("watch of {} relisting ({why})", self.what),
            )),
            Freshness::Unverified(why) => Err((
                ProbeReason::Error,
                format!("watch of {} unverified ({why})", self.what),
            )),
            Freshness::Broken { reason, detail } => Err((*reason, detail.clone())),
        }
    }

    /// A receiver that sees a new value after every change of the objects (an event,
    /// a completed list) or of the freshness: for readers that act on changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A number that grows with every change of the objects or of the freshness (bumped
    /// while the change is being made, under the same lock): a reader that takes the
    /// version before it reads and finds it unchanged later would read the same.
    pub fn version(&self) -> u64 {
        *self.changed.borrow()
    }

    /// Waits up to `bound` while the store has never listed (start-up only).
    pub async fn wait_started(&self, bound: Duration) {
        let mut rx = self.changed.subscribe();
        let started = || !matches!(self.lock_read().freshness, Freshness::Starting);
        if started() {
            return;
        }
        let _ = tokio::time::timeout(bound, async {
            while !started() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// Distrusts the watch's connection: the store serves nothing (its signals are
    /// unknown) until its watch has been started again and answered. Its objects are
    /// kept, since the watch resumes from their resourceVersion. Does nothing while the
    /// store is not live (its watch is being started already).
    pub fn suspect(&self, why: &str) {
        if self.unverified(why) {
            self.recheck.notify_one();
        }
    }

    /// Makes a live store unverified; true if it was live.
    fn unverified(&self, why: &str) -> bool {
        let mut inner = self.lock_write();
        if inner.freshness != Freshness::Live {
            return false;
        }
        self.set_freshness(&mut inner, Freshness::Unverified(why.to_string()));
        true
    }

    /// The API server answered a watch resumed from the objects' resourceVersion: they
    /// are current again (every later change follows on that watch). Does nothing
    /// before the first list, nor during a list.
    fn established(&self) {
        let mut inner = self.lock_write();
        if matches!(
            inner.freshness,
            Freshness::Unverified(_) | Freshness::Broken { .. }
        ) && inner.pending.is_none()
        {
            self.set_freshness(&mut inner, Freshness::Live);
        }
    }

    /// A list starts: the store serves nothing until it completes.
    fn relisting(&self, why: &str) {
        let mut inner = self.lock_write();
        if !matches!(inner.freshness, Freshness::Starting) {
            self.set_freshness(&mut inner, Freshness::Relisting(why.to_string()));
        }
    }

    fn set_freshness(&self, inner: &mut Inner<K>, freshness: Freshness) {
        if inner.freshness != freshness {
            inner.freshness = freshness;
            self.changed.send_modify(|n| *n += 1);
        }
    }
}

impl<K: Resource + 'static> WatchStore<K> {
    /// Applies one watcher event. Returns true when a list completed. A change of an
    /// established store wakes its readers.
    pub fn apply(&self, event: Event<K>) -> bool {
        let live = self.lock_read().freshness == Freshness::Live;
        let change = matches!(event, Event::Apply(_) | Event::Delete(_));
        let listed = self.apply_locked(event);
        if live && change {
            self.wakes.send_modify(|w| w.changed += 1);
        }
        listed
    }

    fn apply_locked(&self, event: Event<K>) -> bool {
        let mut inner = self.lock_write();
        let inner = &mut *inner;
        match event {
            Event::Init => {
                inner.pending = Some(BTreeMap::new());
                false
            }
            Event::InitApply(obj) => {
                if let (Some(pending), Some(name)) = (inner.pending.as_mut(), name_of(&obj)) {
                    pending.insert(name, kept(obj));
                }
                false
            }
            Event::InitDone => {
                inner.objects = inner.pending.take().unwrap_or_default();
                inner.listed_once = true;
                self.set_freshness(inner, Freshness::Live);
                self.changed.send_modify(|n| *n += 1);
                true
            }
            Event::Apply(obj) => {
                if let Some(name) = name_of(&obj) {
                    inner.objects.insert(name, kept(obj));
                    self.changed.send_modify(|n| *n += 1);
                }
                false
            }
            Event::Delete(obj) => {
                if let Some(name) = name_of(&obj) {
                    inner.objects.remove(&name);
                    self.changed.send_modify(|n| *n += 1);
                }
                false
            }
        }
    }

    /// Marks the store broken by `err`: its signals are unknown until its watch is
    /// answered again (or a fresh list completes).
    pub fn fail(&self, err: &watcher::Error) {
        let (reason, text) = describe_watch_error(err);
        // The cache cannot tell whether the workload serves: a refused or timed-out
        // watch is about the connection, and `/readyz` is the probe that judges that.
        let reason = if reason.evidence() == Evidence::Down {
            ProbeReason::Error
        } else {
            reason
        };
        let detail = format!("watch of {} broken: {text}", self.what);
        let mut inner = self.lock_write();
        let was_live = inner.freshness == Freshness::Live;
        inner.pending = None;
        self.set_freshness(&mut inner, Freshness::Broken { reason, detail });
        drop(inner);
        if was_live {
            self.wakes.send_modify(|w| {
                w.lost += 1;
                w.lost_at = Some(Instant::now());
            });
        }
    }
}

/// Where one watch delivers what it hears: one store ([`WatchStore`]), or the stores of
/// every namespace of a cluster-wide watch ([`Fanout`]).
trait Sink<K>: Send + Sync + 'static {
    /// For messages: `Pods in ns`.
    fn what(&self) -> &str;
    /// Whether a listed object is kept (a cluster-wide list keeps the groups' namespaces).
    fn wants(&self, obj: &K) -> bool;
    /// Objects per page of a list.
    fn page(&self) -> u32 {
        LIST_PAGE
    }
    /// A list starts.
    fn relisting(&self, why: &str);
    /// A list completed with these objects.
    fn listed(&self, items: Vec<K>);
    /// An object changed or went away.
    fn deliver(&self, event: Event<K>);
    /// The watch failed; true if it was live.
    fn lost(&self, err: &watcher::Error) -> bool;
    /// The API server answered a resumed watch.
    fn established(&self);
    /// The watch's answer is late: serve nothing until it comes.
    fn unverified(&self, why: &str);
    /// Asks the watch to start again (the cluster's `/readyz` went unanswered).
    fn recheck(&self) -> &Notify;
    /// Resolves when the watch must list again to serve a namespace added since.
    fn added(&self) -> impl Future<Output = ()> + Send;
}

impl<K: Resource + Send + Sync + 'static> Sink<K> for WatchStore<K> {
    fn what(&self) -> &str {
        &self.what
    }

    fn wants(&self, _: &K) -> bool {
        true
    }

    fn relisting(&self, why: &str) {
        WatchStore::relisting(self, why);
    }

    fn listed(&self, items: Vec<K>) {
        self.apply(Event::Init);
        for item in items {
            self.apply(Event::InitApply(item));
        }
        self.apply(Event::InitDone);
    }

    fn deliver(&self, event: Event<K>) {
        self.apply(event);
    }

    fn lost(&self, err: &watcher::Error) -> bool {
        let was_live = self.freshness() == Freshness::Live;
        self.fail(err);
        was_live
    }

    fn established(&self) {
        WatchStore::established(self);
    }

    fn unverified(&self, why: &str) {
        WatchStore::unverified(self, why);
    }

    fn recheck(&self) -> &Notify {
        &self.recheck
    }

    fn added(&self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}

/// The stores of one kind, one per namespace, kept by a single watch across all
/// namespaces of a cluster ([`run_fanout`]): each store serves, fails and wakes exactly
/// as one with a watch of its own, and holds only its namespace's objects (the others
/// are dropped as they arrive). A namespace added after a list makes the watch list
/// again; the stores already live stay live meanwhile.
pub struct Fanout<K> {
    /// `Pods`, for the stores' names.
    kind: String,
    /// `Pods in every namespace`, for messages.
    what: String,
    inner: Mutex<FanoutInner<K>>,
    /// Asks the watch to start again.
    recheck: Notify,
    /// A namespace was added after a list started.
    added: Notify,
    /// The next list is for an added namespace only: the live stores stay live.
    quiet: AtomicBool,
}

struct FanoutInner<K> {
    stores: HashMap<String, Arc<WatchStore<K>>>,
    /// The namespaces the last list started for (none before the first).
    listing: Option<HashSet<String>>,
}

impl<K: Resource + Send + Sync + 'static> Fanout<K> {
    /// No namespace yet; `kind` reads like `Pods`.
    pub fn new(kind: &str) -> Arc<Self> {
        Arc::new(Fanout {
            kind: kind.to_string(),
            what: format!("{kind} in every namespace"),
            inner: Mutex::new(FanoutInner {
                stores: HashMap::new(),
                listing: None,
            }),
            recheck: Notify::new(),
            added: Notify::new(),
            quiet: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FanoutInner<K>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store of `namespace`, served from the next list on (at once when the current
    /// list started with it).
    pub fn store(&self, namespace: &str) -> Arc<WatchStore<K>> {
        let mut inner = self.lock();
        if let Some(s) = inner.stores.get(namespace) {
            return s.clone();
        }
        let store = WatchStore::new(format!("{} in {namespace} (cluster-wide)", self.kind));
        inner.stores.insert(namespace.to_string(), store.clone());
        if inner.listing.is_some() {
            self.quiet.store(true, Ordering::SeqCst);
            self.added.notify_one();
        }
        store
    }

    /// Distrusts the watch's connection (see [`WatchStore::suspect`]) for every store.
    pub fn suspect(&self, why: &str) {
        if self.each(|s| WatchStore::unverified(s, why)) {
            self.recheck.notify_one();
        }
    }

    /// Runs `f` on every store; true if it returned true for any.
    fn each(&self, f: impl Fn(&WatchStore<K>) -> bool) -> bool {
        let stores: Vec<_> = self.lock().stores.values().cloned().collect();
        stores.iter().fold(false, |any, s| f(s) | any)
    }

    fn store_of(&self, obj: &K) -> Option<Arc<WatchStore<K>>> {
        let ns = obj.meta().namespace.as_deref()?;
        self.lock().stores.get(ns).cloned()
    }
}

impl<K: Resource + Send + Sync + 'static> Sink<K> for Fanout<K> {
    fn what(&self) -> &str {
        &self.what
    }

    fn page(&self) -> u32 {
        FANOUT_LIST_PAGE
    }

    fn wants(&self, obj: &K) -> bool {
        let inner = self.lock();
        obj.meta()
            .namespace
            .as_ref()
            .is_some_and(|ns| inner.listing.as_ref().is_some_and(|l| l.contains(ns)))
    }

    fn relisting(&self, why: &str) {
        let mut inner = self.lock();
        inner.listing = Some(inner.stores.keys().cloned().collect());
        let stores: Vec<_> = inner.stores.values().cloned().collect();
        drop(inner);
        if !self.quiet.swap(false, Ordering::SeqCst) {
            for s in stores {
                WatchStore::relisting(&s, why);
            }
        }
    }

    fn listed(&self, items: Vec<K>) {
        let inner = self.lock();
        let listed: HashMap<&String, &Arc<WatchStore<K>>> = inner
            .stores
            .iter()
            .filter(|(ns, _)| inner.listing.as_ref().is_some_and(|l| l.contains(*ns)))
            .collect();
        for s in listed.values() {
            s.apply(Event::Init);
        }
        for item in items {
            let ns = item.meta().namespace.clone();
            if let Some(s) = ns.and_then(|ns| listed.get(&ns)) {
                s.apply(Event::InitApply(item));
            }
        }
        for s in listed.values() {
            s.apply(Event::InitDone);
        }
    }

    fn deliver(&self, event: Event<K>) {
        let store = match &event {
            Event::Apply(obj) | Event::Delete(obj) => self.store_of(obj),
            _ => None,
        };
        if let Some(s) = store {
            s.apply(event);
        }
    }

    fn lost(&self, err: &watcher::Error) -> bool {
        self.each(|s| {
            let was_live = s.freshness() == Freshness::Live;
            s.fail(err);
            was_live
        })
    }

    fn established(&self) {
        self.each(|s| {
            WatchStore::established(s);
            false
        });
    }

    fn unverified(&self, why: &str) {
        self.each(|s| WatchStore::unverified(s, why));
    }

    fn recheck(&self) -> &Notify {
        &self.recheck
    }

    fn added(&self) -> impl Future<Output = ()> + Send {
        self.added.notified()
    }
}

/// An object as the store keeps it: without its managedFields (who set which field,
/// often the larger part of the metadata), which nothing here reads (Pods and
/// Deployments are kept as [`crate::kube::kept`] types, slimmer still as they are
/// decoded). Nothing writes a cached object back: writes read the object afresh or
/// patch it.
fn kept<K: Resource>(mut obj: K) -> Arc<K> {
    obj.meta_mut().managed_fields = None;
    Arc::new(obj)
}

fn name_of<K: Resource>(obj: &K) -> Option<String> {
    obj.meta().name.clone()
}

/// The reason and a secret-free description of a watcher error.
fn describe_watch_error(err: &watcher::Error) -> (ProbeReason, String) {
    match err {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => (classify(e), describe(e)),
        watcher::Error::WatchError(status) => {
            let e = kube::Error::Api(status.clone());
            (classify(&e), describe(&e))
        }
        watcher::Error::NoResourceVersion => (
            ProbeReason::Decode,
            "the API server sent no resourceVersion".to_string(),
        ),
        #[allow(unreachable_patterns)]
        _ => (ProbeReason::Error, "watch failed".to_string()),
    }
}

/// How long a cluster's watch requests last before the API server ends them: the least
/// of the time drawn for one request (see [`watch_seconds`]).
#[derive(Debug, Clone, Default)]
pub struct WatchTimeout {
    /// `daemon.watch_timeout`: when set, every watch request lasts this, whatever the
    /// protocol.
    pub configured: Option<Duration>,
    /// Whether the last answer to the cluster's watch client came over HTTP/2 (set by
    /// the client itself, see `crate::kube::cluster`): its connections are PINGed then.
    pub http2: Arc<AtomicBool>,
}

impl WatchTimeout {
    /// The least time the next watch request lasts: the configured one, or
    /// [`crate::config::DEFAULT_WATCH_TIMEOUT`] over HTTP/2 and
    /// [`crate::config::DEFAULT_WATCH_TIMEOUT_HTTP1`] otherwise (before any answer too).
    pub fn least(&self) -> Duration {
        self.configured
            .unwrap_or(if self.http2.load(Ordering::Relaxed) {
                crate::config::DEFAULT_WATCH_TIMEOUT
            } else {
                crate::config::DEFAULT_WATCH_TIMEOUT_HTTP1
            })
    }
}

/// What the stores of one cluster share to keep their watches: bounds, the cluster's
/// reachability and a limit on requests in flight.
#[derive(Clone)]
pub struct Upkeep {
    /// How long each watch request lasts (see the module documentation).
    pub watch_timeout: WatchTimeout,
    /// Bound on one list page and on the answer to a watch request.
    pub start_timeout: Duration,
    /// Longest delay between two attempts while failures repeat.
    pub max_backoff: Duration,
    /// False while the cluster's last `/readyz` said the API server cannot be reached:
    /// nothing is listed or started then.
    pub reachable: watch::Receiver<bool>,
    /// Lists of the cluster waiting for their answer (a page each), at most.
    pub starts: Arc<Semaphore>,
    /// Watch requests of the cluster waiting for their answer, at most: apart from the
    /// lists, so a store that has just listed (or whose watch ended) does not queue
    /// behind the lists of hundreds of namespaces starting together, which would leave
    /// it unverified for as long (no event reaches it meanwhile).
    pub watch_starts: Arc<Semaphore>,
}

impl Upkeep {
    fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        ExponentialBuilder::default()
            .with_min_delay(FIRST_BACKOFF.min(self.max_backoff))
            .with_max_delay(self.max_backoff)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Waits while the cluster is unreachable (returns at once when it is not).
    async fn wait_reachable(&mut self) {
        let _ = self.reachable.wait_for(|up| *up).await;
    }
}

/// Which objects a store holds: all of a kind in a namespace, or those matching
/// selectors.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// A label selector.
    pub labels: Option<String>,
    /// A field selector (an object's name, say).
    pub fields: Option<String>,
}

/// A timeout as kube reports a failed call, for the store's description.
fn timed_out(what: &str) -> kube::Error {
    kube::Error::Service(Box::new(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} not answered in time"),
    )))
}

/// Lists every page; returns the objects `keep` accepts and the list's resourceVersion.
async fn list_all<K>(
    api: &Api<K>,
    selection: &Selection,
    upkeep: &Upkeep,
    page: u32,
    keep: impl Fn(&K) -> bool,
) -> Result<(Vec<K>, String), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let mut params = ListParams::default().limit(page);
    params.label_selector = selection.labels.clone();
    params.field_selector = selection.fields.clone();
    let mut items = Vec::new();
    loop {
        let page = {
            let _permit = upkeep.starts.acquire().await;
            tokio::time::timeout(upkeep.start_timeout, api.list(&params))
                .await
                .map_err(|_| timed_out("list"))??
        };
        items.extend(page.items.into_iter().filter(|o| keep(o)));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(next) => params = params.continue_token(&next),
            None => {
                let version = page.metadata.resource_version.unwrap_or_default();
                if version.is_empty() {
                    return Err(kube::Error::Service(Box::new(std::io::Error::other(
                        "the list carried no resourceVersion",
                    ))));
                }
                return Ok((items, version));
            }
        }
    }
}

fn version_of<K: Resource>(obj: &K) -> Option<String> {
    obj.meta().resource_version.clone()
}

/// How one watch request ended.
enum Ended {
    /// Ended by the server (its timeout) or by silence: resume it.
    Resume,
    /// Ended too soon without a word, or failed: resume after the backoff.
    Retry,
    /// Its resourceVersion is too old: list again.
    Relist,
    /// The store was suspected: start it again to prove the connection.
    Recheck,
}

/// Keeps `store` current from `api` until the task is aborted: lists, then watches
/// from the list's resourceVersion and resumes each watch from the last one seen; lists
/// again only when that version is too old. See the module documentation for the
/// bounds.
pub fn run<K>(
    store: Arc<WatchStore<K>>,
    api: Api<K>,
    selection: Selection,
    upkeep: Upkeep,
) -> impl Future<Output = ()> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    keep(store, api, selection, upkeep)
}

/// As [`run`], for the stores of every namespace `fanout` holds, from one watch across
/// all namespaces (`api` is [`Api::all`]); lists again when a namespace is added after
/// a list.
pub fn run_fanout<K>(
    fanout: Arc<Fanout<K>>,
    api: Api<K>,
    selection: Selection,
    upkeep: Upkeep,
) -> impl Future<Output = ()> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    keep(fanout, api, selection, upkeep)
}

// `run` and `run_fanout` are plain functions returning this future, not async functions
// awaiting it: an async wrapper keeps its own copy of the arguments beside the inner
// future's, in every one of the hundreds of watch tasks.
async fn keep<K, S>(store: Arc<S>, api: Api<K>, selection: Selection, mut upkeep: Upkeep)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    S: Sink<K>,
{
    let mut backoff = upkeep.backoff();
    let mut version: Option<String> = None;
    loop {
        upkeep.wait_reachable().await;
        let from = match version.take() {
            Some(v) => v,
            None => {
                store.relisting("listing");
                let list = list_all(&api, &selection, &upkeep, store.page(), |o| store.wants(o));
                match Box::pin(list).await {
                    Ok((items, v)) => {
                        store.listed(items);
                        debug!(store = %store.what(), "watch listed");
                        v
                    }
                    Err(err) => {
                        store.lost(&watcher::Error::InitialListFailed(err));
                        tokio::time::sleep(backoff.next().unwrap_or(upkeep.max_backoff)).await;
                        continue;
                    }
                }
            }
        };
        version = Some(from.clone());
        match watch_once(&*store, &api, &selection, &upkeep, &from, &mut version).await {
            Ended::Resume => {}
            Ended::Retry => {
                tokio::time::sleep(backoff.next().unwrap_or(upkeep.max_backoff)).await;
                continue;
            }
            Ended::Relist => version = None,
            Ended::Recheck => {
                // Spread the stores of a cluster suspected together over a moment.
                let spread = upkeep.max_backoff.min(Duration::from_secs(1));
                tokio::time::sleep(spread.mul_f64(fastrand::f64())).await;
            }
        }
        backoff = upkeep.backoff();
    }
}

/// One watch request from `from`, followed until it ends; `version` follows the
/// events.
async fn watch_once<K, S>(
    store: &S,
    api: &Api<K>,
    selection: &Selection,
    upkeep: &Upkeep,
    from: &str,
    version: &mut Option<String>,
) -> Ended
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    S: Sink<K>,
{
    // Bookmarks are on by default.
    let mut params = WatchParams::default().timeout(watch_seconds(upkeep.watch_timeout.least()));
    params.label_selector = selection.labels.clone();
    params.field_selector = selection.fields.clone();
    let started = Instant::now();
    let mut start = Box::pin(async {
        let _permit = upkeep.watch_starts.acquire().await;
        tokio::time::timeout(upkeep.start_timeout, watch_events(api, &params, from)).await
    });
    // A live store whose watch ended stays live while it is resumed, but not for long:
    // no event can reach it meanwhile.
    let answer = match tokio::time::timeout(RESUME_GRACE, &mut start).await {
        Ok(answer) => answer,
        Err(_) => {
            store.unverified("its watch is being resumed");
            start.await
        }
    };
    let stream = match answer {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return lost(store, watcher::Error::WatchStartFailed(err)),
        Err(_) => {
            return lost(
                store,
                watcher::Error::WatchStartFailed(timed_out("watch request")),
            );
        }
    };
    // The API server answered this watch: the objects plus what follows are current.
    store.established();
    let mut stream = Box::pin(stream);
    let mut heard = false;
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(WatchEvent::Added(obj) | WatchEvent::Modified(obj))) => {
                    heard = true;
                    *version = version_of(&obj).or(version.take());
                    store.deliver(Event::Apply(obj));
                }
                Some(Ok(WatchEvent::Deleted(obj))) => {
                    heard = true;
                    *version = version_of(&obj).or(version.take());
                    store.deliver(Event::Delete(obj));
                }
                Some(Ok(WatchEvent::Bookmark(mark))) => {
                    heard = true;
                    *version = Some(mark.metadata.resource_version);
                }
                Some(Ok(WatchEvent::Error(status))) if status.code == 410 => {
                    debug!(store = %store.what(), "watch resourceVersion expired; listing again");
                    return Ended::Relist;
                }
                Some(Ok(WatchEvent::Error(status))) => {
                    return lost(store, watcher::Error::WatchError(status));
                }
                Some(Err(err)) => return lost(store, watcher::Error::WatchFailed(err)),
                None if !heard && started.elapsed() < SHORT_WATCH => return Ended::Retry,
                None => return Ended::Resume,
            },
            _ = store.recheck().notified() => {
                debug!(store = %store.what(), "watch started again: the API server did not answer /readyz");
                return Ended::Recheck;
            }
            _ = store.added() => {
                debug!(store = %store.what(), "a namespace was added; listing again");
                return Ended::Relist;
            }
        }
    }
}

/// A watch request's `timeoutSeconds`: between `least` (at least 1 s) and a fifth more,
/// drawn so that watches started together do not end together. kube-apiserver ends a
/// watch after what the request asks, however long, and sends its bookmarks about once
/// a minute meanwhile.
fn watch_seconds(least: Duration) -> u32 {
    let lo = u32::try_from(least.as_secs())
        .unwrap_or(u32::MAX / 2)
        .max(1);
    let hi = lo.saturating_add(lo / 5);
    fastrand::u32(lo..=hi)
}

/// The events of one watch request, as `Api::watch` gives them (the same request, the same
/// errors, the same end of stream), read through a line buffer that holds memory only
/// while an event is incomplete. kube's own reader keeps a buffer of 8 KiB per watch for
/// the watch's whole life: with hundreds of namespaces, several watches each, that was
/// the largest part of the daemon's heap (BENCHMARKS.md, "Memory").
async fn watch_events<K>(
    api: &Api<K>,
    params: &WatchParams,
    from: &str,
) -> Result<impl futures::Stream<Item = Result<WatchEvent<K>, kube::Error>> + use<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned,
{
    let mut request = kube::core::Request::new(api.resource_url())
        .watch(params, from)
        .map_err(kube::Error::BuildRequest)?;
    request.extensions_mut().insert("watch");
    // Uncompressed, as kube asks for its watches.
    request.headers_mut().insert(
        http::header::ACCEPT_ENCODING,
        http::HeaderValue::from_static("identity"),
    );
    let client = api.clone().into_client();
    let response = client.send(request.map(kube::client::Body::from)).await?;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        return Err(refusal(status, response.into_body()).await);
    }
    let lines = Lines {
        body: http_body_util::BodyExt::into_data_stream(response.into_body()),
        buffer: Vec::new(),
        ended: false,
    };
    Ok(futures::stream::unfold(lines, |mut lines| async move {
        let event = lines.next_event::<K>().await?;
        Some((event, lines))
    }))
}

/// An API server's refusal of a watch request, as kube reports it.
async fn refusal(status: http::StatusCode, body: kube::client::Body) -> kube::Error {
    let text = match http_body_util::BodyExt::collect(body).await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        Err(err) => return err,
    };
    match serde_json::from_str::<kube::core::Status>(&text) {
        Ok(parsed) => kube::Error::Api(Box::new(parsed)),
        Err(_) => kube::Error::Api(Box::new(
            kube::core::Status::failure(text.trim(), "Failed to parse error data")
                .with_code(status.as_u16()),
        )),
    }
}

/// A watch response's body cut into lines, one event each.
struct Lines<S> {
    body: S,
    /// The start of an event whose end has not come yet; empty (no memory) between
    /// events.
    buffer: Vec<u8>,
    ended: bool,
}

impl<S> Lines<S>
where
    S: futures::Stream<Item = Result<bytes::Bytes, kube::Error>> + Unpin,
{
    /// The next event, `None` at the end of the stream. A connection cut in the middle
    /// of the body (an unexpected EOF) ends the stream, so the watch is resumed; any
    /// other read error is the last item.
    async fn next_event<K: DeserializeOwned>(
        &mut self,
    ) -> Option<Result<WatchEvent<K>, kube::Error>> {
        loop {
            if let Some(at) = self.buffer.iter().position(|b| *b == b'\n') {
                let event = parse_event(&self.buffer[..at]);
                self.buffer.drain(..=at);
                if self.buffer.is_empty() {
                    self.buffer = Vec::new();
                }
                match event {
                    Some(event) => return Some(event),
                    None => continue,
                }
            }
            if self.ended {
                let rest = std::mem::take(&mut self.buffer);
                return (!rest.is_empty()).then(|| parse_event(&rest)).flatten();
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                Some(Err(err)) if unexpected_eof(&err) => self.ended = true,
                Some(Err(err)) => {
                    self.ended = true;
                    self.buffer = Vec::new();
                    return Some(Err(kube::Error::ReadEvents(std::io::Error::other(err))));
                }
                None => self.ended = true,
            }
        }
    }
}

/// One line of a watch response: an event, an error status, or nothing (an incomplete
/// line at the end of a cut stream, or an empty one).
fn parse_event<K: DeserializeOwned>(line: &[u8]) -> Option<Result<WatchEvent<K>, kube::Error>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    match serde_json::from_slice::<WatchEvent<K>>(line) {
        Ok(event) => Some(Ok(event)),
        Err(err) if err.is_eof() => None,
        Err(err) => Some(Err(
            match serde_json::from_slice::<kube::core::Status>(line) {
                Ok(status) => kube::Error::Api(Box::new(status)),
                Err(_) => kube::Error::SerdeError(err),
            },
        )),
    }
}

/// Whether a read error is a connection closed in the middle of the body (as kube tells
/// them: an `UnexpectedEof` anywhere in the chain, or a chunk decoder's "unexpected EOF
/// during chunk").
fn unexpected_eof(err: &kube::Error) -> bool {
    if err.to_string().contains("unexpected EOF during chunk") {
        return true;
    }
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    for _ in 0..16 {
        let Some(e) = current else { return false };
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::UnexpectedEof
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// Marks the store broken by `err` (logging when it was live) and retries.
fn lost<K: Resource, S: Sink<K>>(store: &S, err: watcher::Error) -> Ended {
    if store.lost(&err) {
        warn!(store = %store.what(), error = %describe_watch_error(&err).1, "watch lost; starting it again");
    }
    Ended::Retry
}

/// A Deployment and one of its Pods as a cluster serves them, with what the caches drop
/// (tests here and beside the caches' readers).
#[cfg(test)]
pub(crate) fn served_json() -> (serde_json::Value, serde_json::Value) {
    let deployment = serde_json::json!({
        "metadata": {"name": "env0-agent-trigger-deployment", "namespace": "ns",
        "uid": "u1", "resourceVersion": "7",
        "labels": {"env0": "agent-trigger"},
        "annotations": {"kube-failover/epoch": "3",
            "kubectl.kubernetes.io/last-applied-configuration": "{...}"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"env0": "agent-trigger"}},
        "template": {"metadata": {"labels": {"env0": "agent-trigger"}},
            "spec": {
            "containers": [{"name": "trigger", "image": "env0/agent:1",
                "command": ["/bin/agent"], "args": ["--trigger"],
                "env": [{"name": "A", "value": "1"},
                {"name": "S", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": "agent-config"}}],
                "resources": {"requests": {"cpu": "100m"}},
                "ports": [{"containerPort": 8080}],
                "livenessProbe": {"httpGet": {"path": "/", "port": 8080}},
                "volumeMounts": [{"name": "state", "mountPath": "/state"}]}],
            "initContainers": [{"name": "init", "image": "busybox"}],
            "volumes": [{"name": "state", "persistentVolumeClaim": {"claimName": "env0-state-volume-claim"}},
                {"name": "cfg", "configMap": {"name": "agent-config"}}],
            "tolerations": [{"key": "k", "operator": "Exists"}]}}},
        "status": {"availableReplicas": 1, "replicas": 1}
    });
    let pod = serde_json::json!({
        "metadata": {"name": "trigger-abc", "namespace": "ns",
        "labels": {"env0": "agent-trigger"}},
        "spec": {"containers": [{"name": "trigger", "image": "env0/agent:1",
        "command": ["/bin/agent"]}], "nodeName": "n1",
        "tolerations": [{"key": "k", "operator": "Exists"}]},
        "status": {"phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"},
            {"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [{"name": "trigger", "image": "env0/agent:1",
            "imageID": "docker.io/env0/agent@sha256:abc", "ready": true,
            "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}
    });
    (deployment, pod)
}

/// The Deployment and Pod of [`served_json`] as a cache keeps them.
#[cfg(test)]
pub(crate) fn served() -> (
    Arc<crate::kube::kept::KeptDeployment>,
    Arc<crate::kube::kept::KeptPod>,
) {
    let (deployment, pod) = served_json();
    (
        kept(serde_json::from_value(deployment).unwrap()),
        kept(serde_json::from_value(pod).unwrap()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    fn names(store: &WatchStore<ConfigMap>) -> Result<Vec<String>, (ProbeReason, String)> {
        store.read(|m| m.keys().cloned().collect())
    }

    #[test]
    fn serves_only_once_listed_and_follows_events() {
        let s = WatchStore::<ConfigMap>::new("ConfigMaps in ns");
        let (reason, detail) = names(&s).unwrap_err();
        assert_eq!(reason, ProbeReason::Error);
        assert_eq!(detail, "watch of ConfigMaps in ns not established yet");
        s.apply(Event::Init);
        s.apply(Event::InitApply(cm("a")));
        assert!(names(&s).is_err(), "a list in progress serves nothing");
        assert!(s.apply(Event::InitDone));
        assert_eq!(names(&s).unwrap(), ["a"]);
        s.apply(Event::Apply(cm("b")));
        s.apply(Event::Delete(cm("a")));
        assert_eq!(names(&s).unwrap(), ["b"]);
    }

    #[test]
    fn objects_are_kept_without_managed_fields_and_every_change_bumps_the_version() {
        let s = WatchStore::<ConfigMap>::new("ConfigMaps in ns");
        let with_fields = |name: &str| {
            let mut c = cm(name);
            c.metadata.managed_fields = Some(vec![Default::default()]);
            c.metadata.labels = Some([("app".to_string(), "x".to_string())].into());
            c
        };
        let mut seen = vec![s.version()];
        let mut bumped = |s: &WatchStore<ConfigMap>| {
            let v = s.version();
            assert!(v > *seen.last().unwrap(), "{seen:?} then {v}");
            seen.push(v);
        };
        s.apply(Event::Init);
        s.apply(Event::InitApply(with_fields("a")));
        s.apply(Event::InitDone);
        bumped(&s);
        s.apply(Event::Apply(with_fields("b")));
        bumped(&s);
        s.apply(Event::Delete(cm("a")));
        bumped(&s);
        s.suspect("test");
        bumped(&s);
        let kept = s.read(|m| m.clone()).unwrap_err();
        assert!(kept.1.contains("unverified"));
        s.apply(Event::Init);
        s.apply(Event::InitApply(with_fields("b")));
        s.apply(Event::InitDone);
        bumped(&s);
        let b = s.read(|m| m["b"].clone()).unwrap();
        assert_eq!(b.metadata.managed_fields, None);
        assert_eq!(b.metadata.labels.as_ref().map(|l| l.len()), Some(1));
    }

    fn cm_in(ns: &str, name: &str) -> ConfigMap {
        let mut c = cm(name);
        c.metadata.namespace = Some(ns.to_string());
        c
    }

    #[test]
    fn a_cluster_wide_watch_serves_each_namespace_its_own_objects_and_nothing_else() {
        let f = Fanout::<ConfigMap>::new("ConfigMaps");
        let a = f.store("a");
        let b = f.store("b");
        assert!(Arc::ptr_eq(&a, &f.store("a")), "one store per namespace");
        assert_eq!(a.what(), "ConfigMaps in a (cluster-wide)");
        Sink::relisting(&*f, "listing");
        assert!(f.wants(&cm_in("a", "x")) && f.wants(&cm_in("b", "y")));
        assert!(
            !f.wants(&cm_in("other", "z")),
            "another namespace is dropped"
        );
        f.listed(vec![cm_in("a", "x"), cm_in("b", "y"), cm_in("other", "z")]);
        assert_eq!(names(&a).unwrap(), ["x"]);
        assert_eq!(names(&b).unwrap(), ["y"]);
        let wakes = b.wakes();
        f.deliver(Event::Apply(cm_in("b", "y2")));
        f.deliver(Event::Apply(cm_in("other", "z2")));
        f.deliver(Event::Delete(cm_in("a", "x")));
        assert_eq!(names(&a).unwrap(), Vec::<String>::new());
        assert_eq!(names(&b).unwrap(), ["y", "y2"]);
        assert_eq!(wakes.borrow().changed, 1, "only b's change wakes b");

        // A failed watch breaks every namespace's store (unknown, never down); the answer
        // to the resumed watch makes them all live again.
        let refused = watcher::Error::WatchFailed(kube::Error::Service(Box::new(
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"),
        )));
        assert!(f.lost(&refused));
        for s in [&a, &b] {
            let (reason, detail) = names(s).unwrap_err();
            assert_eq!(reason.evidence(), Evidence::Unknown);
            assert!(detail.contains("broken"), "{detail}");
        }
        assert!(!f.lost(&refused), "already broken");
        Sink::established(&*f);
        assert_eq!(names(&b).unwrap(), ["y", "y2"]);

        // Suspected on a late /readyz: every store unverified, the watch asked to start
        // again.
        f.suspect("test");
        assert!(names(&a).unwrap_err().1.contains("unverified"));
        assert!(names(&b).unwrap_err().1.contains("unverified"));
    }

    #[tokio::test]
    async fn a_namespace_added_after_a_list_is_listed_again_while_the_others_stay_live() {
        let f = Fanout::<ConfigMap>::new("ConfigMaps");
        let a = f.store("a");
        // Before the first list: the list covers it, no second one.
        let early = tokio::time::timeout(Duration::from_millis(20), f.added()).await;
        assert!(early.is_err(), "no relist asked before the first list");
        Sink::relisting(&*f, "listing");
        // Added while the list is on its way: its objects are not kept by that list.
        let b = f.store("b");
        assert!(!f.wants(&cm_in("b", "y")));
        f.listed(vec![cm_in("a", "x"), cm_in("b", "y")]);
        assert_eq!(names(&a).unwrap(), ["x"]);
        assert!(
            names(&b).unwrap_err().1.contains("not established"),
            "b is not served from a list that did not hold it"
        );
        // The watch is told to list again; the live store stays live meanwhile.
        tokio::time::timeout(Duration::from_secs(1), f.added())
            .await
            .expect("a relist is asked");
        Sink::relisting(&*f, "listing");
        assert_eq!(names(&a).unwrap(), ["x"], "a stays live during b's list");
        assert!(f.wants(&cm_in("b", "y")));
        f.listed(vec![cm_in("a", "x"), cm_in("b", "y")]);
        assert_eq!(names(&b).unwrap(), ["y"]);
        // A relist for any other reason (410 Gone) serves nothing until it completes.
        Sink::relisting(&*f, "listing");
        assert!(names(&a).unwrap_err().1.contains("relisting"));
    }

    #[test]
    fn watch_requests_last_between_the_timeout_and_a_fifth_more() {
        for _ in 0..200 {
            assert!((240..=288).contains(&watch_seconds(Duration::from_secs(240))));
            assert!((5..=6).contains(&watch_seconds(Duration::from_secs(5))));
            assert!((1_800..=2_160).contains(&watch_seconds(Duration::from_secs(1_800))));
        }
        assert_eq!(watch_seconds(Duration::from_millis(10)), 1);
    }

    #[test]
    fn watches_last_thirty_minutes_over_http2_four_over_http1_or_what_is_configured() {
        let t = WatchTimeout::default();
        assert_eq!(t.least(), Duration::from_secs(240), "before any answer");
        t.http2.store(true, Ordering::Relaxed);
        assert_eq!(t.least(), Duration::from_secs(1_800));
        t.http2.store(false, Ordering::Relaxed);
        assert_eq!(t.least(), Duration::from_secs(240));
        let set = WatchTimeout {
            configured: Some(Duration::from_secs(5)),
            http2: Arc::new(AtomicBool::new(true)),
        };
        assert_eq!(set.least(), Duration::from_secs(5));
    }

    fn chunks(
        parts: Vec<Result<&'static str, kube::Error>>,
    ) -> Lines<impl futures::Stream<Item = Result<bytes::Bytes, kube::Error>> + Unpin> {
        Lines {
            body: futures::stream::iter(
                parts
                    .into_iter()
                    .map(|p| p.map(|s| bytes::Bytes::from_static(s.as_bytes())))
                    .collect::<Vec<_>>(),
            ),
            buffer: Vec::new(),
            ended: false,
        }
    }

    const ADDED_A: &str = r#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","resourceVersion":"1"}}}"#;
    const BOOKMARK: &str = r#"{"type":"BOOKMARK","object":{"apiVersion":"v1","kind":"ConfigMap","metadata":{"resourceVersion":"7"}}}"#;

    #[tokio::test]
    async fn watch_lines_hold_no_buffer_between_events_however_the_body_is_cut() {
        let (a1, a2) = ADDED_A.split_at(40);
        let a2 = Box::leak(format!("{a2}\n").into_boxed_str());
        let bookmark = Box::leak(format!("{BOOKMARK}\n").into_boxed_str());
        let two = Box::leak(format!("{ADDED_A}\n\n{BOOKMARK}\n").into_boxed_str());
        let mut lines = chunks(vec![Ok(a1), Ok(a2), Ok(bookmark), Ok(two)]);
        let mut seen = Vec::new();
        while let Some(event) = lines.next_event::<ConfigMap>().await {
            match event.unwrap() {
                WatchEvent::Added(cm) => seen.push(cm.metadata.name.unwrap()),
                WatchEvent::Bookmark(b) => seen.push(b.metadata.resource_version),
                other => panic!("{other:?}"),
            }
            // Nothing incomplete left, nothing held: a quiet watch costs no buffer (kube's
            // reader keeps 8 KiB each).
            if lines.buffer.is_empty() {
                assert_eq!(lines.buffer.capacity(), 0, "after {seen:?}");
            }
        }
        assert_eq!(seen, ["a", "7", "a", "7"]);
        assert_eq!(lines.buffer.capacity(), 0);
    }

    #[tokio::test]
    async fn a_cut_body_ends_the_watch_other_read_errors_fail_it_and_error_lines_are_errors() {
        let eof = || {
            kube::Error::Service(Box::new(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            )))
        };
        let half = &ADDED_A[..30];
        let mut lines = chunks(vec![Ok(half), Err(eof()), Ok("never read\n")]);
        assert!(
            lines.next_event::<ConfigMap>().await.is_none(),
            "cut: resumed"
        );

        let reset = kube::Error::Service(Box::new(std::io::Error::other("PING not answered")));
        let mut lines = chunks(vec![Err(reset)]);
        let err = lines.next_event::<ConfigMap>().await.unwrap().unwrap_err();
        assert!(matches!(err, kube::Error::ReadEvents(_)), "{err:?}");
        assert!(lines.next_event::<ConfigMap>().await.is_none());

        let gone = r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old","reason":"Expired","code":410}}"#;
        let not_json = "<html>bad gateway</html>\n";
        let text = Box::leak(format!("{gone}\n{not_json}").into_boxed_str());
        let mut lines = chunks(vec![Ok(text)]);
        match lines.next_event::<ConfigMap>().await.unwrap().unwrap() {
            WatchEvent::Error(status) => assert_eq!(status.code, 410),
            other => panic!("{other:?}"),
        }
        let err = lines.next_event::<ConfigMap>().await.unwrap().unwrap_err();
        assert!(matches!(err, kube::Error::SerdeError(_)), "{err:?}");
    }

    #[test]
    fn a_relist_replaces_everything() {
        let s = WatchStore::<ConfigMap>::new("ConfigMaps in ns");
        s.apply(Event::Init);
        s.apply(Event::InitApply(cm("old")));
        s.apply(Event::InitDone);
        s.relisting("test");
        let (_, detail) = names(&s).unwrap_err();
        assert_eq!(detail, "watch of ConfigMaps in ns relisting (test)");
        s.apply(Event::Init);
        s.apply(Event::InitApply(cm("new")));
        s.apply(Event::InitDone);
        assert_eq!(names(&s).unwrap(), ["new"]);
    }

    #[test]
    fn a_broken_watch_is_unknown_never_down() {
        let s = WatchStore::<ConfigMap>::new("Pods in ns");
        s.apply(Event::Init);
        s.apply(Event::InitDone);
        let refused = kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        )));
        s.fail(&watcher::Error::WatchFailed(refused));
        let (reason, detail) = names(&s).unwrap_err();
        assert_eq!(reason.evidence(), Evidence::Unknown, "{reason:?}");
        assert!(
            detail.starts_with("watch of Pods in ns broken: "),
            "{detail}"
        );

        let forbidden = kube::Error::Api(
            kube::core::Status::failure("pods is forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        s.fail(&watcher::Error::InitialListFailed(forbidden));
        assert_eq!(names(&s).unwrap_err().0, ProbeReason::Forbidden);
    }

    #[test]
    fn a_first_list_is_pending_until_it_completes_unless_the_watcher_is_refused() {
        let s = WatchStore::<ConfigMap>::new("ConfigMaps in ns");
        assert!(s.first_list_pending(), "not listed yet");
        s.fail(&watcher::Error::InitialListFailed(timed_out("list")));
        assert!(
            s.first_list_pending(),
            "a list that timed out is tried again"
        );
        s.relisting("listing");
        assert!(s.first_list_pending());
        s.apply(Event::Init);
        s.apply(Event::InitDone);
        assert!(!s.first_list_pending());
        // Listed once: a watch lost later is not a pending first list.
        s.fail(&watcher::Error::WatchFailed(timed_out("watch")));
        assert!(names(&s).is_err());
        assert!(!s.first_list_pending());

        let refused = WatchStore::<ConfigMap>::new("ConfigMaps in ns");
        let forbidden = kube::Error::Api(
            kube::core::Status::failure("configmaps is forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        );
        refused.fail(&watcher::Error::InitialListFailed(forbidden));
        assert!(
            !refused.first_list_pending(),
            "403 is the watcher's own problem"
        );
    }

    #[test]
    fn readers_are_woken_by_changes_and_a_lost_watch_not_by_lists_or_suspicion() {
        let s = WatchStore::<ConfigMap>::new("Pods in ns");
        let rx = s.wakes();
        s.apply(Event::Init);
        s.apply(Event::InitApply(cm("a")));
        s.apply(Event::InitDone);
        assert_eq!(*rx.borrow(), Wakes::default(), "a list wakes nobody");
        s.apply(Event::Apply(cm("a")));
        s.apply(Event::Delete(cm("a")));
        assert_eq!(rx.borrow().changed, 2);
        // Suspected on a failing /readyz: that answer was already seen.
        s.suspect("test");
        assert_eq!(rx.borrow().lost, 0);
        s.apply(Event::Init);
        s.apply(Event::InitDone);
        let refused = || {
            watcher::Error::WatchFailed(kube::Error::Service(Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionRefused,
                "connection refused",
            ))))
        };
        s.fail(&refused());
        let w = *rx.borrow();
        assert_eq!(w.lost, 1);
        assert!(w.lost_at.is_some());
        // Retries failing while it is already down are the same loss.
        s.fail(&refused());
        assert_eq!(rx.borrow().lost, 1);
        assert_eq!(rx.borrow().changed, 2);
    }
}

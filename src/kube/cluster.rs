//! What the daemon holds per distinct cluster, shared by every group on it: one
//! `kube::Client` (one set of connections and credentials), one `/readyz` answer per
//! probe interval, and the watch-backed caches of the namespaces its groups read
//! ([`crate::kube::watch_cache`]).
//!
//! The `/readyz` slots start at a fixed epoch and move to an event: a group that must
//! see an answer sent after some instant (its watch was lost then, or it would otherwise
//! count the answer of its previous tick again) gets a fresh request, and the slots of
//! every group on the cluster start again from that request, one interval apart.
//!
//! A cluster is a kubeconfig file and context after resolution (or the in-cluster
//! service account): two groups naming the same ones share everything here.

use crate::config::{ClusterConfig, WatchScope};
use crate::kube::client::{self, ClientOptions, ClusterError};
use crate::kube::kept::{KeptDeployment, KeptPod};
use crate::kube::watch_cache::{self, Fanout, WatchStore};
use crate::model::{ProbeOutcome, ProbeReason, Side};
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret};
use kube::api::{Api, ApiResource, DynamicObject};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinHandle;

/// The key that makes two cluster configs the same cluster.
fn cluster_key(cluster: &ClusterConfig) -> Option<String> {
    match client::resolve_kubeconfig(cluster) {
        Ok(Some(resolved)) => Some(format!("{}\n{}", resolved.source, resolved.context)),
        Ok(None) => Some("in-cluster".to_string()),
        Err(_) => None,
    }
}

/// Every distinct cluster of the configuration.
pub struct Clusters {
    by_key: HashMap<String, Arc<ClusterHandle>>,
    options: ClientOptions,
    interval: Duration,
    timeout: Duration,
    watch_timeout: Option<Duration>,
    watch_scope: WatchScope,
    epoch: Instant,
}

impl Clusters {
    /// An empty set; clients get `options`, `/readyz` is bounded by `timeout` and asked
    /// at most once per `interval` per cluster; each watch request lasts at least
    /// `watch_timeout` (unset: by protocol, see [`watch_cache::WatchTimeout`]);
    /// Deployments, Pods and ConfigMaps are watched per namespace or
    /// across the cluster as `watch_scope` says.
    pub fn new(
        options: ClientOptions,
        interval: Duration,
        timeout: Duration,
        watch_timeout: Option<Duration>,
        watch_scope: WatchScope,
    ) -> Self {
        Clusters {
            by_key: HashMap::new(),
            options,
            interval,
            timeout,
            watch_timeout,
            watch_scope,
            epoch: Instant::now(),
        }
    }

    /// The handle of `cluster`, built on first use. `side` labels errors.
    pub async fn get(
        &mut self,
        cluster: &ClusterConfig,
        side: Side,
    ) -> Result<Arc<ClusterHandle>, ClusterError> {
        let key = cluster_key(cluster);
        if let Some(handle) = key.as_ref().and_then(|k| self.by_key.get(k)) {
            return Ok(handle.clone());
        }
        // A cluster whose kubeconfig does not resolve fails here, naming the file.
        let client = client::client_for_with(cluster, side, self.options.clone()).await?;
        // Watches hold their connections for minutes: a client whose read timeout
        // outlasts the bookmarks' spacing, with the same credentials.
        let watch_client =
            client::client_for_with(cluster, side, self.options.clone().for_watches()).await?;
        let watch_timeout = watch_cache::WatchTimeout {
            configured: self.watch_timeout,
            http2: Arc::new(AtomicBool::new(false)),
        };
        let namespace = watch_client.default_namespace().to_string();
        let watch_client = kube::Client::new(
            Relay {
                client: watch_client,
                pool: None,
                http2: Some(watch_timeout.http2.clone()),
            },
            namespace,
        );
        let handle = Arc::new(ClusterHandle {
            client,
            watch_client,
            spread_watches: self.options.http2.is_some(),
            watches: AtomicUsize::new(0),
            watch_pools: Mutex::new(Vec::new()),
            reachable: watch::channel(true).0,
            starts: Arc::new(Semaphore::new(LISTS_IN_FLIGHT)),
            watch_starts: Arc::new(Semaphore::new(WATCH_STARTS_IN_FLIGHT)),
            interval: self.interval,
            timeout: self.timeout,
            watch_timeout,
            watch_scope: self.watch_scope,
            readyz: Mutex::new(Readyz {
                anchor: self.epoch,
                latest: None,
            }),
            reanchored: Arc::new(Notify::new()),
            written: Arc::new(WriteProof::default()),
            unreachable_answers: AtomicU32::new(0),
            scheduled: Mutex::new(false),
            stores: Mutex::new(Stores::default()),
            start_watches: true,
        });
        if let Some(key) = key {
            self.by_key.insert(key, handle.clone());
        }
        Ok(handle)
    }

    /// How many distinct clusters there are.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

type SharedOutcome = Shared<BoxFuture<'static, ProbeOutcome>>;

/// Sends one `/readyz` request with the cluster's client, bounded by the timeout.
pub type Fetch = fn(kube::Client, Duration) -> BoxFuture<'static, ProbeOutcome>;

/// Distrusts one store's watch, saying why.
type Suspecter = Arc<dyn Fn(&str) + Send + Sync>;

/// Watches of one cluster carried by one connection pool, at most, when the client speaks
/// HTTP/2 (one connection per pool): below the streams an API server or a proxy in front
/// of it allows on one connection (kube-apiserver 250 by default, proxies and load
/// balancers often 100), over which requests would wait for a stream to end — for a
/// watch, minutes (src/kube/client/connect.rs).
pub const WATCHES_PER_CONNECTION: usize = 100;

/// Lists of one cluster waiting for their answer, at most: on a slow API server the
/// caches' upkeep slows down with it instead of piling up requests. Watch requests have
/// their own bound ([`WATCH_STARTS_IN_FLIGHT`]): 8 requests in flight per cluster in all.
const LISTS_IN_FLIGHT: usize = 4;

/// Watch requests of one cluster waiting for their answer, at most, apart from the lists
/// so that a store that has just listed does not wait behind every other list to start
/// its watch.
const WATCH_STARTS_IN_FLIGHT: usize = 4;

/// Consecutive `/readyz` answers saying the API server cannot be reached before every
/// watch of the cluster must prove its connection again (one watch request each). One
/// late answer is what an overloaded API server gives now and then: it makes that
/// tick's cached signals unknown and holds the caches' upkeep, but restarting hundreds
/// of watches for it would only add load. A partition lasts longer: from the third
/// answer on, every store is unverified until its watch has been started again. The
/// default `failure_threshold` of a signal is the same 3.
pub const SUSPECT_AFTER: u32 = 3;

#[derive(Default)]
struct Stores {
    deployments: HashMap<String, Arc<WatchStore<KeptDeployment>>>,
    pods: HashMap<String, Arc<WatchStore<KeptPod>>>,
    configmaps: HashMap<String, Arc<WatchStore<ConfigMap>>>,
    pvcs: HashMap<String, Arc<WatchStore<PersistentVolumeClaim>>>,
    /// Single objects of a kind named in the config, by namespace, apiVersion, kind and
    /// name.
    objects: HashMap<String, Arc<WatchStore<DynamicObject>>>,
    /// Keyed by namespace and label selector.
    secrets: HashMap<String, Arc<WatchStore<Secret>>>,
    leases: HashMap<String, Arc<WatchStore<Lease>>>,
    /// With `watch_scope = "cluster"`: the cluster-wide watches of Deployments, Pods and
    /// ConfigMaps, started with the first namespace.
    fanouts: Fanouts,
    /// Distrusts every store of the cluster.
    suspecters: Vec<Suspecter>,
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Default)]
struct Fanouts {
    deployments: Option<Arc<Fanout<KeptDeployment>>>,
    pods: Option<Arc<Fanout<KeptPod>>>,
    configmaps: Option<Arc<Fanout<ConfigMap>>>,
}

impl Drop for Stores {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The `/readyz` answers of a cluster: one per slot, slots of one interval from `anchor`.
struct Readyz {
    /// Where the slots start: the daemon's start, or the last fresh request asked for.
    anchor: Instant,
    /// The latest request: when it was sent and its (maybe pending) answer.
    latest: Option<(Instant, SharedOutcome)>,
}

/// The start of the slot holding `now`, for slots of `interval` from `anchor`.
fn slot_start(anchor: Instant, interval: Duration, now: Instant) -> Instant {
    let step = interval.as_nanos().max(1);
    let into = now.saturating_duration_since(anchor).as_nanos() % step;
    now - Duration::from_nanos(u64::try_from(into).unwrap_or(0))
}

/// One cluster: its client, its shared `/readyz` and its caches.
pub struct ClusterHandle {
    client: kube::Client,
    /// The same credentials, for watches (a longer read timeout); its first connection
    /// pool. It notes whether its answers come over HTTP/2 ([`Relay`]).
    watch_client: kube::Client,
    /// With HTTP/2: the watches are spread over connection pools of at most
    /// [`WATCHES_PER_CONNECTION`].
    spread_watches: bool,
    /// Watches started so far.
    watches: AtomicUsize,
    /// The watch client on its second pool, its third, ... made when first needed.
    watch_pools: Mutex<Vec<kube::Client>>,
    /// False while the last `/readyz` answer said the API server cannot be reached.
    reachable: watch::Sender<bool>,
    /// Lists in flight (see [`LISTS_IN_FLIGHT`]).
    starts: Arc<Semaphore>,
    /// Watch requests in flight (see [`WATCH_STARTS_IN_FLIGHT`]).
    watch_starts: Arc<Semaphore>,
    interval: Duration,
    timeout: Duration,
    /// How long watch requests last, by protocol.
    watch_timeout: watch_cache::WatchTimeout,
    watch_scope: WatchScope,
    readyz: Mutex<Readyz>,
    /// Tells the slot task that the slots moved.
    reanchored: Arc<Notify>,
    /// The last write to this cluster that its API server accepted (see
    /// [`ClusterHandle::write_proof`]).
    written: Arc<WriteProof>,
    /// Consecutive `/readyz` answers saying the API server cannot be reached.
    unreachable_answers: AtomicU32,
    /// Whether the task sending `/readyz` at each slot's start runs.
    scheduled: Mutex<bool>,
    stores: Mutex<Stores>,
    /// Whether a store's watch starts with the store: false only for the handles of
    /// unit tests ([`ClusterHandle::for_tests`]), whose stores the test fills.
    start_watches: bool,
}

/// The last write the cluster's API server accepted from this process: when it was sent
/// and how long its answer took. A write that went through (authentication,
/// authorization, admission and etcd) proves more than `/readyz` does, so a slot whose
/// interval saw one sends no `/readyz` (see [`ClusterHandle::readyz`]).
#[derive(Default)]
pub struct WriteProof {
    last: Mutex<Option<(Instant, Duration)>>,
}

impl WriteProof {
    /// A write sent at `sent` was accepted at `answered`.
    pub fn accepted(&self, sent: Instant, answered: Instant) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|(at, _)| at <= sent) {
            *last = Some((sent, answered.saturating_duration_since(sent)));
        }
    }

    /// The last accepted write, if one was sent at or after `since`.
    pub(crate) fn since(&self, since: Instant) -> Option<(Instant, Duration)> {
        let last = *self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.filter(|(at, _)| *at >= since)
    }
}

/// Reasons of a `/readyz` answer that say the API server could not be reached: the
/// caches' watches cannot be trusted to be current then.
fn unreachable(reason: ProbeReason) -> bool {
    matches!(
        reason,
        ProbeReason::Timeout | ProbeReason::Refused | ProbeReason::Connect | ProbeReason::Tls
    )
}

impl ClusterHandle {
    /// A handle for unit tests: every request goes through `client` (a fake API), each
    /// `/readyz` is bounded by `timeout`, namespaces are watched one by one. No watch
    /// starts: the test fills the stores (the first call of [`ClusterHandle::deployments`]
    /// and the others makes a store, as in the daemon). No task sends `/readyz` at each
    /// slot's start, and a slot lasts a day: slots run on the system's monotonic clock,
    /// which tokio's paused clock does not move, so which slot a call falls in must not
    /// depend on how fast the test runs. A call asking for an answer sent after the
    /// previous one (each tick of a group asks so of its primary) then sends a request
    /// every time; a call content with the slot's answer ([`ClusterHandle::readyz`], the
    /// standby's) sends one once.
    #[cfg(test)]
    pub(crate) fn for_tests(client: kube::Client, timeout: Duration) -> Arc<ClusterHandle> {
        Arc::new(ClusterHandle {
            watch_client: client.clone(),
            client,
            spread_watches: false,
            watches: AtomicUsize::new(0),
            watch_pools: Mutex::new(Vec::new()),
            reachable: watch::channel(true).0,
            starts: Arc::new(Semaphore::new(LISTS_IN_FLIGHT)),
            watch_starts: Arc::new(Semaphore::new(WATCH_STARTS_IN_FLIGHT)),
            interval: Duration::from_secs(24 * 3600),
            timeout,
            watch_timeout: watch_cache::WatchTimeout {
                configured: None,
                http2: Arc::new(AtomicBool::new(false)),
            },
            watch_scope: WatchScope::Namespaces,
            readyz: Mutex::new(Readyz {
                anchor: Instant::now(),
                latest: None,
            }),
            reanchored: Arc::new(Notify::new()),
            written: Arc::new(WriteProof::default()),
            unreachable_answers: AtomicU32::new(0),
            // As if the slot task ran already: it never starts.
            scheduled: Mutex::new(true),
            stores: Mutex::new(Stores::default()),
            start_watches: false,
        })
    }

    /// The cluster's client (clones share connections and credentials).
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Where the writes this process makes to the cluster (its observer Lease's
    /// renewals) are reported once accepted: a slot whose last interval saw one sends
    /// no `/readyz`.
    pub fn write_proof(&self) -> Arc<WriteProof> {
        self.written.clone()
    }

    /// The cluster's `/readyz` for this probe interval, shared by every group on the
    /// cluster: one request per interval, sent at the start of each slot by a task of
    /// the cluster, so two answers are one interval apart. A write the API server
    /// accepted within the last interval ([`ClusterHandle::write_proof`]) stands for
    /// the request: the answer is that write's, sent when it was (with three instances
    /// renewing their observer Leases on the standby every interval, its `/readyz` is
    /// then not asked at all). A group gets the answer of the
    /// slot it ticks in (waiting for it if it is still on its way), never one of an
    /// earlier slot; the answer is at most one interval old. An answer saying the API
    /// server cannot be reached holds the upkeep of the cluster's watches until an answer
    /// passes, and from the [`SUSPECT_AFTER`]th such answer in a row makes them
    /// unverified (see [`crate::kube::watch_cache`]). `fetch` sends the request (the probes'
    /// `/readyz` check), given the cluster's client and the probe timeout.
    pub async fn readyz(self: &Arc<Self>, fetch: Fetch) -> ProbeOutcome {
        self.readyz_since(fetch, None).await.1
    }

    /// As [`ClusterHandle::readyz`], and the answer was sent at or after `not_before`:
    /// when this slot's request is older, a fresh one is sent now and the slots start
    /// again from it (the next ones follow one interval apart). Returns when the answer
    /// was sent. A group passes just after the send time of the answer it used last, so
    /// it never counts one answer twice, or the time its watch was lost, so the answer
    /// it gets comes after the event.
    pub async fn readyz_since(
        self: &Arc<Self>,
        fetch: Fetch,
        not_before: Option<Instant>,
    ) -> (Instant, ProbeOutcome) {
        let (sent, answer) = self.answer(fetch, not_before);
        self.schedule(fetch);
        (sent, answer.await)
    }

    /// Starts the task that sends `/readyz` at each slot's start, once.
    fn schedule(self: &Arc<Self>, fetch: Fetch) {
        let mut scheduled = self.scheduled.lock().unwrap_or_else(|e| e.into_inner());
        if *scheduled {
            return;
        }
        *scheduled = true;
        let me = Arc::downgrade(self);
        let moved = self.reanchored.clone();
        let task = tokio::spawn(async move {
            loop {
                let Some(next) = me.upgrade().map(|h| h.next_slot()) else {
                    return;
                };
                tokio::select! {
                    _ = tokio::time::sleep_until(next.into()) => {
                        let Some(me) = me.upgrade() else { return };
                        // Driven here, so it is sent now whether or not a group asks yet.
                        tokio::spawn(me.answer(fetch, None).1);
                    }
                    _ = moved.notified() => {}
                }
            }
        });
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tasks
            .push(task);
    }

    /// When the next slot starts.
    fn next_slot(&self) -> Instant {
        let anchor = self.readyz.lock().unwrap_or_else(|e| e.into_inner()).anchor;
        slot_start(anchor, self.interval, Instant::now()) + self.interval
    }

    /// The answer of the current slot sent at or after `not_before`, started now if
    /// there is none (moving the slots when the slot's own answer is too old).
    fn answer(
        self: &Arc<Self>,
        fetch: Fetch,
        not_before: Option<Instant>,
    ) -> (Instant, SharedOutcome) {
        let now = Instant::now();
        let mut readyz = self.readyz.lock().unwrap_or_else(|e| e.into_inner());
        let slot = slot_start(readyz.anchor, self.interval, now);
        let need = not_before.map_or(slot, |at| at.max(slot));
        if let Some((sent, answer)) = &readyz.latest
            && *sent >= need
        {
            return (*sent, answer.clone());
        }
        // A write accepted within the last interval before this slot (and after
        // `not_before`) proves the API server serves: no request. Counted from the
        // slot's start, not from when the slot's task got to run, so a renewal sent
        // just after the previous slot started still counts. Events still get a fresh
        // answer.
        let last_interval = slot.checked_sub(self.interval).unwrap_or(slot);
        let proof_since = not_before.map_or(last_interval, |at| at.max(last_interval));
        if let Some((sent, latency)) = self.written.since(proof_since) {
            let me = self.clone();
            let answer = async move {
                me.answered(ProbeReason::Ok);
                ProbeOutcome::ok(latency)
            }
            .boxed()
            .shared();
            readyz.latest = Some((sent, answer.clone()));
            return (sent, answer);
        }
        if need > slot {
            readyz.anchor = now;
            self.reanchored.notify_one();
        }
        let me = self.clone();
        let request = fetch(self.client.clone(), self.timeout);
        let answer = async move {
            let out = request.await;
            me.answered(out.reason);
            out
        }
        .boxed()
        .shared();
        readyz.latest = Some((now, answer.clone()));
        (now, answer)
    }

    /// Follows one `/readyz` answer: holds the caches' upkeep while the API server
    /// cannot be reached, and distrusts every watch from the [`SUSPECT_AFTER`]th
    /// such answer in a row.
    fn answered(&self, reason: ProbeReason) {
        let up = !unreachable(reason);
        self.reachable
            .send_if_modified(|was| std::mem::replace(was, up) != up);
        if up {
            self.unreachable_answers.store(0, Ordering::SeqCst);
        } else if self.unreachable_answers.fetch_add(1, Ordering::SeqCst) + 1 == SUSPECT_AFTER {
            self.suspect_watches("the API server did not answer /readyz");
        }
    }

    fn suspect_watches(&self, why: &str) {
        let suspecters = self
            .stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .suspecters
            .clone();
        for s in suspecters {
            s(why);
        }
    }

    /// How the cluster's stores keep their watches: a list page or a watch request is
    /// waited for at least the probe timeout (longer on a slow server: the store is
    /// unknown meanwhile, and a retry would only add load); failures are retried after
    /// a backoff growing to ten intervals.
    fn upkeep(&self) -> watch_cache::Upkeep {
        watch_cache::Upkeep {
            watch_timeout: self.watch_timeout.clone(),
            start_timeout: self.timeout.max(Duration::from_secs(10)),
            max_backoff: (self.interval * 10)
                .clamp(Duration::from_secs(2), Duration::from_secs(60)),
            reachable: self.reachable.subscribe(),
            starts: self.starts.clone(),
            watch_starts: self.watch_starts.clone(),
        }
    }

    /// The client for one more watch: with HTTP/2, the watches fill one connection pool
    /// after the other, [`WATCHES_PER_CONNECTION`] each (a store lists and watches through
    /// the same pool all its life).
    fn next_watch_client(&self) -> kube::Client {
        if !self.spread_watches {
            return self.watch_client.clone();
        }
        let pool = self.watches.fetch_add(1, Ordering::Relaxed) / WATCHES_PER_CONNECTION;
        if pool == 0 {
            return self.watch_client.clone();
        }
        let mut pools = self.watch_pools.lock().unwrap_or_else(|e| e.into_inner());
        while pools.len() < pool {
            let client = self.watch_client.clone();
            let namespace = client.default_namespace().to_string();
            let pool = client::Pool(pools.len() + 1);
            let relay = Relay {
                client,
                pool: Some(pool),
                http2: None,
            };
            pools.push(kube::Client::new(relay, namespace));
        }
        pools[pool - 1].clone()
    }

    /// The Deployments of `namespace` (what the caches keep of them), watched from the
    /// first call on.
    pub fn deployments(&self, namespace: &str) -> Arc<WatchStore<KeptDeployment>> {
        match self.watch_scope {
            WatchScope::Namespaces => {
                self.store(namespace, "Deployments", None, |s| &mut s.deployments)
            }
            WatchScope::Cluster => {
                self.fanned(namespace, "Deployments", |s| &mut s.fanouts.deployments)
            }
        }
    }

    /// The Pods of `namespace` (what the caches keep of them), watched from the first
    /// call on.
    pub fn pods(&self, namespace: &str) -> Arc<WatchStore<KeptPod>> {
        match self.watch_scope {
            WatchScope::Namespaces => self.store(namespace, "Pods", None, |s| &mut s.pods),
            WatchScope::Cluster => self.fanned(namespace, "Pods", |s| &mut s.fanouts.pods),
        }
    }

    /// The ConfigMaps of `namespace` (failover records), watched from the first call on.
    pub fn configmaps(&self, namespace: &str) -> Arc<WatchStore<ConfigMap>> {
        match self.watch_scope {
            WatchScope::Namespaces => {
                self.store(namespace, "ConfigMaps", None, |s| &mut s.configmaps)
            }
            WatchScope::Cluster => {
                self.fanned(namespace, "ConfigMaps", |s| &mut s.fanouts.configmaps)
            }
        }
    }

    /// The Secrets of `namespace` matching `selector` (the state mirror's), watched from
    /// the first call on. Only the selected Secrets are listed and held.
    pub fn secrets(&self, namespace: &str, selector: &str) -> Arc<WatchStore<Secret>> {
        self.store(namespace, "Secrets", Some(selector), |s| &mut s.secrets)
    }

    /// The PersistentVolumeClaims of `namespace` (state volumes), watched from the first
    /// call on.
    pub fn pvcs(&self, namespace: &str) -> Arc<WatchStore<PersistentVolumeClaim>> {
        self.store(namespace, "PersistentVolumeClaims", None, |s| &mut s.pvcs)
    }

    /// The object `name` of the kind `resource` in `namespace`, watched (by a field
    /// selector on its name) from the first call on. A kind the API server does not
    /// serve makes the store fail with `not_found`.
    pub fn object(
        &self,
        namespace: &str,
        resource: &ApiResource,
        name: &str,
    ) -> Arc<WatchStore<DynamicObject>> {
        let key = format!(
            "{namespace}/{}/{}/{name}",
            resource.api_version, resource.kind
        );
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = stores.objects.get(&key) {
            return s.clone();
        }
        let store =
            WatchStore::<DynamicObject>::new(format!("{} {name} in {namespace}", resource.kind));
        stores.objects.insert(key, store.clone());
        let suspect = store.clone();
        stores
            .suspecters
            .push(Arc::new(move |why: &str| suspect.suspect(why)));
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.next_watch_client(), namespace, resource);
        let selection = watch_cache::Selection {
            labels: None,
            fields: Some(format!("metadata.name={name}")),
        };
        if self.start_watches {
            stores.tasks.push(tokio::spawn(watch_cache::run(
                store.clone(),
                api,
                selection,
                self.upkeep(),
            )));
        }
        store
    }

    /// The Leases of `namespace` matching `selector` (coordination of several
    /// instances, src/coord), watched from the first call on.
    pub fn leases(&self, namespace: &str, selector: &str) -> Arc<WatchStore<Lease>> {
        self.store(namespace, "Leases", Some(selector), |s| &mut s.leases)
    }

    /// The store of `namespace` kept by the cluster-wide watch of its kind, started with
    /// the first namespace.
    fn fanned<K>(
        &self,
        namespace: &str,
        kind: &str,
        pick: impl Fn(&mut Stores) -> &mut Option<Arc<Fanout<K>>>,
    ) -> Arc<WatchStore<K>>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        K::DynamicType: Default,
    {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fanout) = pick(&mut stores) {
            return fanout.store(namespace);
        }
        let fanout = Fanout::<K>::new(kind);
        *pick(&mut stores) = Some(fanout.clone());
        let store = fanout.store(namespace);
        let suspect = fanout.clone();
        stores
            .suspecters
            .push(Arc::new(move |why: &str| suspect.suspect(why)));
        let api: Api<K> = Api::all(self.next_watch_client());
        stores.tasks.push(tokio::spawn(watch_cache::run_fanout(
            fanout,
            api,
            watch_cache::Selection::default(),
            self.upkeep(),
        )));
        store
    }

    fn store<K>(
        &self,
        namespace: &str,
        kind: &str,
        selector: Option<&str>,
        pick: impl Fn(&mut Stores) -> &mut HashMap<String, Arc<WatchStore<K>>>,
    ) -> Arc<WatchStore<K>>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + Sync
            + 'static,
        K::DynamicType: Default,
    {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        let key = match selector {
            Some(sel) => format!("{namespace}\n{sel}"),
            None => namespace.to_string(),
        };
        if let Some(s) = pick(&mut stores).get(&key) {
            return s.clone();
        }
        let what = match selector {
            Some(sel) => format!("{kind} ({sel}) in {namespace}"),
            None => format!("{kind} in {namespace}"),
        };
        let store = WatchStore::<K>::new(what);
        pick(&mut stores).insert(key, store.clone());
        let suspect = store.clone();
        stores
            .suspecters
            .push(Arc::new(move |why: &str| suspect.suspect(why)));
        let api: Api<K> = Api::namespaced(self.next_watch_client(), namespace);
        let selection = watch_cache::Selection {
            labels: selector.map(str::to_string),
            fields: None,
        };
        if self.start_watches {
            stores.tasks.push(tokio::spawn(watch_cache::run(
                store.clone(),
                api,
                selection,
                self.upkeep(),
            )));
        }
        store
    }
}

/// Sends each request through `client`: in connection pool `pool` when given, noting in
/// `http2` whether its answer came over HTTP/2 when given (the API server and whatever
/// stands between may or may not speak it: the watches' length follows,
/// [`watch_cache::WatchTimeout`]).
#[derive(Clone)]
struct Relay {
    client: kube::Client,
    pool: Option<client::Pool>,
    http2: Option<Arc<AtomicBool>>,
}

type KubeResponse = http::Response<kube::client::Body>;

impl tower_service::Service<http::Request<kube::client::Body>> for Relay {
    type Response = KubeResponse;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<KubeResponse, kube::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), kube::Error>> {
        // The inner client has its own buffer and readiness.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<kube::client::Body>) -> Self::Future {
        if let Some(pool) = self.pool {
            request.extensions_mut().insert(pool);
        }
        let client = self.client.clone();
        let http2 = self.http2.clone();
        Box::pin(async move {
            let response = client.send(request).await?;
            if let Some(http2) = http2 {
                http2.store(
                    response.version() == http::Version::HTTP_2,
                    Ordering::Relaxed,
                );
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static SENT: AtomicUsize = AtomicUsize::new(0);

    fn counting(_: kube::Client, _: Duration) -> BoxFuture<'static, ProbeOutcome> {
        SENT.fetch_add(1, Ordering::SeqCst);
        async { ProbeOutcome::ok(Duration::from_millis(1)) }.boxed()
    }

    fn cluster(dir: &tempfile::TempDir, context: &str) -> ClusterConfig {
        let path = dir.path().join("kc");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: https://127.0.0.1:1\n\
             contexts:\n- name: one\n  context:\n    cluster: a\n    user: u\n- name: two\n  context:\n    cluster: a\n    user: u\n\
             users:\n- name: u\n  user:\n    token: t\n",
        )
        .unwrap();
        ClusterConfig {
            kubeconfig: Some(path),
            context: Some(context.to_string()),
            namespace: "ns".to_string(),
        }
    }

    #[tokio::test]
    async fn one_handle_per_cluster_and_one_readyz_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let interval = Duration::from_millis(300);
        let mut clusters = test_clusters(interval);
        let a = clusters
            .get(&cluster(&dir, "one"), Side::Primary)
            .await
            .unwrap();
        let mut other_ns = cluster(&dir, "one");
        other_ns.namespace = "elsewhere".into();
        let same = clusters.get(&other_ns, Side::Standby).await.unwrap();
        let b = clusters
            .get(&cluster(&dir, "two"), Side::Standby)
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&a, &same), "same file and context: one handle");
        assert!(!Arc::ptr_eq(&a, &b), "another context: another handle");
        assert_eq!(clusters.len(), 2);

        // Wait for the start of an interval, then ask as five groups would.
        let anchor = a.readyz.lock().unwrap().anchor;
        let into = anchor.elapsed().as_nanos() % interval.as_nanos();
        tokio::time::sleep(interval - Duration::from_nanos(into as u64) + interval / 10).await;
        let before = SENT.load(Ordering::SeqCst);
        for _ in 0..5 {
            assert!(a.readyz(counting).await.passed());
        }
        assert_eq!(
            SENT.load(Ordering::SeqCst) - before,
            1,
            "one request for five asks"
        );
        // From now on one request per interval is sent, asked or not.
        tokio::time::sleep(interval * 3).await;
        let sent = SENT.load(Ordering::SeqCst) - before;
        assert!(
            (2..=5).contains(&sent),
            "{sent} requests in about four intervals"
        );
    }

    #[tokio::test]
    async fn the_watch_client_notes_whether_its_last_answer_came_over_http2() {
        let answer_in = Arc::new(Mutex::new(http::Version::HTTP_2));
        let version = answer_in.clone();
        let api = tower::service_fn(move |_: http::Request<kube::client::Body>| {
            let mut response =
                http::Response::new(http_body_util::Full::new(bytes::Bytes::from("{}")));
            *response.version_mut() = *version.lock().unwrap();
            std::future::ready(Ok::<_, std::convert::Infallible>(response))
        });
        let http2 = Arc::new(AtomicBool::new(false));
        let client = kube::Client::new(
            Relay {
                client: kube::Client::new(api, "default"),
                pool: None,
                http2: Some(http2.clone()),
            },
            "default",
        );
        let get = || client.request_text(http::Request::get("/readyz").body(Vec::new()).unwrap());
        get().await.unwrap();
        assert!(http2.load(Ordering::Relaxed), "an answer over HTTP/2");
        *answer_in.lock().unwrap() = http::Version::HTTP_11;
        get().await.unwrap();
        assert!(!http2.load(Ordering::Relaxed), "an answer over HTTP/1.1");
    }

    /// An API that answers every request at once and records the connection pool it
    /// was sent through.
    #[derive(Clone)]
    struct RecordingPools(Arc<Mutex<Vec<usize>>>);

    impl tower_service::Service<http::Request<kube::client::Body>> for RecordingPools {
        type Response = http::Response<http_body_util::Full<bytes::Bytes>>;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
            let pool = request.extensions().get::<client::Pool>().copied();
            self.0.lock().unwrap().push(pool.unwrap_or_default().0);
            std::future::ready(Ok(http::Response::new(Default::default())))
        }
    }

    /// The pools `watches` successive watches of a cluster go through.
    async fn pools_of_watches(http2: Option<client::Http2>, watches: usize) -> Vec<usize> {
        let dir = tempfile::tempdir().unwrap();
        let mut clusters = Clusters::new(
            ClientOptions::default().with_http2(http2),
            Duration::from_secs(1),
            Duration::from_millis(500),
            None,
            WatchScope::Namespaces,
        );
        let handle = clusters
            .get(&cluster(&dir, "one"), Side::Primary)
            .await
            .unwrap();
        drop(clusters);
        let mut handle = Arc::try_unwrap(handle).ok().expect("the only handle");
        let seen = Arc::new(Mutex::new(Vec::new()));
        handle.watch_client = kube::Client::new(RecordingPools(seen.clone()), "ns");
        for _ in 0..watches {
            let request = http::Request::get("/api").body(Vec::new()).unwrap();
            handle
                .next_watch_client()
                .request_text(request)
                .await
                .unwrap();
        }
        seen.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn with_http2_the_watches_fill_connection_pools_of_at_most_a_hundred() {
        let http2 = client::Http2 {
            ping_interval: Duration::from_secs(1),
            ping_timeout: Duration::from_millis(500),
        };
        let pools = pools_of_watches(Some(http2), 250).await;
        let count = |p: usize| pools.iter().filter(|&&q| q == p).count();
        assert_eq!(
            (count(0), count(1), count(2)),
            (WATCHES_PER_CONNECTION, WATCHES_PER_CONNECTION, 50),
            "{pools:?}"
        );
        // HTTP/1.1: one connection per watch anyway, every watch in the first pool.
        assert!(pools_of_watches(None, 150).await.iter().all(|&p| p == 0));
    }

    /// A cluster set as the daemon makes it, probing every `interval` with half of it as
    /// the timeout, namespaced watches.
    fn test_clusters(interval: Duration) -> Clusters {
        Clusters::new(
            ClientOptions::default(),
            interval,
            interval / 2,
            None,
            WatchScope::Namespaces,
        )
    }

    static FRESH: AtomicUsize = AtomicUsize::new(0);

    fn counting_fresh(_: kube::Client, _: Duration) -> BoxFuture<'static, ProbeOutcome> {
        FRESH.fetch_add(1, Ordering::SeqCst);
        async { ProbeOutcome::ok(Duration::from_millis(1)) }.boxed()
    }

    #[tokio::test]
    async fn a_fresh_answer_moves_the_slots_and_is_never_given_twice() {
        let dir = tempfile::tempdir().unwrap();
        let interval = Duration::from_millis(400);
        let mut clusters = test_clusters(interval);
        let a = clusters
            .get(&cluster(&dir, "one"), Side::Primary)
            .await
            .unwrap();
        let (first, out) = a.readyz_since(counting_fresh, None).await;
        assert!(out.passed());
        let sent = || FRESH.load(Ordering::SeqCst);
        assert_eq!(sent(), 1);
        // Asked again in the same slot, past the answer it had: a fresh one, now.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let asked = Instant::now();
        let (second, _) = a
            .readyz_since(counting_fresh, Some(first + Duration::from_nanos(1)))
            .await;
        assert!(second > first && second >= asked, "a fresh answer");
        assert_eq!(sent(), 2);
        // Another group woken by the same event shares it.
        let (shared, _) = a.readyz_since(counting_fresh, Some(asked)).await;
        assert_eq!(shared, second);
        assert_eq!(sent(), 2);
        // The slots start again from the fresh answer: the next request goes out one
        // interval after it, sent by the cluster's task.
        assert_eq!(a.readyz.lock().unwrap().anchor, second);
        tokio::time::sleep_until((second + interval + interval / 4).into()).await;
        assert_eq!(sent(), 3);
        let (next, _) = a
            .readyz_since(counting_fresh, Some(second + Duration::from_nanos(1)))
            .await;
        let late = next.saturating_duration_since(second + interval);
        assert!(
            next >= second + interval && late < interval / 4,
            "sent {late:?} after the slot's start"
        );
        assert_eq!(sent(), 3, "that answer was the slot's own");
    }

    static ASKED: AtomicUsize = AtomicUsize::new(0);

    fn counting_asked(_: kube::Client, _: Duration) -> BoxFuture<'static, ProbeOutcome> {
        ASKED.fetch_add(1, Ordering::SeqCst);
        async { ProbeOutcome::ok(Duration::from_millis(1)) }.boxed()
    }

    #[tokio::test]
    async fn a_write_accepted_within_the_interval_stands_for_readyz() {
        let dir = tempfile::tempdir().unwrap();
        let interval = Duration::from_millis(400);
        let mut clusters = test_clusters(interval);
        let a = clusters
            .get(&cluster(&dir, "one"), Side::Standby)
            .await
            .unwrap();
        let asked = || ASKED.load(Ordering::SeqCst);
        // No write yet: the request is sent.
        assert!(a.readyz(counting_asked).await.passed());
        assert_eq!(asked(), 1);

        // Observer Lease renewals accepted every half interval: no /readyz while one
        // came within the last interval, the slot task's included; the answer is the
        // last write's.
        let proof = a.write_proof();
        let mut last = Instant::now();
        for _ in 0..5 {
            last = Instant::now();
            proof.accepted(last, last + Duration::from_millis(7));
            tokio::time::sleep(interval / 2).await;
        }
        let (at, out) = a.readyz_since(counting_asked, None).await;
        assert_eq!((at, out.reason), (last, ProbeReason::Ok));
        assert_eq!(out.latency, Duration::from_millis(7));
        assert_eq!(asked(), 1, "two slots and more, no request");

        // An event asks for an answer sent after it: the proof is older, a request goes.
        let event = Instant::now();
        let (fresh, _) = a.readyz_since(counting_asked, Some(event)).await;
        assert!(fresh >= event);
        assert_eq!(asked(), 2);

        // No write for longer than an interval: /readyz again, every slot.
        tokio::time::sleep(interval * 3).await;
        assert!(a.readyz(counting_asked).await.passed());
        assert!(asked() >= 4, "{} requests", asked());
    }

    #[tokio::test]
    async fn watches_are_distrusted_from_the_third_unreachable_readyz_in_a_row_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut clusters = Clusters::new(
            ClientOptions::default(),
            Duration::from_secs(1),
            Duration::from_millis(500),
            None,
            WatchScope::Namespaces,
        );
        let a = clusters
            .get(&cluster(&dir, "one"), Side::Primary)
            .await
            .unwrap();
        let suspected = Arc::new(AtomicUsize::new(0));
        let count = suspected.clone();
        a.stores
            .lock()
            .unwrap()
            .suspecters
            .push(Arc::new(move |_: &str| {
                count.fetch_add(1, Ordering::SeqCst);
            }));
        let reachable = a.reachable.subscribe();
        let times = || suspected.load(Ordering::SeqCst);
        // Late answers now and then, each followed by a passing one: nothing restarted,
        // the upkeep held only while the last answer was late.
        for _ in 0..5 {
            a.answered(ProbeReason::Timeout);
            assert!(!*reachable.borrow());
            a.answered(ProbeReason::Timeout);
            a.answered(ProbeReason::Ok);
            assert!(*reachable.borrow());
        }
        assert_eq!(times(), 0, "no watch restarted for a late answer");
        // A partition: the third unreachable answer in a row distrusts every watch, once.
        a.answered(ProbeReason::Timeout);
        a.answered(ProbeReason::Refused);
        assert_eq!(times(), 0);
        a.answered(ProbeReason::Connect);
        assert_eq!(times(), 1);
        a.answered(ProbeReason::Timeout);
        a.answered(ProbeReason::Timeout);
        assert_eq!(times(), 1, "one suspicion per episode");
        // An answer that is not about reachability (the server answered) ends it.
        a.answered(ProbeReason::HttpStatus);
        for _ in 0..3 {
            a.answered(ProbeReason::Timeout);
        }
        assert_eq!(times(), 2);
    }

    #[test]
    fn slots_start_from_the_anchor() {
        let anchor = Instant::now();
        let interval = Duration::from_secs(1);
        let at = |ms| anchor + Duration::from_millis(ms);
        assert_eq!(slot_start(anchor, interval, at(0)), at(0));
        assert_eq!(slot_start(anchor, interval, at(999)), at(0));
        assert_eq!(slot_start(anchor, interval, at(1_000)), at(1_000));
        assert_eq!(slot_start(anchor, interval, at(5_250)), at(5_000));
    }
}

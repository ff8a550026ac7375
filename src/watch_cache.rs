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
//! How long a dead watch can go unnoticed:
//! - a stopped or restarted API server closes the connection: the next poll of the
//!   watch fails at once and the store is broken within milliseconds;
//! - every watch request asks the server to end it after [`WATCH_TIMEOUT_SECS`], and
//!   kube's watcher gives up on a silent stream 5 s after that, so a connection that
//!   died without a word is noticed within 10 s even with no other sign; and a watch
//!   outlives a change of RBAC (the API server checks permissions when a watch
//!   starts), so a revoked grant shows within 5 s;
//! - the probes ask each cluster's `/readyz` once per interval (see
//!   the `clusters` module); when that answer says the API server cannot be reached
//!   (timeout, refused, connect, TLS), every store of the cluster is restarted
//!   ([`WatchStore::restart`]) and serves nothing until a fresh list has completed. So
//!   the bound that matters for judgement is one probe interval.
//!
//! After any error the watch is started again from a fresh list, after a short backoff
//! capped at the probe interval (at [`UNREACHABLE_BACKOFF`] while the API server cannot
//! be reached, cut short when its `/readyz` passes again), so a store that recovers
//! always proves it with a complete list (a resumed watch emits no event that could
//! prove it).
//!
//! Each store also tells its readers when something happened that a tick should look at
//! now rather than at its next turn ([`WatchStore::wakes`]): its established watch was
//! lost (an API server that stops ends its watches within milliseconds), or an object
//! changed or went away. The readers (each group's loop) decide whether it concerns them.
//! A restart asked for by a failing `/readyz` wakes nobody: that answer was already seen.

use crate::kube_call::{classify, describe};
use crate::model::{Evidence, ProbeReason};
use futures::StreamExt;
use kube::Resource;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

/// Server-side bound on one watch request (`timeoutSeconds`): the API server ends the
/// watch after this and the watcher resumes it from the last resourceVersion (one cheap
/// request per store). Shorter than the clients' read timeout (15 s), so an idle watch
/// is never cut by the client.
pub const WATCH_TIMEOUT_SECS: u32 = 5;

/// First delay before a failed watch is started again; doubles up to the cap.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// The cap on that delay while the API server cannot be reached (the watch timed out,
/// was refused, could not connect or failed TLS): each try costs a new connection that
/// an unreachable server never answers, so they are spaced out instead of repeated
/// every interval. A `/readyz` that passes again ends the wait at once
/// ([`Steer::retry_now`]), so a server that comes back is listed within a tick.
pub const UNREACHABLE_BACKOFF: Duration = Duration::from_secs(30);

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
}

/// The objects of one kind in one namespace of one cluster, kept current by a watch.
pub struct WatchStore<K> {
    /// `Pods in ns`, for messages.
    what: String,
    inner: RwLock<Inner<K>>,
    /// Bumped on every change of freshness or of the objects, for
    /// [`WatchStore::wait_started`] and [`WatchStore::subscribe`].
    changed: watch::Sender<u64>,
    /// Asks the watch task to drop its watch and list again.
    restart: Notify,
    /// Ends the wait after a failed watch (see [`Steer::retry_now`]).
    retry: Notify,
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
            }),
            changed: watch::channel(0).0,
            restart: Notify::new(),
            retry: Notify::new(),
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

    /// Asks the watch to start over from a fresh list; the store serves nothing until it
    /// completes. Does nothing while the store is not live (it is listing already).
    pub fn restart(&self, why: &str) {
        Steer::restart(self, why);
    }
}

/// How a cluster's `/readyz` answers steer the watches of its stores.
pub trait Steer {
    /// See [`WatchStore::restart`].
    fn restart(&self, why: &str);
    /// The API server answers again: a watch waiting before its next try after a
    /// failure tries now.
    fn retry_now(&self);
}

impl<K> Steer for WatchStore<K> {
    fn retry_now(&self) {
        self.retry.notify_waiters();
    }

    fn restart(&self, why: &str) {
        let mut inner = self.lock_write();
        if inner.freshness == Freshness::Live {
            inner.freshness = Freshness::Relisting(why.to_string());
            drop(inner);
            self.changed.send_modify(|n| *n += 1);
            self.restart.notify_one();
        }
    }
}

impl<K> WatchStore<K> {
    fn set_freshness(&self, inner: &mut Inner<K>, freshness: Freshness) {
        if inner.freshness != freshness {
            inner.freshness = freshness;
            self.changed.send_modify(|n| *n += 1);
        }
    }
}

impl<K: Resource> WatchStore<K> {
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

    /// Marks the store broken by `err`: its signals are unknown until a fresh list.
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

/// An object as the store keeps it: without its managedFields (who set which field,
/// often the larger part of the metadata), which nothing here reads.
fn kept<K: Resource>(mut obj: K) -> Arc<K> {
    obj.meta_mut().managed_fields = None;
    Arc::new(obj)
}

fn name_of<K: Resource>(obj: &K) -> Option<String> {
    obj.meta().name.clone()
}

/// Reasons of a failed watch that say the API server could not be reached.
fn unreachable(reason: ProbeReason) -> bool {
    matches!(
        reason,
        ProbeReason::Timeout | ProbeReason::Refused | ProbeReason::Connect | ProbeReason::Tls
    )
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

/// Keeps `store` current from `api` until the task is aborted: lists, watches, and
/// after any error or [`WatchStore::restart`] starts again from a fresh list (after a
/// backoff from 200 ms doubling up to `max_backoff` while errors repeat).
pub async fn run<K>(store: Arc<WatchStore<K>>, api: Api<K>, max_backoff: Duration)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    run_with(store, api, watcher::Config::default(), max_backoff).await
}

/// [`run`] for the objects matching `label_selector` only (all of them for `None`).
pub async fn run_selected<K>(
    store: Arc<WatchStore<K>>,
    api: Api<K>,
    max_backoff: Duration,
    label_selector: Option<String>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let mut config = watcher::Config::default();
    if let Some(selector) = label_selector {
        config = config.labels(&selector);
    }
    run_with(store, api, config, max_backoff).await
}

/// [`run`] with the watch narrowed by `config` (a field selector, say); its server-side
/// bound is always [`WATCH_TIMEOUT_SECS`].
pub async fn run_with<K>(
    store: Arc<WatchStore<K>>,
    api: Api<K>,
    config: watcher::Config,
    max_backoff: Duration,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let config = config.timeout(WATCH_TIMEOUT_SECS);
    let mut backoff = FIRST_BACKOFF.min(max_backoff);
    loop {
        let mut stream = watcher::watcher(api.clone(), config.clone()).boxed();
        // Whether the last try failed, and whether the server could not be reached.
        let mut failed = None;
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(event)) => {
                        if store.apply(event) {
                            backoff = FIRST_BACKOFF.min(max_backoff);
                            debug!(store = %store.what, "watch listed");
                        }
                    }
                    Some(Err(err)) => {
                        let was_live = store.freshness() == Freshness::Live;
                        store.fail(&err);
                        if was_live {
                            warn!(store = %store.what, error = %describe_watch_error(&err).1, "watch lost; listing again");
                        }
                        failed = Some(unreachable(describe_watch_error(&err).0));
                        break;
                    }
                    None => break,
                },
                _ = store.restart.notified() => {
                    info!(store = %store.what, "watch restarted: the API server did not answer /readyz");
                    break;
                }
            }
        }
        drop(stream);
        if let Some(unreachable) = failed {
            let retry = store.retry.notified();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = retry => {}
            }
            let cap = if unreachable {
                UNREACHABLE_BACKOFF.max(max_backoff)
            } else {
                max_backoff
            };
            backoff = (backoff * 2).min(cap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A client to an API server that cannot be reached: every request fails below the
    /// API (connection refused) and is counted.
    #[derive(Clone, Default)]
    struct Unreachable(Arc<AtomicUsize>);

    type Request = http::Request<kube::client::Body>;
    type Answer = std::future::Ready<
        Result<http::Response<kube::client::Body>, Box<dyn std::error::Error + Send + Sync>>,
    >;

    impl tower_service::Service<Request> for Unreachable {
        type Response = http::Response<kube::client::Body>;
        type Error = Box<dyn std::error::Error + Send + Sync>;
        type Future = Answer;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
            std::future::ready(Err(Box::new(refused)))
        }
    }

    /// Issue 17, item 5: a watch whose API server cannot be reached tries again ever
    /// more rarely (up to [`UNREACHABLE_BACKOFF`], not every `max_backoff`), each try a
    /// new connection that a black hole would never answer; a `/readyz` that passes
    /// again ([`Steer::retry_now`]) makes it try at once.
    #[tokio::test(start_paused = true)]
    async fn an_unreachable_server_is_retried_ever_more_rarely_and_at_once_when_back() {
        let api = Unreachable::default();
        let tries = api.0.clone();
        let store = WatchStore::<ConfigMap>::new("ConfigMaps in ns");
        let client = kube::Client::new(api, "ns");
        let task = tokio::spawn(run(
            store.clone(),
            Api::namespaced(client, "ns"),
            Duration::from_secs(1),
        ));
        tokio::time::sleep(Duration::from_secs(300)).await;
        let n = tries.load(Ordering::SeqCst);
        assert!(
            matches!(store.freshness(), Freshness::Broken { .. }),
            "{:?}",
            store.freshness()
        );
        // 200 ms doubling to 30 s: 8 tries in the first minute, then one per 30 s
        // (with the interval as the cap, there would be about 300).
        assert!((10..=20).contains(&n), "{n} tries in 5 minutes");
        // Reachable again: it tries now, not after the backoff.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = tries.load(Ordering::SeqCst);
        store.retry_now();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(tries.load(Ordering::SeqCst), before + 1);
        task.abort();
    }

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
        s.restart("test");
        bumped(&s);
        let kept = s.read(|m| m.clone()).unwrap_err();
        assert!(kept.1.contains("relisting"));
        s.apply(Event::Init);
        s.apply(Event::InitApply(with_fields("b")));
        s.apply(Event::InitDone);
        bumped(&s);
        let b = s.read(|m| m["b"].clone()).unwrap();
        assert_eq!(b.metadata.managed_fields, None);
        assert_eq!(b.metadata.labels.as_ref().map(|l| l.len()), Some(1));
    }

    #[test]
    fn a_relist_replaces_everything() {
        let s = WatchStore::<ConfigMap>::new("ConfigMaps in ns");
        s.apply(Event::Init);
        s.apply(Event::InitApply(cm("old")));
        s.apply(Event::InitDone);
        s.restart("test");
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
    fn readers_are_woken_by_changes_and_a_lost_watch_not_by_lists_or_restarts() {
        let s = WatchStore::<ConfigMap>::new("Pods in ns");
        let rx = s.wakes();
        s.apply(Event::Init);
        s.apply(Event::InitApply(cm("a")));
        s.apply(Event::InitDone);
        assert_eq!(*rx.borrow(), Wakes::default(), "a list wakes nobody");
        s.apply(Event::Apply(cm("a")));
        s.apply(Event::Delete(cm("a")));
        assert_eq!(rx.borrow().changed, 2);
        // Asked to relist by a failing /readyz: that answer was already seen.
        s.restart("test");
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

//! The probes, as the daemon runs them at each tick and the operator's commands run them
//! once: `/readyz` shared per cluster and interval, Deployments, Pods and the failover
//! record read from the cluster's watch-backed caches ([`crate::kube::watch_cache`]),
//! judged by [`super::workload`].
//!
//! A cache whose watch is not established makes the signals it feeds unknown, and so
//! does a `/readyz` answer saying the API server cannot be reached (the caches are
//! restarted then): the API signal carries the down evidence, the cached signals never
//! carry a stale one. A command, which has no next tick, first waits for the caches
//! ([`primary_caches`], [`standby_caches`]).

use super::workload::{PodSummary, judge_primary};
use super::{http, merge_views};
use crate::config::{GroupConfig, WorkloadConfig};
use crate::kube::cluster::ClusterHandle;
use crate::kube::kept::{KeptDeployment, KeptPod};
use crate::kube::watch_cache::{Freshness, WatchStore};
use crate::model::{
    DeploymentView, FailoverRecord, PrimaryObservation, ProbeOutcome, ProbeReason,
    StandbyObservation,
};
use crate::selection::{DeploymentFacts, nothing_selected, parse_label_selector, selection_text};
use futures::FutureExt;
use futures::future::{self, BoxFuture, Either, join_all};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::{Selector, SelectorExt};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Failure = (ProbeReason, String);

/// The `/readyz` probe, as the cluster's shared answer sends it.
fn shared_readyz(client: kube::Client, timeout: Duration) -> BoxFuture<'static, ProbeOutcome> {
    async move { super::api::readyz(&client, timeout).await }.boxed()
}

/// Why the caches of a cluster cannot be trusted this tick, from its `/readyz`.
fn untrusted(api: &ProbeOutcome) -> Option<String> {
    matches!(
        api.reason,
        ProbeReason::Timeout | ProbeReason::Refused | ProbeReason::Connect | ProbeReason::Tls
    )
    .then(|| {
        format!(
            "cached state not trusted while /readyz fails ({})",
            api.reason.as_str()
        )
    })
}

/// `/readyz`'s answer, once the caches that have never listed have started (`started`,
/// bounded by the caller) too; not waiting for them once the answer says the API server
/// cannot be reached: they are not trusted then whatever they hold, and none starts
/// while it is so.
async fn answer_with_caches(
    answer: impl Future<Output = (Instant, ProbeOutcome)>,
    started: impl Future<Output = ()>,
) -> (Instant, ProbeOutcome) {
    match future::select(pin!(answer), pin!(started)).await {
        Either::Left((got, started)) => {
            if untrusted(&got.1).is_none() {
                started.await;
            }
            got
        }
        Either::Right(((), answer)) => answer.await,
    }
}

/// Caches of a probe that are not established (listed, and watching) when a command
/// needs them: the first one that is not, or the cluster's `/readyz` saying the API
/// server cannot be reached. Its reason is never down evidence: the probe's signals fed
/// by such a cache are unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct NotEstablished {
    /// The cache's reason (`error` while it lists or retries, `forbidden`,
    /// `unauthorized`, `tls`, ... when its watch was refused).
    pub reason: ProbeReason,
    /// What is not established, and why: names the kind and namespace.
    pub detail: String,
}

/// Waits up to `bound` until the caches [`probe_primary`] reads for `group` (the
/// Deployments and Pods of its namespace on the primary) are established, starting them
/// if they are not yet. For a command, which probes once: the daemon's ticks do not wait
/// (a cache not established makes that tick's signals unknown, the next tick reads it).
pub async fn primary_caches(
    cluster: &Arc<ClusterHandle>,
    group: &GroupConfig,
    bound: Duration,
) -> Result<(), NotEstablished> {
    let ns = group.primary.namespace.as_str();
    let (deployments, pods) = (cluster.deployments(ns), cluster.pods(ns));
    let deadline = tokio::time::Instant::now() + bound;
    let stores = async {
        tokio::try_join!(
            established(&deployments, deadline),
            established(&pods, deadline)
        )
        .map(|_| ())
    };
    unless_unreachable(cluster, stores).await
}

/// As [`primary_caches`], for the caches [`probe_standby`] reads (the Deployments, Pods
/// and ConfigMaps of the standby namespace). The guards' heartbeats are not waited for:
/// they do not decide whether the standby can take over.
pub async fn standby_caches(
    cluster: &Arc<ClusterHandle>,
    group: &GroupConfig,
    bound: Duration,
) -> Result<(), NotEstablished> {
    let ns = group.standby.namespace.as_str();
    let (deployments, pods, configmaps) = (
        cluster.deployments(ns),
        cluster.pods(ns),
        cluster.configmaps(ns),
    );
    let deadline = tokio::time::Instant::now() + bound;
    let stores = async {
        tokio::try_join!(
            established(&deployments, deadline),
            established(&pods, deadline),
            established(&configmaps, deadline)
        )
        .map(|_| ())
    };
    unless_unreachable(cluster, stores).await
}

/// `stores`' result, or sooner the cluster's `/readyz` saying the API server cannot be
/// reached (no cache starts then, and none would be trusted).
async fn unless_unreachable(
    cluster: &Arc<ClusterHandle>,
    stores: impl Future<Output = Result<(), Failure>>,
) -> Result<(), NotEstablished> {
    let unreachable = async {
        let api = cluster.readyz(shared_readyz).await;
        match untrusted(&api) {
            Some(why) => why,
            None => std::future::pending().await,
        }
    };
    match future::select(pin!(stores), pin!(unreachable)).await {
        Either::Left((result, _)) => {
            result.map_err(|(reason, detail)| NotEstablished { reason, detail })
        }
        Either::Right((why, _)) => Err(NotEstablished {
            reason: ProbeReason::Error,
            detail: why,
        }),
    }
}

/// Waits until `store` is established, at the latest until `deadline`: its failure
/// when it is not by then, or at once when its watch was refused for a cause on the
/// watcher's side (credentials, RBAC, a certificate, an answer it cannot read), which
/// waiting does not mend. A list still on its way, or one that timed out or failed on
/// the server, is waited for: it is retried.
async fn established<K>(
    store: &WatchStore<K>,
    deadline: tokio::time::Instant,
) -> Result<(), Failure> {
    let mut changes = store.subscribe();
    loop {
        let failure = match store.read(|_| ()) {
            Ok(()) => return Ok(()),
            Err(failure) => failure,
        };
        if matches!(store.freshness(), Freshness::Broken { reason, .. } if reason != ProbeReason::Error)
        {
            return Err(failure);
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return store.read(|_| ()),
        }
    }
}

/// Probes the primary of `group`: API `/readyz`, one signal per workload (every selected
/// Deployment exists, wants at least one replica, has them available, and has that many
/// Ready, live Pods) and every HTTP check, the HTTP checks bounded by `timeout` (or their
/// own). `recorded` names Deployments of the failover record that are read by name as
/// well, so a relabelled one is still seen (and fenced). Caches that have never listed
/// are waited for up to `timeout`.
pub async fn probe_primary(
    cluster: &Arc<ClusterHandle>,
    group: &GroupConfig,
    http_client: &reqwest::Client,
    timeout: Duration,
    recorded: &[String],
) -> PrimaryObservation {
    probe_primary_since(cluster, group, http_client, timeout, recorded, None)
        .await
        .0
}

/// As [`probe_primary`], with a `/readyz` answer sent at or after `not_before` (see
/// [`ClusterHandle::readyz_since`]); also returns when that answer was sent.
pub async fn probe_primary_since(
    cluster: &Arc<ClusterHandle>,
    group: &GroupConfig,
    http_client: &reqwest::Client,
    timeout: Duration,
    recorded: &[String],
    not_before: Option<Instant>,
) -> (PrimaryObservation, Instant) {
    let start = Instant::now();
    let ns = group.primary.namespace.as_str();
    let deployments = cluster.deployments(ns);
    let pods = cluster.pods(ns);
    let checks = join_all(
        group
            .http_checks
            .iter()
            .map(|c| http::check(http_client, c, timeout)),
    );
    let started = async {
        tokio::join!(
            deployments.wait_started(timeout),
            pods.wait_started(timeout)
        );
    };
    let ((sent, api), checks) = tokio::join!(
        answer_with_caches(cluster.readyz_since(shared_readyz, not_before), started),
        checks,
    );
    let gate = untrusted(&api);
    let latency = start.elapsed();

    let workloads = group.workloads.iter().map(|w| {
        let (failure, views) = inspect(&deployments, &pods, ns, w, Judge::Primary, gate.as_deref());
        (w, outcome(failure, latency), views)
    });
    let by_name = by_name(&deployments, recorded, gate.as_deref());
    let mut observation = super::primary_observation(group, api, workloads, checks, by_name);
    observation.watches_starting = deployments.first_list_pending() || pods.first_list_pending();
    (observation, sent)
}

/// Whether every workload of `group` passes on the primary as the caches hold it now
/// (memory only, no request): a changed Pod or Deployment concerns a group whose
/// workloads passed at its last tick only when one of them fails now.
pub fn primary_workloads_pass(cluster: &ClusterHandle, group: &GroupConfig) -> bool {
    let ns = group.primary.namespace.as_str();
    let (deployments, pods) = (cluster.deployments(ns), cluster.pods(ns));
    group.workloads.iter().all(|w| {
        inspect(&deployments, &pods, ns, w, Judge::Primary, None)
            .0
            .is_none()
    })
}

/// Probes the standby of `group`: API `/readyz`, whether every workload selects a
/// Deployment, their views, the failover record and, when the group has guards, their
/// heartbeats. Caches that have never listed are waited for up to `timeout`.
pub async fn probe_standby(
    cluster: &Arc<ClusterHandle>,
    group: &GroupConfig,
    timeout: Duration,
) -> StandbyObservation {
    let start = Instant::now();
    let ns = group.standby.namespace.as_str();
    let deployments = cluster.deployments(ns);
    let pods = cluster.pods(ns);
    let configmaps = cluster.configmaps(ns);
    let guards = group
        .guards
        .any()
        .then(|| cluster.leases(ns, &super::guards::selector(group)));
    let started = async {
        let guards_started = async {
            if let Some(g) = &guards {
                g.wait_started(timeout).await;
            }
        };
        tokio::join!(
            deployments.wait_started(timeout),
            pods.wait_started(timeout),
            configmaps.wait_started(timeout),
            guards_started
        );
    };
    let (_, api) = answer_with_caches(cluster.readyz_since(shared_readyz, None), started).await;
    let gate = untrusted(&api);
    let latency = start.elapsed();

    let mut all_views = Some(Vec::new());
    let mut failed = None;
    for w in &group.workloads {
        let (failure, views) = inspect(&deployments, &pods, ns, w, Judge::Standby, gate.as_deref());
        merge_views(&mut all_views, views);
        if failed.is_none() {
            failed = failure;
        }
    }
    let record = match &gate {
        Some(why) => Err(ProbeOutcome::fail(
            ProbeReason::Error,
            latency,
            format!("ConfigMap {ns}/{}: {why}", group.record_name()),
        )),
        None => record(&configmaps, ns, &group.record_name())
            .map_err(|(reason, detail)| ProbeOutcome::fail(reason, latency, detail)),
    };
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    StandbyObservation {
        api,
        workloads: outcome(failed, latency),
        deployments: all_views,
        record,
        state_checks: Vec::new(),
        guards: guards
            .and_then(|g| super::guards::observe(&g, group, gate.as_deref(), now_unix, latency)),
    }
}

fn outcome(failure: Option<Failure>, latency: Duration) -> ProbeOutcome {
    match failure {
        None => ProbeOutcome::ok(latency),
        Some((reason, detail)) => ProbeOutcome::fail(reason, latency, detail),
    }
}

/// The failover record named `name` in `ns`; a missing ConfigMap is the default record.
/// A failure names the ConfigMap.
fn record(store: &WatchStore<ConfigMap>, ns: &str, name: &str) -> Result<FailoverRecord, Failure> {
    let found = store
        .read(|cms| cms.get(name).cloned())
        .map_err(|(reason, detail)| (reason, format!("ConfigMap {ns}/{name}: {detail}")))?;
    match found {
        None => Ok(FailoverRecord::default()),
        Some(cm) => crate::record::from_config_map(&cm).map_err(|e| (e.reason(), e.to_string())),
    }
}

/// The recorded Deployments read by name: their views and the names that do not
/// exist; `None` when the cache cannot say.
fn by_name(
    store: &WatchStore<KeptDeployment>,
    names: &[String],
    gate: Option<&str>,
) -> Option<(Vec<DeploymentView>, Vec<String>)> {
    if names.is_empty() {
        return Some((Vec::new(), Vec::new()));
    }
    if gate.is_some() {
        return None;
    }
    store
        .read(|all| {
            let mut views = Vec::new();
            let mut absent = Vec::new();
            for name in names {
                match all.get(name) {
                    Some(d) => views.push(DeploymentFacts::of_kept(d).view(0)),
                    None => absent.push(name.clone()),
                }
            }
            (views, absent)
        })
        .ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judge {
    Primary,
    Standby,
}

/// The Deployments a workload selects, from the cache.
fn select(
    all: &BTreeMap<String, Arc<KeptDeployment>>,
    w: &WorkloadConfig,
) -> Vec<Arc<KeptDeployment>> {
    match (&w.name, &w.selector) {
        (Some(name), _) => all.get(name).cloned().into_iter().collect(),
        (None, Some(text)) => match parse_label_selector(text) {
            Some(sel) => all
                .values()
                .filter(|d| sel.matches(d.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())))
                .cloned()
                .collect(),
            None => Vec::new(),
        },
        (None, None) => Vec::new(),
    }
}

/// One workload's failure (if any) and views, as [`super::workload`] judges them.
fn inspect(
    deployments: &WatchStore<KeptDeployment>,
    pods: &WatchStore<KeptPod>,
    ns: &str,
    w: &WorkloadConfig,
    judge: Judge,
    gate: Option<&str>,
) -> (Option<Failure>, Option<Vec<DeploymentView>>) {
    if let Some(why) = gate {
        let detail = format!("{}: {why}", selection_text(ns, w));
        return (Some((ProbeReason::Error, detail)), None);
    }
    let selected = match deployments.read(|all| select(all, w)) {
        Ok(s) => s,
        Err((reason, detail)) => {
            return (
                Some((reason, format!("{}: {detail}", selection_text(ns, w)))),
                None,
            );
        }
    };
    if selected.is_empty() {
        return (
            Some((ProbeReason::NotFound, nothing_selected(ns, w))),
            Some(Vec::new()),
        );
    }
    let mut failure = None;
    let mut views = Vec::with_capacity(selected.len());
    for d in &selected {
        let facts = DeploymentFacts::of_kept(d);
        let name = format!("{ns}/{}", facts.name);
        let (ready, judged) = match summary(pods, d) {
            Ok(summary) => {
                let judged = match judge {
                    Judge::Primary => judge_primary(&name, &facts, &summary),
                    Judge::Standby => None,
                };
                (summary.ready, judged)
            }
            Err((reason, detail)) => (
                0,
                Some((reason, format!("Pods of Deployment {name}: {detail}"))),
            ),
        };
        views.push(facts.view(ready));
        if failure.is_none() {
            failure = judged;
        }
    }
    (failure, Some(views))
}

/// The Pods a Deployment selects by its own `spec.selector`, summarised.
fn summary(pods: &WatchStore<KeptPod>, deployment: &KeptDeployment) -> Result<PodSummary, Failure> {
    let selector = deployment
        .spec
        .as_ref()
        .and_then(|s| Selector::try_from(s.selector.clone()).ok())
        .filter(|s| !s.selects_all());
    // An empty selector would select every Pod in the namespace; apps/v1 requires one.
    let Some(selector) = selector else {
        return Err((
            ProbeReason::HttpStatus,
            "Deployment has no usable selector".to_string(),
        ));
    };
    let empty = BTreeMap::new();
    pods.read(|all| {
        PodSummary::of(
            all.values()
                .filter(|p| selector.matches(p.metadata.labels.as_ref().unwrap_or(&empty)))
                .map(|p| p.as_ref()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Evidence;
    use kube::runtime::watcher::{self, Event};
    use serde_json::json;

    fn deployment(name: &str, component: &str, replicas: i32, available: i32) -> KeptDeployment {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"env0": component}},
            "spec": {"replicas": replicas,
                     "selector": {"matchLabels": {"env0": component}},
                     "template": {}},
            "status": {"availableReplicas": available}
        }))
        .unwrap()
    }

    fn pod(name: &str, component: &str, ready: bool) -> KeptPod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"env0": component}},
            "status": {"phase": "Running", "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": if ready { "True" } else { "False" }}
            ]}
        }))
        .unwrap()
    }

    /// A store as its first list left it, holding `objects`.
    fn listed<K: kube::Resource + 'static>(what: &str, objects: Vec<K>) -> Arc<WatchStore<K>> {
        let store = WatchStore::new(what);
        store.apply(Event::Init);
        for o in objects {
            store.apply(Event::InitApply(o));
        }
        store.apply(Event::InitDone);
        store
    }

    fn by_name(name: &str) -> WorkloadConfig {
        WorkloadConfig {
            name: Some(name.into()),
            selector: None,
            replicas: 1,
        }
    }

    fn by_selector(selector: &str) -> WorkloadConfig {
        WorkloadConfig {
            name: None,
            selector: Some(selector.into()),
            replicas: 1,
        }
    }

    fn forbidden() -> watcher::Error {
        watcher::Error::InitialListFailed(kube::Error::Api(
            kube::core::Status::failure("pods is forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        ))
    }

    fn refused() -> watcher::Error {
        watcher::Error::InitialListFailed(kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ))))
    }

    /// A workload is judged from the caches by name or by selector, each Deployment with
    /// the Pods its own selector selects; views are kept for every selected one.
    #[test]
    fn workloads_are_judged_from_the_caches() {
        let deployments = listed(
            "Deployments in ns",
            vec![
                deployment("trigger", "agent-trigger", 2, 2),
                deployment("proxy", "agent-proxy", 1, 1),
            ],
        );
        let pods = listed(
            "Pods in ns",
            vec![
                pod("trigger-1", "agent-trigger", true),
                pod("trigger-2", "agent-trigger", false),
                pod("proxy-1", "agent-proxy", true),
            ],
        );
        let (failure, views) = inspect(
            &deployments,
            &pods,
            "ns",
            &by_name("proxy"),
            Judge::Primary,
            None,
        );
        assert_eq!(failure, None);
        let views = views.unwrap();
        assert_eq!(views.len(), 1);
        assert_eq!(
            (
                views[0].name.as_str(),
                views[0].desired,
                views[0].ready_pods
            ),
            ("proxy", 1, 1)
        );

        let trigger = by_selector("env0=agent-trigger");
        let (failure, views) = inspect(&deployments, &pods, "ns", &trigger, Judge::Primary, None);
        assert_eq!(
            failure,
            Some((
                ProbeReason::Unready,
                "Deployment ns/trigger: 2 of 2 available, 1 of 2 Pods Ready".to_string()
            ))
        );
        assert_eq!(views.unwrap()[0].ready_pods, 1);
        // The standby's workloads need only exist.
        let (failure, views) = inspect(&deployments, &pods, "ns", &trigger, Judge::Standby, None);
        assert_eq!(failure, None);
        assert_eq!(views.map(|v| v.len()), Some(1));
    }

    /// Nothing selected is `not_found` with an empty (known) list; a cache that cannot
    /// answer, or cannot be trusted this tick, leaves the list unknown and the signal
    /// unknown, never down.
    #[test]
    fn nothing_selected_is_not_found_and_an_unknown_cache_is_never_down() {
        let deployments = listed("Deployments in ns", vec![deployment("proxy", "p", 1, 1)]);
        let pods = listed::<KeptPod>("Pods in ns", vec![]);
        for w in [by_name("gone"), by_selector("env0=gone")] {
            let (failure, views) = inspect(&deployments, &pods, "ns", &w, Judge::Primary, None);
            assert_eq!(failure.unwrap().0, ProbeReason::NotFound);
            assert_eq!(views, Some(Vec::new()), "read, and nothing matched");
        }
        let (failure, views) = inspect(
            &deployments,
            &pods,
            "ns",
            &by_name("proxy"),
            Judge::Primary,
            None,
        );
        assert_eq!(failure.unwrap().0, ProbeReason::NoPods);
        assert!(views.is_some());

        let starting = WatchStore::<KeptDeployment>::new("Deployments in ns");
        let broken = WatchStore::<KeptDeployment>::new("Deployments in ns");
        broken.fail(&refused());
        for store in [&starting, &broken] {
            let (failure, views) =
                inspect(store, &pods, "ns", &by_name("proxy"), Judge::Primary, None);
            let (reason, detail) = failure.unwrap();
            assert_eq!(reason.evidence(), Evidence::Unknown, "{reason:?}: {detail}");
            assert!(
                detail.starts_with("Deployment ns/proxy: watch of Deployments in ns"),
                "{detail}"
            );
            assert_eq!(views, None);
        }
        let gate = untrusted(&ProbeOutcome::fail(
            ProbeReason::Refused,
            Duration::ZERO,
            "refused",
        ));
        assert!(gate.is_some());
        let (failure, views) = inspect(
            &deployments,
            &pods,
            "ns",
            &by_name("proxy"),
            Judge::Primary,
            gate.as_deref(),
        );
        assert_eq!(
            failure,
            Some((
                ProbeReason::Error,
                "Deployment ns/proxy: cached state not trusted while /readyz fails (refused)"
                    .to_string()
            ))
        );
        assert_eq!(views, None);
        let late = ProbeOutcome::fail(ProbeReason::Unauthorized, Duration::ZERO, "401");
        assert_eq!(untrusted(&late), None, "the API server answered");
    }

    /// The record from the cache: missing is the default record, and a cache that
    /// cannot answer is a failure naming the ConfigMap.
    #[test]
    fn the_record_is_read_from_the_cache_and_its_failures_name_it() {
        let empty = listed::<ConfigMap>("ConfigMaps in ns", vec![]);
        assert_eq!(record(&empty, "ns", "rec"), Ok(FailoverRecord::default()));
        let broken = WatchStore::<ConfigMap>::new("ConfigMaps in ns");
        broken.fail(&forbidden());
        let (reason, detail) = record(&broken, "ns", "rec").unwrap_err();
        assert_eq!(reason, ProbeReason::Forbidden);
        assert!(
            detail.starts_with("ConfigMap ns/rec: watch of ConfigMaps in ns broken: "),
            "{detail}"
        );
    }

    /// A command waits for a cache until it is established, through failures that a
    /// retry mends, but not past its bound, nor for a watch refused on the watcher's
    /// side; what it reports then is never down evidence.
    #[tokio::test(start_paused = true)]
    async fn a_command_waits_for_a_cache_within_its_bound() {
        let bound = Duration::from_secs(10);
        let deadline = || tokio::time::Instant::now() + bound;

        // Listed after a refused first attempt: waited for.
        let store = WatchStore::<ConfigMap>::new("ConfigMaps in ns");
        let later = store.clone();
        let feeder = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            later.fail(&refused());
            tokio::time::sleep(Duration::from_secs(2)).await;
            later.apply(Event::Init);
            later.apply(Event::InitDone);
        });
        let start = tokio::time::Instant::now();
        assert_eq!(established(&store, deadline()).await, Ok(()));
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        feeder.await.unwrap();

        // Never listed: the store's failure at the bound, unknown.
        let store = WatchStore::<ConfigMap>::new("ConfigMaps in ns");
        let start = tokio::time::Instant::now();
        let (reason, detail) = established(&store, deadline()).await.unwrap_err();
        assert_eq!(start.elapsed(), bound);
        assert_eq!(reason, ProbeReason::Error);
        assert_eq!(detail, "watch of ConfigMaps in ns not established yet");
        store.fail(&refused());
        let (reason, _) = established(&store, deadline()).await.unwrap_err();
        assert_eq!(reason.evidence(), Evidence::Unknown, "{reason:?}");

        // Refused by RBAC: at once.
        let store = WatchStore::<ConfigMap>::new("ConfigMaps in ns");
        store.fail(&forbidden());
        let start = tokio::time::Instant::now();
        let (reason, _) = established(&store, deadline()).await.unwrap_err();
        assert_eq!(reason, ProbeReason::Forbidden);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    /// `/readyz` saying the API server cannot be reached ends the wait for caches that
    /// have not started (none starts then, and none would be trusted); any other answer
    /// waits for them.
    #[tokio::test(start_paused = true)]
    async fn an_unreachable_api_server_ends_the_wait_for_caches() {
        let at = Instant::now();
        let answer = |reason| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            (
                at,
                ProbeOutcome::fail(reason, Duration::from_millis(5), "x"),
            )
        };
        let never = std::future::pending::<()>();
        let start = tokio::time::Instant::now();
        let (_, api) = answer_with_caches(answer(ProbeReason::Refused), never).await;
        assert_eq!(api.reason, ProbeReason::Refused);
        assert_eq!(start.elapsed(), Duration::from_millis(5));

        let slow = tokio::time::sleep(Duration::from_secs(2));
        let start = tokio::time::Instant::now();
        let (_, api) = answer_with_caches(answer(ProbeReason::Unauthorized), slow).await;
        assert_eq!(api.reason, ProbeReason::Unauthorized);
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }
}

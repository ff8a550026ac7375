//! The probes of a tick as the daemon runs them: `/readyz` shared per cluster and
//! interval, Deployments, Pods and the failover record read from the cluster's
//! watch-backed caches ([`crate::kube::watch_cache`]), judged exactly as the listing probes in
//! [`super::workload`] judge them.
//!
//! A cache whose watch is not established makes the signals it feeds unknown, and so
//! does a `/readyz` answer saying the API server cannot be reached (the caches are
//! restarted then): the API signal carries the down evidence, the cached signals never
//! carry a stale one.

use super::workload::{DeploymentFacts, PodSummary, judge_primary, nothing_selected};
use super::{http, merge_views};
use crate::config::{GroupConfig, WorkloadConfig};
use crate::kube::cluster::ClusterHandle;
use crate::kube::watch_cache::WatchStore;
use crate::model::{
    DeploymentView, FailoverRecord, PrimaryObservation, ProbeOutcome, ProbeReason,
    StandbyObservation,
};
use crate::selection::{parse_label_selector, selection_text};
use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::core::{Selector, SelectorExt};
use std::collections::BTreeMap;
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

/// Probes the primary of `group` (see [`super::probe_primary`] for what each signal
/// means) from the cluster's caches.
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
    let ((sent, api), checks, _, _) = tokio::join!(
        cluster.readyz_since(shared_readyz, not_before),
        checks,
        deployments.wait_started(timeout),
        pods.wait_started(timeout)
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

/// Probes the standby of `group` (see [`super::probe_standby`]) from the caches.
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
    let guards_started = async {
        if let Some(g) = &guards {
            g.wait_started(timeout).await;
        }
    };
    let (api, _, _, _, _) = tokio::join!(
        cluster.readyz(shared_readyz),
        deployments.wait_started(timeout),
        pods.wait_started(timeout),
        configmaps.wait_started(timeout),
        guards_started
    );
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
        None => record(&configmaps, &group.record_name())
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

/// The failover record named `name`; a missing ConfigMap is the default record.
fn record(store: &WatchStore<ConfigMap>, name: &str) -> Result<FailoverRecord, Failure> {
    let found = store.read(|cms| cms.get(name).cloned())?;
    match found {
        None => Ok(FailoverRecord::default()),
        Some(cm) => crate::record::from_config_map(&cm).map_err(|e| (e.reason(), e.to_string())),
    }
}

/// The recorded Deployments read by name: their views and the names that do not
/// exist; `None` when the cache cannot say.
fn by_name(
    store: &WatchStore<Deployment>,
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
                    Some(d) => views.push(DeploymentFacts::of(d).view(0)),
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
fn select(all: &BTreeMap<String, Arc<Deployment>>, w: &WorkloadConfig) -> Vec<Arc<Deployment>> {
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
    deployments: &WatchStore<Deployment>,
    pods: &WatchStore<Pod>,
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
        let facts = DeploymentFacts::of(d);
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
fn summary(pods: &WatchStore<Pod>, deployment: &Deployment) -> Result<PodSummary, Failure> {
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

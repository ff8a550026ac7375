//! Probes: turn one cluster's answers into the [`PrimaryObservation`] and
//! [`StandbyObservation`] of a tick. Every call is bounded by the probe timeout, nothing
//! here panics, and every failure becomes a bounded [`ProbeReason`] with a short detail
//! that names the object but never a credential.
//!
//! Call plumbing (bounds, classification) lives in [`crate::kube::call`] and workload
//! selection in [`crate::selection`], shared with the actuator and the record.

pub mod api;
pub mod cached;
pub mod guards;
pub mod http;
pub mod workload;

use crate::config::{GroupConfig, HttpCheckConfig, WorkloadConfig};
use crate::kube::call::classify_elapsed;
use crate::model::{
    DeploymentView, FailoverRecord, PrimaryObservation, ProbeOutcome, SignalId, StandbyObservation,
};
use futures::future::join_all;
use std::time::{Duration, Instant};

/// Probes the primary cluster of `group`: API `/readyz`, one signal per workload and
/// every HTTP check, all concurrently, each bounded by `timeout` (an HTTP check by its
/// own timeout when it has one). `recorded` names Deployments of the failover record
/// that are read by name as well, so a relabelled one is still seen (and fenced).
pub async fn probe_primary(
    client: &kube::Client,
    group: &GroupConfig,
    http_client: &reqwest::Client,
    timeout: Duration,
    recorded: &[String],
) -> PrimaryObservation {
    let ns = group.primary.namespace.as_str();
    let workloads = join_all(
        group
            .workloads
            .iter()
            .map(|w| workload::probe_primary_workload(client, ns, w, timeout)),
    );
    let checks = join_all(
        group
            .http_checks
            .iter()
            .map(|c| http::check(http_client, c, timeout)),
    );
    let by_name = workload::views_by_name(client, ns, recorded, timeout);
    let (api, workloads, checks, by_name) =
        tokio::join!(api::readyz(client, timeout), workloads, checks, by_name);

    let workloads = group
        .workloads
        .iter()
        .zip(workloads)
        .map(|(w, probe)| (w, probe.outcome, probe.views));
    primary_observation(group, api, workloads, checks, by_name)
}

/// Puts one tick's primary answers together, each outcome with its signal id; the
/// views of every workload and of the recorded Deployments are merged, and any view
/// that could not be had makes the whole list unknown.
pub(super) fn primary_observation<'a>(
    group: &GroupConfig,
    api: ProbeOutcome,
    workloads: impl Iterator<
        Item = (
            &'a WorkloadConfig,
            ProbeOutcome,
            Option<Vec<DeploymentView>>,
        ),
    >,
    checks: Vec<ProbeOutcome>,
    by_name: Option<(Vec<DeploymentView>, Vec<String>)>,
) -> PrimaryObservation {
    let mut outcomes = Vec::with_capacity(group.workloads.len());
    let mut deployments = Some(Vec::new());
    for (w, outcome, views) in workloads {
        merge_views(&mut deployments, views);
        outcomes.push((workload_signal(w), outcome));
    }
    let mut absent = Vec::new();
    match by_name {
        Some((views, gone)) => {
            merge_views(&mut deployments, Some(views));
            absent = gone;
        }
        None => deployments = None,
    }
    PrimaryObservation {
        api,
        workloads: outcomes,
        http: group
            .http_checks
            .iter()
            .map(http_signal)
            .zip(checks)
            .collect(),
        deployments,
        absent,
        watches_starting: false,
    }
}

/// The primary's signals of `group`, built once from the config: the API, each
/// workload, each HTTP check. Outcomes carry the same ids.
pub fn signal_ids(group: &GroupConfig) -> Vec<SignalId> {
    std::iter::once(SignalId::Api)
        .chain(group.workloads.iter().map(workload_signal))
        .chain(group.http_checks.iter().map(http_signal))
        .collect()
}

fn workload_signal(w: &WorkloadConfig) -> SignalId {
    SignalId::Workload(match (&w.name, &w.selector) {
        (Some(n), _) => n.clone(),
        (None, Some(s)) => s.clone(),
        (None, None) => "?".to_string(),
    })
}

fn http_signal(c: &HttpCheckConfig) -> SignalId {
    SignalId::Http(c.name.clone())
}

/// Probes the standby cluster of `group`: API `/readyz`, whether every selected
/// Deployment exists, their views, and the failover record; concurrently, each bounded
/// by `timeout`.
pub async fn probe_standby(
    client: &kube::Client,
    group: &GroupConfig,
    timeout: Duration,
) -> StandbyObservation {
    let ns = group.standby.namespace.as_str();
    let record_name = group.record_name();
    let workloads = join_all(
        group
            .workloads
            .iter()
            .map(|w| workload::probe_standby_workload(client, ns, w, timeout)),
    );
    let (api, workloads, record) = tokio::join!(
        api::readyz(client, timeout),
        workloads,
        read_record(client, ns, &record_name, timeout)
    );

    let mut deployments = Some(Vec::new());
    // The first failing workload decides the outcome; its latency is the slowest one's,
    // since the workloads were probed concurrently.
    let mut outcome: Option<ProbeOutcome> = None;
    let mut latency = Duration::ZERO;
    for probe in workloads {
        latency = latency.max(probe.outcome.latency);
        merge_views(&mut deployments, probe.views);
        if !probe.outcome.passed() && outcome.is_none() {
            outcome = Some(probe.outcome);
        }
    }
    let workloads = outcome.unwrap_or_else(|| ProbeOutcome::ok(latency));
    StandbyObservation {
        api,
        workloads,
        deployments,
        record,
        state_checks: Vec::new(),
        // The guards' heartbeats are read from the daemon's caches only.
        guards: None,
    }
}

/// Reads the failover record for a probe: a missing ConfigMap is the default record
/// (phase unset, so the primary is active), anything else that fails is classified.
async fn read_record(
    client: &kube::Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<FailoverRecord, ProbeOutcome> {
    let start = Instant::now();
    let result = tokio::time::timeout(timeout, crate::record::read(client, ns, name)).await;
    let latency = start.elapsed();
    match result {
        Ok(Ok(rec)) => Ok(rec.unwrap_or_default()),
        Ok(Err(err)) => Err(ProbeOutcome::fail(err.reason(), latency, err.to_string())),
        Err(elapsed) => Err(ProbeOutcome::fail(
            classify_elapsed(&elapsed),
            latency,
            format!("ConfigMap {ns}/{name}: no answer within {timeout:?}"),
        )),
    }
}

/// Adds one workload's views to the group's; a workload whose Deployments could not be
/// listed makes the whole list unknown, because a partial list would make a primary
/// look fenced (every listed Deployment at 0) when it may not be.
fn merge_views(
    all: &mut Option<Vec<crate::model::DeploymentView>>,
    views: Option<Vec<crate::model::DeploymentView>>,
) {
    match (all.as_mut(), views) {
        (Some(all), Some(views)) => {
            for v in views {
                // Two selectors may select the same Deployment: list it once.
                if !all.iter().any(|d| d.name == v.name) {
                    all.push(v);
                }
            }
        }
        _ => *all = None,
    }
}

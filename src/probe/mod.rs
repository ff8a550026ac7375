//! Probes: turn one cluster's answers into the [`PrimaryObservation`] and
//! [`crate::model::StandbyObservation`] of a tick. One path, [`cached`]: the daemon's ticks
//! and the operator's commands read Deployments, Pods and the record from the cluster's
//! watch-backed caches and share its `/readyz`. Every call is bounded by the probe
//! timeout, nothing here panics, and every failure becomes a bounded
//! [`crate::model::ProbeReason`] with a short detail that names the object but never a
//! credential.
//!
//! Call plumbing (bounds, classification) lives in [`crate::kube::call`] and workload
//! selection in [`crate::selection`], shared with the actuator and the record.

pub mod api;
pub mod cached;
pub mod guards;
pub mod http;
pub mod workload;

use crate::config::{GroupConfig, HttpCheckConfig, WorkloadConfig};
use crate::model::{DeploymentView, PrimaryObservation, ProbeOutcome, SignalId};

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

/// Adds one workload's views to the group's; a workload whose Deployments could not be
/// read makes the whole list unknown, because a partial list would make a primary
/// look fenced (every listed Deployment at 0) when it may not be.
fn merge_views(all: &mut Option<Vec<DeploymentView>>, views: Option<Vec<DeploymentView>>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn view(name: &str, desired: i32) -> DeploymentView {
        DeploymentView {
            name: name.into(),
            uid: None,
            desired,
            available: desired,
            ready_pods: desired,
            epoch: None,
        }
    }

    fn group() -> GroupConfig {
        let side = || crate::config::ClusterConfig {
            kubeconfig: None,
            context: None,
            namespace: "agents".into(),
        };
        let workload = |name: Option<&str>, selector: Option<&str>| WorkloadConfig {
            name: name.map(str::to_string),
            selector: selector.map(str::to_string),
            replicas: 1,
        };
        GroupConfig {
            name: "env0".into(),
            primary: side(),
            standby: side(),
            workloads: vec![
                workload(None, Some("env0=agent-trigger")),
                workload(Some("proxy"), None),
            ],
            policy: Default::default(),
            http_checks: vec![HttpCheckConfig {
                name: "agent".into(),
                url: "http://127.0.0.1:1/".into(),
                expected_status: 200,
                timeout: None,
            }],
            record_name: None,
            state: Default::default(),
            drift: Default::default(),
            guards: Default::default(),
        }
    }

    /// One tick's answers become the Observation: outcomes under their signal ids, the
    /// views merged (a Deployment two workloads select listed once), the recorded names
    /// that do not exist kept; a workload or a recorded Deployment that could not be
    /// read makes the views unknown, never a shorter list that could look fenced.
    #[test]
    fn views_are_merged_and_one_unknown_makes_them_all_unknown() {
        let g = group();
        let ok = || ProbeOutcome::ok(Duration::from_millis(1));
        let answers = |second: Option<Vec<DeploymentView>>, by_name| {
            let views = [Some(vec![view("trigger", 1), view("proxy", 1)]), second];
            let workloads = g.workloads.iter().zip(views).map(|(w, v)| (w, ok(), v));
            primary_observation(
                &g,
                ok(),
                workloads,
                vec![ok(); g.http_checks.len()],
                by_name,
            )
        };
        let obs = answers(
            Some(vec![view("proxy", 1)]),
            Some((vec![view("old", 0)], vec!["gone".into()])),
        );
        let ids: Vec<SignalId> = std::iter::once(SignalId::Api)
            .chain(obs.workloads.iter().map(|(id, _)| id.clone()))
            .chain(obs.http.iter().map(|(id, _)| id.clone()))
            .collect();
        assert_eq!(ids, signal_ids(&g));
        let names: Vec<String> = obs
            .deployments
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, ["trigger", "proxy", "old"]);
        assert_eq!(obs.absent, ["gone"]);

        assert_eq!(answers(None, Some((vec![], vec![]))).deployments, None);
        assert_eq!(answers(Some(vec![]), None).deployments, None);
    }
}

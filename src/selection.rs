//! Which Deployments a workload selects (by name or label selector), how a selection
//! reads in messages, and the facts read from a Deployment object. Shared by the probes
//! and the actuator, so both select and describe a workload the same way.

use crate::config::WorkloadConfig;
use crate::model::{DeploymentView, EPOCH_ANNOTATION};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams};

/// Fetches the Deployments a workload selects: by name (`get`) or by label selector
/// (`list`). An empty result means nothing matched; the caller decides what that means.
pub async fn select(
    api: &Api<Deployment>,
    workload: &WorkloadConfig,
) -> Result<Vec<Deployment>, kube::Error> {
    match (&workload.name, &workload.selector) {
        (Some(name), _) => Ok(api.get_opt(name).await?.into_iter().collect()),
        (None, Some(selector)) => Ok(api
            .list(&ListParams::default().labels(selector))
            .await?
            .items),
        // Validation rejects this; selecting nothing is the safe reading.
        (None, None) => Ok(Vec::new()),
    }
}

/// How a workload's selection reads in a message: `Deployment ns/name` or
/// `Deployments in ns matching sel`.
pub fn selection_text(namespace: &str, workload: &WorkloadConfig) -> String {
    match (&workload.name, &workload.selector) {
        (Some(name), _) => format!("Deployment {namespace}/{name}"),
        (None, Some(sel)) => format!("Deployments in {namespace} matching {sel}"),
        (None, None) => format!("Deployments in {namespace} (no selection)"),
    }
}

/// The message for a selection that matched nothing.
pub fn nothing_selected(namespace: &str, workload: &WorkloadConfig) -> String {
    match (&workload.name, &workload.selector) {
        (Some(name), _) => format!("Deployment {namespace}/{name} not found"),
        (None, Some(sel)) => format!("no Deployment in {namespace} matches {sel}"),
        (None, None) => format!("no Deployment selected in {namespace}"),
    }
}

/// What a probe needs from a Deployment object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentFacts {
    /// `metadata.name`.
    pub name: String,
    /// `spec.replicas`; the API server defaults a missing value to 1.
    pub desired: i32,
    /// `status.availableReplicas`, 0 when unset.
    pub available: i32,
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.resourceVersion`: the precondition of a scale write.
    pub resource_version: Option<String>,
    /// The promotion epoch annotation, when present and readable.
    pub epoch: Option<u64>,
}

impl DeploymentFacts {
    /// Reads the facts from a Deployment object.
    pub fn of(deployment: &Deployment) -> Self {
        DeploymentFacts {
            name: deployment.metadata.name.clone().unwrap_or_default(),
            desired: deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1),
            available: deployment
                .status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0),
            uid: deployment.metadata.uid.clone(),
            resource_version: deployment.metadata.resource_version.clone(),
            epoch: deployment
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(EPOCH_ANNOTATION))
                .and_then(|v| v.trim().parse().ok()),
        }
    }

    /// The view the engine sees, given how many of its Pods are Ready.
    pub fn view(&self, ready_pods: i32) -> DeploymentView {
        DeploymentView {
            name: self.name.clone(),
            uid: self.uid.clone(),
            desired: self.desired,
            available: self.available,
            ready_pods,
            epoch: self.epoch,
        }
    }
}

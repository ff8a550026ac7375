//! Scaling: promotion (standby up), fencing (primary down) and correcting the standby
//! back to 0, each only after re-reading the record, and each write on condition of the
//! Deployment's resourceVersion.

use super::{ActionReport, ActuateError, Actuator, COMPONENT, ScaleChange, Side};
use crate::config::WorkloadConfig;
use crate::error_chain::chain;
use crate::kube::call::{CallError, bounded};
use crate::model::{Action, EPOCH_ANNOTATION, FailbackStep, FailoverRecord, RecordPhase};
use crate::selection::{DeploymentFacts, nothing_selected, select, selection_text};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};

/// What a scaling action does to each selected Deployment.
#[derive(Debug, Clone, Copy)]
pub(super) enum Scaling {
    /// Standby to each workload's promoted replica count; a workload selecting nothing
    /// is an error (there is nothing to promote).
    Promote,
    /// Primary to 0.
    Fence,
    /// Standby to 0 while the primary is active.
    Correct,
    /// An operator's failback, first step: standby to 0 while the record still says
    /// the standby is active and `failback_step` is `standby_down`.
    FailbackStandbyDown,
    /// An operator's failback, last step: primary to each workload's replica count
    /// while the record says `primary` and `failback_step` is `primary_up`.
    FailbackPrimaryUp,
}

impl Scaling {
    fn side(self) -> Side {
        match self {
            Scaling::Promote | Scaling::Correct | Scaling::FailbackStandbyDown => Side::Standby,
            Scaling::Fence | Scaling::FailbackPrimaryUp => Side::Primary,
        }
    }

    fn target(self, workload: &WorkloadConfig) -> i32 {
        match self {
            Scaling::Promote | Scaling::FailbackPrimaryUp => workload.replicas,
            Scaling::Fence | Scaling::Correct | Scaling::FailbackStandbyDown => 0,
        }
    }

    pub(super) fn event_reason(self) -> &'static str {
        match self {
            Scaling::Promote => "KubeFailoverPromoted",
            Scaling::Fence => "KubeFailoverFenced",
            Scaling::Correct => "KubeFailoverStandbyCorrected",
            Scaling::FailbackStandbyDown => "KubeFailoverFailbackStandbyDown",
            Scaling::FailbackPrimaryUp => "KubeFailoverFailbackPrimaryUp",
        }
    }

    pub(super) fn event_type(self) -> &'static str {
        match self {
            Scaling::Promote | Scaling::FailbackPrimaryUp => "Normal",
            // Scaling down a workload someone may be relying on deserves attention.
            Scaling::Fence | Scaling::Correct | Scaling::FailbackStandbyDown => "Warning",
        }
    }

    pub(super) fn what(self) -> &'static str {
        match self {
            Scaling::Promote => "promotion",
            Scaling::Fence => "fencing the old primary",
            Scaling::Correct => "standby must stay at 0 while the primary is active",
            Scaling::FailbackStandbyDown => "failback: the standby goes to 0 first",
            Scaling::FailbackPrimaryUp => "failback: the primary comes back up",
        }
    }
}

impl Actuator {
    /// Re-reads the record just before scaling and goes ahead only if phase and epoch
    /// are still those the decision was made on: a person's failback, another writer's
    /// promotion or a lost record stops the scale instead of being overwritten.
    async fn check_fresh(
        &self,
        scaling: Scaling,
        epoch: u64,
    ) -> Result<FailoverRecord, ActuateError> {
        let name = self.group.record_name();
        let current = self.read_record().await?;
        let phase = current.as_ref().map(FailoverRecord::effective_phase);
        let still = match (scaling, &current) {
            (Scaling::Promote | Scaling::Fence, Some(r)) => {
                r.effective_phase().standby_active() && r.epoch == epoch
            }
            (Scaling::Promote | Scaling::Fence, None) => false,
            (Scaling::Correct, Some(r)) => {
                r.effective_phase() == RecordPhase::Primary && r.epoch == epoch
            }
            (Scaling::Correct, None) => epoch == 0,
            (Scaling::FailbackStandbyDown, Some(r)) => {
                r.effective_phase().standby_active()
                    && r.epoch == epoch
                    && r.failback_step == Some(FailbackStep::StandbyDown)
            }
            (Scaling::FailbackPrimaryUp, Some(r)) => {
                r.effective_phase() == RecordPhase::Primary
                    && r.epoch == epoch
                    && r.failback_step == Some(FailbackStep::PrimaryUp)
            }
            (Scaling::FailbackStandbyDown | Scaling::FailbackPrimaryUp, None) => false,
        };
        if !still {
            return Err(self.stale(
                &name,
                format!(
                    "{}: the record is now {}, the decision was made on epoch {epoch}; \
                     not scaling",
                    scaling.what(),
                    match (phase, &current) {
                        (Some(p), Some(r)) => format!("phase {} epoch {}", p.as_str(), r.epoch),
                        _ => "missing".to_string(),
                    }
                ),
            ));
        }
        Ok(current.unwrap_or_default())
    }

    /// A step of an operator's failback: scales the standby to 0 (`standby_down`) or
    /// the primary up (`primary_up`), only if the record still says that step at `epoch`.
    pub async fn failback_scale(
        &self,
        step: FailbackStep,
        epoch: u64,
    ) -> Result<ActionReport, ActuateError> {
        let (scaling, kind) = match step {
            FailbackStep::StandbyDown => (Scaling::FailbackStandbyDown, "failback_standby_down"),
            FailbackStep::PrimaryUp => (Scaling::FailbackPrimaryUp, "failback_primary_up"),
        };
        let report = ActionReport {
            action: kind,
            ..ActionReport::default()
        };
        self.scale_with(report, scaling, epoch, &[]).await
    }

    pub(super) async fn scale(
        &self,
        action: &Action,
        scaling: Scaling,
        epoch: u64,
        names: &[String],
    ) -> Result<ActionReport, ActuateError> {
        self.scale_with(ActionReport::new(action), scaling, epoch, names)
            .await
    }

    async fn scale_with(
        &self,
        mut report: ActionReport,
        scaling: Scaling,
        epoch: u64,
        names: &[String],
    ) -> Result<ActionReport, ActuateError> {
        let context = self.check_fresh(scaling, epoch).await?;
        let side = scaling.side();
        let (client, ns) = match side {
            Side::Primary => (&self.primary, self.group.primary.namespace.as_str()),
            Side::Standby => (&self.standby, self.group.standby.namespace.as_str()),
        };
        let api: Api<Deployment> = Api::namespaced((**client).clone(), ns);
        let mut seen: Vec<String> = Vec::new();
        // Best effort across Deployments: fencing one Deployment must not wait for
        // another that failed; the first error is returned after all were tried.
        let mut first_error: Option<ActuateError> = None;
        let mut targets: Vec<(Deployment, i32)> = Vec::new();

        for workload in &self.group.workloads {
            let selected = match bounded(self.call_timeout, select(&api, workload)).await {
                Ok(selected) => selected,
                Err(source) => {
                    first_error.get_or_insert(ActuateError::Call {
                        side,
                        namespace: ns.to_string(),
                        op: "list",
                        object: selection_text(ns, workload),
                        source,
                    });
                    continue;
                }
            };
            if selected.is_empty() && matches!(scaling, Scaling::Promote) {
                first_error.get_or_insert(ActuateError::NothingSelected {
                    side,
                    namespace: ns.to_string(),
                    detail: nothing_selected(ns, workload),
                });
                continue;
            }
            let target = scaling.target(workload);
            for deployment in selected {
                let name = deployment.metadata.name.clone().unwrap_or_default();
                if !seen.contains(&name) {
                    seen.push(name);
                    targets.push((deployment, target));
                }
            }
        }
        // Fencing also goes by the names in the record: a Deployment that a chart
        // upgrade relabelled no longer matches the selector but still runs.
        for name in names.iter().filter(|n| !seen.contains(n)) {
            match bounded(self.call_timeout, api.get_opt(name)).await {
                Ok(Some(deployment)) => targets.push((deployment, 0)),
                Ok(None) => {}
                Err(source) => {
                    first_error.get_or_insert(ActuateError::Call {
                        side,
                        namespace: ns.to_string(),
                        op: "get",
                        object: format!("Deployment {name}"),
                        source,
                    });
                }
            }
        }

        for (deployment, target) in targets {
            let facts = DeploymentFacts::of(&deployment);
            if facts.desired == target {
                continue;
            }
            let name = facts.name.clone();
            if let Some(err) = self.refused(|| format!("{side} scale of Deployment {name}")) {
                first_error.get_or_insert(err);
                break;
            }
            let written = match self.scale_one(&api, &facts, scaling, epoch, target).await {
                Ok(()) => Ok(Some((deployment, facts))),
                Err(err) if err.status_code() == Some(409) => {
                    self.after_conflict(&api, &name, scaling, epoch, target, err)
                        .await
                }
                Err(err) => Err(err),
            };
            let (deployment, facts) = match written {
                Ok(Some(written)) => written,
                Ok(None) => continue,
                Err(source) => {
                    first_error.get_or_insert(ActuateError::Call {
                        side,
                        namespace: ns.to_string(),
                        op: "scale",
                        object: format!("Deployment {name}"),
                        source,
                    });
                    continue;
                }
            };
            let change = ScaleChange {
                side,
                namespace: ns.to_string(),
                deployment: facts.name.clone(),
                from: facts.desired,
                to: target,
            };
            self.emit_event(client, &deployment, scaling, &change, &context)
                .await;
            report.scaled.push(change);
        }
        match first_error {
            None => Ok(report),
            Some(err) => {
                if !report.scaled.is_empty() {
                    // The error replaces the report, so say here what did change.
                    tracing::warn!(
                        group = %self.group.name,
                        changed = %report,
                        error = %chain(&err),
                        "action partly carried out"
                    );
                }
                Err(err)
            }
        }
    }

    /// After a 409 on `name`: it changed since it was read (another writer, a person, a
    /// controller). Reads it again: already at `target` (another instance or an
    /// operator's command did the same) is done with nothing written, `Ok(None)`;
    /// otherwise one more try on the fresh reading, which is what the next tick would
    /// do. Returns the Deployment and its facts as scaled from.
    async fn after_conflict(
        &self,
        api: &Api<Deployment>,
        name: &str,
        scaling: Scaling,
        epoch: u64,
        target: i32,
        conflict: CallError,
    ) -> Result<Option<(Deployment, DeploymentFacts)>, CallError> {
        let Some(deployment) = bounded(self.call_timeout, api.get_opt(name)).await? else {
            return Err(conflict);
        };
        let facts = DeploymentFacts::of(&deployment);
        if facts.desired == target {
            tracing::info!(
                group = %self.group.name,
                deployment = %name,
                replicas = target,
                "{}: another writer scaled the Deployment first; nothing to write",
                scaling.what()
            );
            return Ok(None);
        }
        if !self.may_write() {
            // No longer the leader after the read: the conflict stands, not retried.
            return Err(conflict);
        }
        self.scale_one(api, &facts, scaling, epoch, target).await?;
        Ok(Some((deployment, facts)))
    }

    /// Scales one Deployment through the scale subresource, on condition that it is
    /// still at the resourceVersion it was read at: a concurrent change (a person, a
    /// controller) makes the write fail with 409, and it is read again and retried once
    /// ([`Self::after_conflict`]) instead of overwritten blindly. A promotion first
    /// marks the Deployment with its epoch.
    async fn scale_one(
        &self,
        api: &Api<Deployment>,
        facts: &DeploymentFacts,
        scaling: Scaling,
        epoch: u64,
        target: i32,
    ) -> Result<(), CallError> {
        let params = PatchParams {
            field_manager: Some(COMPONENT.to_string()),
            ..PatchParams::default()
        };
        let mut resource_version = facts.resource_version.clone();
        if matches!(scaling, Scaling::Promote) && facts.epoch != Some(epoch) {
            let mark = Patch::Merge(serde_json::json!({"metadata": {
                "resourceVersion": resource_version,
                "annotations": {EPOCH_ANNOTATION: epoch.to_string()},
            }}));
            match bounded(self.call_timeout, api.patch(&facts.name, &params, &mark)).await {
                Ok(marked) => resource_version = marked.metadata.resource_version,
                // 409: someone changed it since it was read; nothing was scaled yet.
                Err(err) if err.status_code() == Some(409) => return Err(err),
                // The mark keeps epochs unique after a lost record; a Role without
                // `patch` on Deployments must not stop a promotion.
                Err(err) => tracing::warn!(
                    group = %self.group.name,
                    deployment = %facts.name,
                    reason = err.reason().as_str(),
                    error = %err,
                    "could not mark the Deployment with the promotion epoch; scaling anyway"
                ),
            }
        }
        let patch = Patch::Merge(serde_json::json!({
            "metadata": {"resourceVersion": resource_version},
            "spec": {"replicas": target},
        }));
        bounded(
            self.call_timeout,
            api.patch_scale(&facts.name, &params, &patch),
        )
        .await
        .map(|_| ())
    }
}

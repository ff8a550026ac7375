//! The actuator: carries out the engine's [`Action`]s as Kubernetes calls. Scaling
//! goes through the scale subresource, record writes carry resourceVersion
//! preconditions, and every Deployment scaled gets an Event.
//!
//! Every action is idempotent: it looks at the current state first and changes only
//! what differs, so repeating an action after a crash (or a lost answer) is safe.
//! Every call is bounded by the actuator's call timeout.

use crate::config::{GroupConfig, WorkloadConfig};
use crate::kube_call::{CallError, bounded};
use crate::model::{
    Action, DeploymentRef, EPOCH_ANNOTATION, FailoverRecord, Observation, ProbeReason, ReasonCode,
    RecordPhase,
};
use crate::record::{self, RecordError};
use crate::selection::{DeploymentFacts, nothing_selected, select, selection_text};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::time::Duration;

/// The component name on Events and the field manager on writes.
const COMPONENT: &str = "kube-failover";

pub use crate::model::Side;

/// One Deployment whose replica count the actuator changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScaleChange {
    /// The cluster the Deployment is in.
    pub side: Side,
    pub namespace: String,
    /// The Deployment's name.
    pub deployment: String,
    /// `spec.replicas` before.
    pub from: i32,
    /// `spec.replicas` after.
    pub to: i32,
}

/// What an action changed, for the daemon's log line and `/status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionReport {
    /// [`Action::kind`] of the action carried out.
    pub action: &'static str,
    /// Deployments scaled (empty when every one already had its target count).
    pub scaled: Vec<ScaleChange>,
    /// For record actions: the record as stored afterwards (with its new
    /// resourceVersion), whether or not this call had to write it.
    pub record: Option<FailoverRecord>,
    /// True when the record action wrote; false when the record already said so.
    pub record_written: bool,
}

impl ActionReport {
    fn new(action: &Action) -> Self {
        ActionReport {
            action: action.kind(),
            scaled: Vec::new(),
            record: None,
            record_written: false,
        }
    }

    /// True when the action changed something (scaled a Deployment or wrote the
    /// record); false when it found everything already as wanted.
    pub fn changed(&self) -> bool {
        !self.scaled.is_empty() || self.record_written
    }
}

impl fmt::Display for ActionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.action)?;
        if !self.changed() {
            f.write_str(" nothing to change")?;
        }
        for (i, c) in self.scaled.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(
                f,
                "{sep}{} {}/{} {}->{}",
                c.side, c.namespace, c.deployment, c.from, c.to
            )?;
        }
        if let (Some(r), true) = (&self.record, self.record_written) {
            write!(
                f,
                " record phase {} epoch {}",
                r.effective_phase().as_str(),
                r.epoch
            )?;
        }
        Ok(())
    }
}

/// Why an action failed. The message names the cluster, namespace and object.
#[derive(Debug, thiserror::Error)]
pub enum ActuateError {
    /// A Kubernetes call failed or timed out.
    #[error("{side} cluster, namespace {namespace}: {op} {object}: {source}")]
    Call {
        side: Side,
        namespace: String,
        op: &'static str,
        object: String,
        #[source]
        source: CallError,
    },
    /// A workload to scale up selects no Deployment.
    #[error("{side} cluster: {detail}")]
    NothingSelected {
        side: Side,
        namespace: String,
        detail: String,
    },
    /// Reading or writing the failover record failed.
    #[error("standby cluster, namespace {namespace}: {source}")]
    Record {
        namespace: String,
        #[source]
        source: RecordError,
    },
    /// The record could not be read this tick, so it is not written blind.
    #[error(
        "standby cluster, namespace {namespace}: ConfigMap {name} could not be read \
         ({detail}); not writing it blind"
    )]
    RecordUnknown {
        namespace: String,
        name: String,
        reason: ProbeReason,
        detail: String,
    },
    /// The record is not in the state the action expects (another epoch, or a phase
    /// the action must not overwrite): someone else moved it on.
    #[error("standby cluster, namespace {namespace}: ConfigMap {name}: {detail}")]
    Stale {
        namespace: String,
        name: String,
        detail: String,
    },
}

impl ActuateError {
    /// A bounded label for metrics: conflict, forbidden, not_found, timeout, connect
    /// or error.
    pub fn reason(&self) -> &'static str {
        match self {
            ActuateError::Call { source, .. } => {
                if source.status_code() == Some(409) {
                    "conflict"
                } else {
                    label(source.reason())
                }
            }
            ActuateError::NothingSelected { .. } => "not_found",
            ActuateError::Record { source, .. } => match source {
                RecordError::Conflict { .. } => "conflict",
                RecordError::Invalid { .. } => "error",
                RecordError::Api { .. } => label(source.reason()),
            },
            ActuateError::RecordUnknown { reason, .. } => label(*reason),
            ActuateError::Stale { .. } => "conflict",
        }
    }
}

fn label(reason: ProbeReason) -> &'static str {
    match reason {
        ProbeReason::Forbidden | ProbeReason::Unauthorized => "forbidden",
        ProbeReason::NotFound => "not_found",
        ProbeReason::Timeout => "timeout",
        ProbeReason::Refused | ProbeReason::Connect | ProbeReason::Tls => "connect",
        _ => "error",
    }
}

/// What a scaling action does to each selected Deployment.
#[derive(Debug, Clone, Copy)]
enum Scaling {
    /// Standby to each workload's promoted replica count; a workload selecting nothing
    /// is an error (there is nothing to promote).
    Promote,
    /// Primary to 0.
    Fence,
    /// Standby to 0 while the primary is active.
    Correct,
}

impl Scaling {
    fn side(self) -> Side {
        match self {
            Scaling::Promote => Side::Standby,
            Scaling::Fence => Side::Primary,
            Scaling::Correct => Side::Standby,
        }
    }

    fn target(self, workload: &WorkloadConfig) -> i32 {
        match self {
            Scaling::Promote => workload.replicas,
            Scaling::Fence | Scaling::Correct => 0,
        }
    }

    fn event_reason(self) -> &'static str {
        match self {
            Scaling::Promote => "KubeFailoverPromoted",
            Scaling::Fence => "KubeFailoverFenced",
            Scaling::Correct => "KubeFailoverStandbyCorrected",
        }
    }

    fn event_type(self) -> &'static str {
        match self {
            Scaling::Promote => "Normal",
            // Scaling down a workload someone may be relying on deserves attention.
            Scaling::Fence | Scaling::Correct => "Warning",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Scaling::Promote => "promotion",
            Scaling::Fence => "fencing the old primary",
            Scaling::Correct => "standby must stay at 0 while the primary is active",
        }
    }
}

/// A record update keyed by epoch.
#[derive(Debug, Clone)]
enum Update {
    Promoted,
    Failed(String),
    Fenced,
    Failback,
}

impl Update {
    fn what(&self) -> &'static str {
        match self {
            Update::Promoted => "recording promoted",
            Update::Failed(_) => "recording failed",
            Update::Fenced => "recording fenced",
            Update::Failback => "recording the failback time",
        }
    }
}

/// Carries out actions for one group.
pub struct Actuator {
    group: GroupConfig,
    primary: kube::Client,
    standby: kube::Client,
    identity: String,
    call_timeout: Duration,
}

impl Actuator {
    /// The default bound on each Kubernetes call.
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

    /// An actuator for `group`, acting as `identity` (written into the record and
    /// Events).
    pub fn new(
        group: &GroupConfig,
        primary: kube::Client,
        standby: kube::Client,
        identity: String,
    ) -> Self {
        Actuator {
            group: group.clone(),
            primary,
            standby,
            identity,
            call_timeout: Self::DEFAULT_CALL_TIMEOUT,
        }
    }

    /// Sets the bound on each Kubernetes call.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Carries out `action`, given the observation the decision was made on.
    pub async fn execute(
        &self,
        action: &Action,
        obs: &Observation,
    ) -> Result<ActionReport, ActuateError> {
        match action {
            Action::RecordPromoting {
                epoch,
                reason,
                primary_deployments,
            } => {
                self.record_promoting(action, *epoch, *reason, primary_deployments, obs)
                    .await
            }
            Action::ScaleStandbyUp { epoch } => {
                self.scale(action, Scaling::Promote, *epoch, &[]).await
            }
            Action::RecordPromoted { epoch } => {
                self.update_record(action, *epoch, Update::Promoted).await
            }
            Action::RecordFailed { epoch, reason } => {
                let update = Update::Failed(reason.as_str().to_string());
                self.update_record(action, *epoch, update).await
            }
            Action::FencePrimary { epoch, names } => {
                self.scale(action, Scaling::Fence, *epoch, names).await
            }
            Action::RecordFenced { epoch } => {
                self.update_record(action, *epoch, Update::Fenced).await
            }
            Action::ScaleStandbyDown { epoch } => {
                self.scale(action, Scaling::Correct, *epoch, &[]).await
            }
            Action::RestoreRecord { record } => self.restore_record(action, record).await,
            Action::RecordFailback { epoch } => {
                self.update_record(action, *epoch, Update::Failback).await
            }
            Action::Announce { reason } => {
                self.announce(*reason).await;
                Ok(ActionReport::new(action))
            }
        }
    }

    fn standby_ns(&self) -> &str {
        &self.group.standby.namespace
    }

    async fn record_promoting(
        &self,
        action: &Action,
        epoch: u64,
        reason: ReasonCode,
        primary_deployments: &[DeploymentRef],
        obs: &Observation,
    ) -> Result<ActionReport, ActuateError> {
        let name = self.group.record_name();
        let current = match &obs.standby.record {
            Ok(current) => current,
            Err(outcome) => {
                return Err(ActuateError::RecordUnknown {
                    namespace: self.standby_ns().to_string(),
                    name,
                    reason: outcome.reason,
                    detail: if outcome.detail.is_empty() {
                        outcome.reason.as_str().to_string()
                    } else {
                        outcome.detail.clone()
                    },
                });
            }
        };
        let mut report = ActionReport::new(action);
        if current.phase == Some(RecordPhase::Promoting) && current.epoch == epoch {
            // Written before (the daemon restarted, or the answer was lost).
            report.record = Some(current.clone());
            return Ok(report);
        }
        if epoch <= current.epoch {
            return Err(self.stale(
                &name,
                format!(
                    "promotion epoch {epoch} is not above the recorded epoch {}",
                    current.epoch
                ),
            ));
        }
        let (at, unix) = record::now_stamp();
        let next = FailoverRecord {
            phase: Some(RecordPhase::Promoting),
            epoch,
            reason: reason.as_str().to_string(),
            promoted_at: Some(at),
            promoted_at_unix: Some(unix),
            primary_deployments: primary_deployments.to_vec(),
            holder: self.identity.clone(),
            ..FailoverRecord::default()
        };
        self.write_record(&name, &next, current.resource_version.as_deref(), report)
            .await
    }

    /// Reads the record afresh (not from the observation: one decision may carry
    /// several record actions, and each write changes the resourceVersion).
    async fn read_record(&self) -> Result<Option<FailoverRecord>, ActuateError> {
        let name = self.group.record_name();
        let ns = self.standby_ns();
        bounded_record(self.call_timeout, ns, &name, "get", async {
            record::read(&self.standby, ns, &name).await
        })
        .await
    }

    async fn update_record(
        &self,
        action: &Action,
        epoch: u64,
        update: Update,
    ) -> Result<ActionReport, ActuateError> {
        let name = self.group.record_name();
        // The epoch check below is the real precondition; the resourceVersion of this
        // read guards the write against anyone moving the record in between.
        let Some(current) = self.read_record().await? else {
            return Err(self.stale(&name, format!("missing, expected epoch {epoch}")));
        };
        if current.epoch != epoch {
            return Err(self.stale(
                &name,
                format!("recorded epoch is {}, not {epoch}", current.epoch),
            ));
        }
        let phase = current.effective_phase();
        let mut next = current.clone();
        let (now, unix) = record::now_stamp();
        let changed = match (&update, phase) {
            (Update::Promoted, RecordPhase::Promoted) => false,
            (Update::Promoted, RecordPhase::Promoting | RecordPhase::Failed) => {
                next.phase = Some(RecordPhase::Promoted);
                next.completed_at = Some(now);
                true
            }
            (Update::Failed(reason), RecordPhase::Failed) if *reason == current.reason => false,
            (Update::Failed(reason), RecordPhase::Promoting | RecordPhase::Failed) => {
                next.phase = Some(RecordPhase::Failed);
                next.reason = reason.clone();
                true
            }
            (Update::Fenced, p) if p.standby_active() => {
                if current.fenced_at.is_some() {
                    false
                } else {
                    next.fenced_at = Some(now);
                    true
                }
            }
            (Update::Failback, RecordPhase::Primary) => {
                if current.failback_at_unix.is_some() {
                    false
                } else {
                    next.failback_at = Some(now);
                    next.failback_at_unix = Some(unix);
                    true
                }
            }
            (update, phase) => {
                return Err(self.stale(
                    &name,
                    format!(
                        "phase {} of epoch {epoch} does not allow {}",
                        phase.as_str(),
                        update.what()
                    ),
                ));
            }
        };
        let mut report = ActionReport::new(action);
        if !changed {
            report.record = Some(current);
            return Ok(report);
        }
        next.holder = self.identity.clone();
        self.write_record(&name, &next, current.resource_version.as_deref(), report)
            .await
    }

    /// Writes back a record that disappeared: created (never replaced), so if someone
    /// else restored it first this write loses and the next tick reads theirs.
    async fn restore_record(
        &self,
        action: &Action,
        lost: &FailoverRecord,
    ) -> Result<ActionReport, ActuateError> {
        let name = self.group.record_name();
        let (now, _) = record::now_stamp();
        let next = FailoverRecord {
            restored_at: Some(now),
            holder: self.identity.clone(),
            resource_version: None,
            ..lost.clone()
        };
        let report = self
            .write_record(&name, &next, None, ActionReport::new(action))
            .await?;
        let message = format!(
            "group {}: the failover record {name} was missing; written back as last seen \
             (phase {}, epoch {}); nothing is scaled until it is back. Fail back with \
             phase: primary, never by deleting the record",
            self.group.name,
            next.effective_phase().as_str(),
            next.epoch
        );
        tracing::warn!(
            group = %self.group.name,
            record = %name,
            phase = next.effective_phase().as_str(),
            epoch = next.epoch,
            "failover record was missing: restored from the last copy seen"
        );
        self.record_event("KubeFailoverRecordRestored", message)
            .await;
        Ok(report)
    }

    /// An Event on the record's ConfigMap saying that a condition began.
    async fn announce(&self, reason: ReasonCode) {
        let (event_reason, what) = match reason {
            ReasonCode::DualActive => (
                "KubeFailoverDualActive",
                "both the primary and the standby want replicas: two agents may run at once",
            ),
            ReasonCode::NoActiveSide => (
                "KubeFailoverNoActiveSide",
                "neither the primary nor the standby runs the workload",
            ),
            _ => (
                "KubeFailoverPrimaryUnobservable",
                "the watcher cannot observe the primary and cannot protect it; no promotion \
                 happens while it is blind",
            ),
        };
        let message = format!("group {}: {what} ({reason})", self.group.name);
        self.record_event(event_reason, message).await;
    }

    async fn write_record(
        &self,
        name: &str,
        next: &FailoverRecord,
        expected: Option<&str>,
        mut report: ActionReport,
    ) -> Result<ActionReport, ActuateError> {
        let ns = self.standby_ns();
        let stored = bounded_record(self.call_timeout, ns, name, "write", async {
            record::write(&self.standby, ns, name, &self.group.name, next, expected).await
        })
        .await?;
        report.record = Some(stored);
        report.record_written = true;
        Ok(report)
    }

    fn stale(&self, name: &str, detail: String) -> ActuateError {
        ActuateError::Stale {
            namespace: self.standby_ns().to_string(),
            name: name.to_string(),
            detail,
        }
    }

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

    async fn scale(
        &self,
        action: &Action,
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
        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let mut report = ActionReport::new(action);
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
            match self.scale_one(&api, &facts, scaling, epoch, target).await {
                Ok(()) => {}
                Err(source) => {
                    first_error.get_or_insert(ActuateError::Call {
                        side,
                        namespace: ns.to_string(),
                        op: "scale",
                        object: format!("Deployment {}", facts.name),
                        source,
                    });
                    continue;
                }
            }
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
                        error = %err,
                        "action partly carried out"
                    );
                }
                Err(err)
            }
        }
    }

    /// Scales one Deployment through the scale subresource, on condition that it is
    /// still at the resourceVersion it was read at: a concurrent change (a person, a
    /// controller) makes the write fail with 409 and it is retried next tick instead of
    /// overwriting. A promotion first marks the Deployment with its epoch.
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

    /// Records an Event on a scaled Deployment. Failing to do so is logged, never
    /// fatal: the scaling already happened and is what matters.
    async fn emit_event(
        &self,
        client: &kube::Client,
        deployment: &Deployment,
        scaling: Scaling,
        change: &ScaleChange,
        record: &FailoverRecord,
    ) {
        let event = build_event(
            &self.group.name,
            &self.identity,
            deployment,
            scaling,
            change,
            Some(record),
        );
        self.create_event(client, &change.namespace, event).await;
    }

    /// Records an Event on the failover record's ConfigMap (standby cluster).
    async fn record_event(&self, reason: &'static str, message: String) {
        let event = record_event(
            self.standby_ns(),
            &self.group.record_name(),
            &self.identity,
            reason,
            message,
        );
        self.create_event(&self.standby, self.standby_ns(), event)
            .await;
    }

    async fn create_event(&self, client: &kube::Client, namespace: &str, event: Event) {
        let events: Api<Event> = Api::namespaced(client.clone(), namespace);
        let params = PostParams {
            field_manager: Some(COMPONENT.to_string()),
            ..PostParams::default()
        };
        if let Err(err) = bounded(self.call_timeout, events.create(&params, &event)).await {
            tracing::warn!(
                group = %self.group.name,
                namespace = %namespace,
                object = ?event.involved_object.name,
                event_reason = ?event.reason,
                reason = err.reason().as_str(),
                error = %err,
                "could not record an Event"
            );
        }
    }
}

/// Runs one record call with a time bound, mapping both failure kinds.
async fn bounded_record<T>(
    timeout: Duration,
    namespace: &str,
    name: &str,
    op: &'static str,
    call: impl Future<Output = Result<T, RecordError>>,
) -> Result<T, ActuateError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(ActuateError::Record {
            namespace: namespace.to_string(),
            source,
        }),
        Err(_) => Err(ActuateError::Call {
            side: Side::Standby,
            namespace: namespace.to_string(),
            op,
            object: format!("ConfigMap {name}"),
            source: CallError::Timeout(timeout),
        }),
    }
}

fn build_event(
    group: &str,
    identity: &str,
    deployment: &Deployment,
    scaling: Scaling,
    change: &ScaleChange,
    record: Option<&FailoverRecord>,
) -> Event {
    let (epoch, reason) = match record {
        Some(r) if !r.reason.is_empty() => (r.epoch.to_string(), r.reason.as_str()),
        Some(r) => (r.epoch.to_string(), "none"),
        None => ("unknown".to_string(), "unknown"),
    };
    let message = format!(
        "group {group} epoch {epoch} (reason {reason}): scaled {} from {} to {} replicas: {}",
        change.deployment,
        change.from,
        change.to,
        scaling.what()
    );
    let involved = ObjectReference {
        api_version: Some("apps/v1".to_string()),
        kind: Some("Deployment".to_string()),
        name: Some(change.deployment.clone()),
        namespace: Some(change.namespace.clone()),
        uid: deployment.metadata.uid.clone(),
        resource_version: deployment.metadata.resource_version.clone(),
        ..ObjectReference::default()
    };
    new_event(
        involved,
        identity,
        scaling.event_reason(),
        scaling.event_type(),
        "Scale",
        message,
    )
}

/// A Warning Event about the group, on the failover record's ConfigMap.
fn record_event(
    namespace: &str,
    record_name: &str,
    identity: &str,
    reason: &'static str,
    message: String,
) -> Event {
    let involved = ObjectReference {
        api_version: Some("v1".to_string()),
        kind: Some("ConfigMap".to_string()),
        name: Some(record_name.to_string()),
        namespace: Some(namespace.to_string()),
        ..ObjectReference::default()
    };
    new_event(involved, identity, reason, "Warning", "Observe", message)
}

fn new_event(
    involved: ObjectReference,
    identity: &str,
    reason: &'static str,
    type_: &'static str,
    action: &'static str,
    message: String,
) -> Event {
    let now = k8s_openapi::jiff::Timestamp::now();
    let object = involved.name.clone().unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            // Like client-go: the object's name and a time-based suffix.
            name: Some(format!("{object}.{:x}", now.as_nanosecond().unsigned_abs())),
            namespace: involved.namespace.clone(),
            ..ObjectMeta::default()
        },
        involved_object: involved,
        reason: Some(reason.to_string()),
        message: Some(message),
        type_: Some(type_.to_string()),
        action: Some(action.to_string()),
        source: Some(EventSource {
            component: Some(COMPONENT.to_string()),
            host: None,
        }),
        reporting_component: Some(COMPONENT.to_string()),
        // The API server caps this at 128 characters.
        reporting_instance: Some(identity.chars().take(128).collect()),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ProbeOutcome;
    use kube::core::Status;

    fn deployment() -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "agent-trigger", "namespace": "agents", "uid": "u-1",
                         "resourceVersion": "9"},
        }))
        .unwrap()
    }

    #[test]
    fn event_names_the_deployment_and_the_decision() {
        let change = ScaleChange {
            side: Side::Standby,
            namespace: "agents".into(),
            deployment: "agent-trigger".into(),
            from: 0,
            to: 1,
        };
        let record = FailoverRecord {
            epoch: 4,
            reason: "primary_down_quorum".into(),
            ..FailoverRecord::default()
        };
        let ev = build_event(
            "env0",
            "watcher-1",
            &deployment(),
            Scaling::Promote,
            &change,
            Some(&record),
        );
        assert_eq!(ev.reason.as_deref(), Some("KubeFailoverPromoted"));
        assert_eq!(ev.type_.as_deref(), Some("Normal"));
        assert_eq!(ev.involved_object.uid.as_deref(), Some("u-1"));
        assert_eq!(ev.involved_object.kind.as_deref(), Some("Deployment"));
        assert_eq!(ev.metadata.namespace.as_deref(), Some("agents"));
        assert!(ev.metadata.name.unwrap().starts_with("agent-trigger."));
        assert_eq!(ev.reporting_instance.as_deref(), Some("watcher-1"));
        assert_eq!(
            ev.message.as_deref(),
            Some(
                "group env0 epoch 4 (reason primary_down_quorum): scaled agent-trigger \
                 from 0 to 1 replicas: promotion"
            )
        );
        let fence = build_event("env0", "w", &deployment(), Scaling::Fence, &change, None);
        assert_eq!(fence.reason.as_deref(), Some("KubeFailoverFenced"));
        assert_eq!(fence.type_.as_deref(), Some("Warning"));
    }

    #[test]
    fn error_labels_are_bounded() {
        let call = |source| ActuateError::Call {
            side: Side::Primary,
            namespace: "agents".into(),
            op: "scale",
            object: "Deployment agent-trigger".into(),
            source,
        };
        let api = |code, reason: &str| {
            CallError::Kube(kube::Error::Api(
                Status::failure("m", reason).with_code(code).boxed(),
            ))
        };
        assert_eq!(call(api(409, "Conflict")).reason(), "conflict");
        assert_eq!(call(api(403, "Forbidden")).reason(), "forbidden");
        assert_eq!(call(api(404, "NotFound")).reason(), "not_found");
        assert_eq!(call(api(500, "InternalError")).reason(), "error");
        assert_eq!(
            call(CallError::Timeout(Duration::from_secs(1))).reason(),
            "timeout"
        );
        let err = call(api(403, "Forbidden"));
        assert_eq!(
            err.to_string(),
            "primary cluster, namespace agents: scale Deployment agent-trigger: HTTP 403 Forbidden"
        );
        let conflict = ActuateError::Record {
            namespace: "agents".into(),
            source: RecordError::Conflict {
                namespace: "agents".into(),
                name: "kube-failover-env0".into(),
            },
        };
        assert_eq!(conflict.reason(), "conflict");
        assert_eq!(
            conflict.to_string(),
            "standby cluster, namespace agents: ConfigMap agents/kube-failover-env0 \
             changed since it was read"
        );
    }

    #[test]
    fn report_says_what_changed() {
        let mut report = ActionReport::new(&Action::FencePrimary {
            epoch: 1,
            names: vec![],
        });
        assert!(!report.changed());
        assert_eq!(report.to_string(), "fence_primary: nothing to change");
        report.scaled.push(ScaleChange {
            side: Side::Primary,
            namespace: "agents".into(),
            deployment: "agent-trigger".into(),
            from: 1,
            to: 0,
        });
        assert_eq!(
            report.to_string(),
            "fence_primary: primary agents/agent-trigger 1->0"
        );
    }

    /// A client for a closed loopback port: any call it makes fails, so a test passes
    /// only if the action decided without calling.
    fn dead_client() -> kube::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    fn group() -> GroupConfig {
        let cluster = |ns: &str| crate::config::ClusterConfig {
            kubeconfig: None,
            context: None,
            namespace: ns.into(),
        };
        GroupConfig {
            name: "env0".into(),
            primary: cluster("agents"),
            standby: cluster("agents"),
            workloads: vec![],
            policy: Default::default(),
            http_checks: vec![],
            record_name: None,
        }
    }

    fn observation(record: Result<FailoverRecord, ProbeOutcome>) -> Observation {
        let ok = ProbeOutcome::ok(Duration::ZERO);
        Observation {
            wall_unix: 0.0,
            primary: crate::model::PrimaryObservation {
                api: ok.clone(),
                workloads: vec![],
                http: vec![],
                deployments: None,
                absent: vec![],
            },
            standby: crate::model::StandbyObservation {
                api: ok.clone(),
                workloads: ok,
                deployments: None,
                record,
            },
            observers: vec![],
        }
    }

    #[tokio::test]
    async fn promoting_never_writes_blind() {
        let actuator = Actuator::new(&group(), dead_client(), dead_client(), "w".into());
        let action = Action::RecordPromoting {
            epoch: 1,
            reason: ReasonCode::PrimaryDownQuorum,
            primary_deployments: vec![],
        };
        let unreadable = observation(Err(ProbeOutcome::fail(
            ProbeReason::Forbidden,
            Duration::ZERO,
            "",
        )));
        let err = actuator.execute(&action, &unreadable).await.unwrap_err();
        assert!(matches!(err, ActuateError::RecordUnknown { .. }), "{err}");
        assert_eq!(err.reason(), "forbidden");

        // An epoch that does not move forward is refused before any call.
        let current = FailoverRecord {
            phase: Some(RecordPhase::Primary),
            epoch: 1,
            ..FailoverRecord::default()
        };
        let err = actuator
            .execute(&action, &observation(Ok(current)))
            .await
            .unwrap_err();
        assert!(matches!(err, ActuateError::Stale { .. }), "{err}");
        assert_eq!(err.reason(), "conflict");

        // Already recorded: nothing to write.
        let done = FailoverRecord {
            phase: Some(RecordPhase::Promoting),
            epoch: 1,
            resource_version: Some("5".into()),
            ..FailoverRecord::default()
        };
        let report = actuator
            .execute(&action, &observation(Ok(done.clone())))
            .await
            .unwrap();
        assert!(!report.changed());
        assert_eq!(report.record, Some(done));
    }
}

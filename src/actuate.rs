//! The actuator: carries out the engine's [`Action`]s as Kubernetes calls. Scaling
//! goes through the scale subresource, record writes carry resourceVersion
//! preconditions, and every Deployment scaled gets an Event.
//!
//! Every action is idempotent: it looks at the current state first and changes only
//! what differs, so repeating an action after a crash (or a lost answer) is safe.
//! Every call is bounded by the actuator's call timeout.

use crate::config::{GroupConfig, WorkloadConfig};
use crate::model::{Action, FailoverRecord, Observation, ProbeReason, RecordPhase};
use crate::probe::workload::{DeploymentFacts, nothing_selected, select, selection_text};
use crate::probe::{CallError, bounded};
use crate::record::{self, RecordError};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::sync::Mutex;
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
}

/// Carries out actions for one group.
pub struct Actuator {
    group: GroupConfig,
    primary: kube::Client,
    standby: kube::Client,
    identity: String,
    call_timeout: Duration,
    /// The last record this actuator stored: the actions of one decision all see the
    /// same observation, so a promotion's Events would otherwise name the old epoch.
    last_written: Mutex<Option<FailoverRecord>>,
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
            last_written: Mutex::new(None),
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
            Action::RecordPromoting { epoch, reason } => {
                self.record_promoting(action, *epoch, reason, obs).await
            }
            Action::ScaleStandbyUp => self.scale(action, Scaling::Promote, obs).await,
            Action::RecordPromoted { epoch } => {
                self.update_record(action, *epoch, Update::Promoted).await
            }
            Action::RecordFailed { epoch, reason } => {
                self.update_record(action, *epoch, Update::Failed(reason.clone()))
                    .await
            }
            Action::FencePrimary => self.scale(action, Scaling::Fence, obs).await,
            Action::RecordFenced { epoch } => {
                self.update_record(action, *epoch, Update::Fenced).await
            }
            Action::ScaleStandbyDown => self.scale(action, Scaling::Correct, obs).await,
        }
    }

    fn standby_ns(&self) -> &str {
        &self.group.standby.namespace
    }

    async fn record_promoting(
        &self,
        action: &Action,
        epoch: u64,
        reason: &str,
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
            reason: reason.to_string(),
            promoted_at: Some(at),
            promoted_at_unix: Some(unix),
            completed_at: None,
            fenced_at: None,
            holder: self.identity.clone(),
            resource_version: None,
        };
        self.write_record(&name, &next, current.resource_version.as_deref(), report)
            .await
    }

    async fn update_record(
        &self,
        action: &Action,
        epoch: u64,
        update: Update,
    ) -> Result<ActionReport, ActuateError> {
        let name = self.group.record_name();
        let ns = self.standby_ns();
        // Read afresh rather than trusting the observation: one decision may carry
        // several record actions, and each write changes the resourceVersion. The epoch
        // check below is the real precondition; the resourceVersion of this read
        // guards the write against anyone moving the record in between.
        let read = bounded_record(self.call_timeout, ns, &name, "get", async {
            record::read(&self.standby, ns, &name).await
        })
        .await?;
        let Some(current) = read else {
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
        let (now, _) = record::now_stamp();
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
            (update, phase) => {
                return Err(self.stale(
                    &name,
                    format!(
                        "phase {} of epoch {epoch} does not allow {}",
                        phase.as_str(),
                        match update {
                            Update::Promoted => "recording promoted",
                            Update::Failed(_) => "recording failed",
                            Update::Fenced => "recording fenced",
                        }
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
        if let Ok(mut last) = self.last_written.lock() {
            *last = Some(stored.clone());
        }
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

    /// The newest record known: the observed one, or the one this actuator wrote
    /// since, whichever has the higher epoch. Used only for Event messages.
    fn latest_record<'a>(&self, obs: &'a Observation) -> Option<FailoverRecord> {
        let observed: Option<&'a FailoverRecord> = obs.standby.record.as_ref().ok();
        let written = self.last_written.lock().ok().and_then(|l| l.clone());
        match (observed, written) {
            (Some(o), Some(w)) if w.epoch > o.epoch => Some(w),
            (Some(o), _) => Some(o.clone()),
            (None, w) => w,
        }
    }

    async fn scale(
        &self,
        action: &Action,
        scaling: Scaling,
        obs: &Observation,
    ) -> Result<ActionReport, ActuateError> {
        let side = scaling.side();
        let (client, ns) = match side {
            Side::Primary => (&self.primary, self.group.primary.namespace.as_str()),
            Side::Standby => (&self.standby, self.group.standby.namespace.as_str()),
        };
        let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let context = self.latest_record(obs);
        let mut report = ActionReport::new(action);
        let mut seen: Vec<String> = Vec::new();
        // Best effort across Deployments: fencing one Deployment must not wait for
        // another that failed; the first error is returned after all were tried.
        let mut first_error: Option<ActuateError> = None;

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
            for deployment in &selected {
                let facts = DeploymentFacts::of(deployment);
                if seen.contains(&facts.name) {
                    continue;
                }
                seen.push(facts.name.clone());
                if facts.desired == target {
                    continue;
                }
                let patch = Patch::Merge(serde_json::json!({"spec": {"replicas": target}}));
                let params = PatchParams {
                    field_manager: Some(COMPONENT.to_string()),
                    ..PatchParams::default()
                };
                let result = bounded(
                    self.call_timeout,
                    api.patch_scale(&facts.name, &params, &patch),
                )
                .await;
                if let Err(source) = result {
                    first_error.get_or_insert(ActuateError::Call {
                        side,
                        namespace: ns.to_string(),
                        op: "scale",
                        object: format!("Deployment {}", facts.name),
                        source,
                    });
                    continue;
                }
                let change = ScaleChange {
                    side,
                    namespace: ns.to_string(),
                    deployment: facts.name.clone(),
                    from: facts.desired,
                    to: target,
                };
                self.emit_event(client, deployment, scaling, &change, context.as_ref())
                    .await;
                report.scaled.push(change);
            }
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

    /// Records an Event on a scaled Deployment. Failing to do so is logged, never
    /// fatal: the scaling already happened and is what matters.
    async fn emit_event(
        &self,
        client: &kube::Client,
        deployment: &Deployment,
        scaling: Scaling,
        change: &ScaleChange,
        record: Option<&FailoverRecord>,
    ) {
        let event = build_event(
            &self.group.name,
            &self.identity,
            deployment,
            scaling,
            change,
            record,
        );
        let events: Api<Event> = Api::namespaced(client.clone(), &change.namespace);
        let params = PostParams {
            field_manager: Some(COMPONENT.to_string()),
            ..PostParams::default()
        };
        if let Err(err) = bounded(self.call_timeout, events.create(&params, &event)).await {
            tracing::warn!(
                group = %self.group.name,
                cluster = %change.side,
                namespace = %change.namespace,
                deployment = %change.deployment,
                reason = err.reason().as_str(),
                error = %err,
                "could not record the Event for a scaled Deployment"
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
    let now = k8s_openapi::jiff::Timestamp::now();
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
    Event {
        metadata: ObjectMeta {
            // Like client-go: the object's name and a time-based suffix.
            name: Some(format!(
                "{}.{:x}",
                change.deployment,
                now.as_nanosecond().unsigned_abs()
            )),
            namespace: Some(change.namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("apps/v1".to_string()),
            kind: Some("Deployment".to_string()),
            name: Some(change.deployment.clone()),
            namespace: Some(change.namespace.clone()),
            uid: deployment.metadata.uid.clone(),
            resource_version: deployment.metadata.resource_version.clone(),
            ..ObjectReference::default()
        },
        reason: Some(scaling.event_reason().to_string()),
        message: Some(message),
        type_: Some(scaling.event_type().to_string()),
        action: Some("Scale".to_string()),
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
        let mut report = ActionReport::new(&Action::FencePrimary);
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
            },
            standby: crate::model::StandbyObservation {
                api: ok.clone(),
                workloads: ok,
                deployments: None,
                record,
            },
        }
    }

    #[tokio::test]
    async fn promoting_never_writes_blind() {
        let actuator = Actuator::new(&group(), dead_client(), dead_client(), "w".into());
        let action = Action::RecordPromoting {
            epoch: 1,
            reason: "primary_down_quorum".into(),
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

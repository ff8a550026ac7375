//! Kubernetes Events: one on every Deployment scaled, and Warnings on the failover
//! record's ConfigMap when a condition begins or the record is restored. Failing to
//! record an Event is logged, never fatal.

use super::scale::Scaling;
use super::{Actuator, COMPONENT, ScaleChange};
use crate::kube::call::bounded;
use crate::model::{FailoverRecord, ReasonCode};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ObjectMeta, PostParams};

impl Actuator {
    /// An Event on the record's ConfigMap saying that a condition began.
    pub(super) async fn announce(&self, reason: ReasonCode) {
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

    /// An Event on the record's ConfigMap: the guards beside the old primary's agents
    /// stopped them at `epoch`, so it is fenced before its API can be asked.
    pub(super) async fn announce_guard_fence(&self, epoch: u64) {
        let message = guard_fence_message(&self.group.name, self.group.guards.primary, epoch);
        tracing::info!(group = %self.group.name, epoch, reason = "primary_stopped_by_guards",
            "old primary fenced by its guards: every expected guard stopped its agent");
        self.record_event_of_type("Normal", "KubeFailoverFencedByGuard", message)
            .await;
    }

    /// Records an Event on a scaled Deployment. Failing to do so is logged, never
    /// fatal: the scaling already happened and is what matters.
    pub(super) async fn emit_event(
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

    /// Records an Event on the failover record's ConfigMap (standby cluster), as this
    /// actuator's identity (an operator's commands name the operator there).
    pub async fn record_event(&self, reason: &'static str, message: String) {
        self.record_event_of_type("Warning", reason, message).await;
    }

    /// [`Actuator::record_event`] with the Event's type: `Normal` or `Warning`.
    pub async fn record_event_of_type(
        &self,
        type_: &'static str,
        reason: &'static str,
        message: String,
    ) {
        let event = record_event(
            self.standby_ns(),
            &self.group.record_name(),
            &self.identity,
            type_,
            reason,
            message,
        );
        self.create_event(&self.standby, self.standby_ns(), event)
            .await;
    }

    pub(super) async fn create_event(&self, client: &kube::Client, namespace: &str, event: Event) {
        if !self.may_write() {
            tracing::warn!(
                group = %self.group.name,
                object = ?event.involved_object.name,
                event_reason = ?event.reason,
                "no longer the leader: Event not recorded"
            );
            return;
        }
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

/// An Event about the group, on the failover record's ConfigMap.
fn record_event(
    namespace: &str,
    record_name: &str,
    identity: &str,
    type_: &'static str,
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
    new_event(involved, identity, reason, type_, "Observe", message)
}

pub(super) fn new_event(
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

/// The message of the guard-fence Event.
fn guard_fence_message(group: &str, guards: u32, epoch: u64) -> String {
    let (n, says) = if guards == 1 {
        ("the guard".to_string(), "says it has")
    } else {
        (format!("all {guards} guards"), "say they have")
    };
    format!(
        "group {group}: {n} beside the old primary's agents {says} stopped them at epoch \
         {epoch}: fenced without the primary's API server (fenced_by = guard). Its \
         Deployments are scaled to 0 when that API server answers again."
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actuate::Side;

    #[test]
    fn the_guard_fence_event_counts_the_guards_and_says_what_follows() {
        let one = guard_fence_message("env0", 1, 3);
        assert!(
            one.contains("the guard beside") && one.contains("says it has"),
            "{one}"
        );
        assert!(
            one.contains("epoch 3") && one.contains("fenced_by = guard"),
            "{one}"
        );
        let two = guard_fence_message("env0", 2, 3);
        assert!(
            two.contains("all 2 guards") && two.contains("say they have"),
            "{two}"
        );
        assert!(two.contains("scaled to 0 when"), "{two}");
    }

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
}

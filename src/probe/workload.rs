//! How a workload is judged: a selected Deployment ([`DeploymentFacts`]) and its Pods
//! ([`PodSummary`]), as the probes of [`super::cached`] read them from the caches.
//!
//! env0's trigger Deployment has no readiness probe, so "Pod Ready" only says its
//! containers run. The strong signals are the ones Pods cannot hide: no Pod at all, a
//! container in CrashLoopBackOff, a Pod that cannot be scheduled. The reasons keep
//! them apart so an operator (and the metrics) can tell which one fired.

use crate::kube::kept::KeptPod;
use crate::model::ProbeReason;
use crate::selection::DeploymentFacts;

/// The Pods of one Deployment, reduced to what the judgement needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSummary {
    /// Pods that are neither terminating nor finished.
    pub live: i32,
    /// Live Pods whose Ready condition is True.
    pub ready: i32,
    /// A live Pod with a container waiting in CrashLoopBackOff: `pod/container`.
    pub crash_loop: Option<String>,
    /// A live Pod whose PodScheduled condition is False.
    pub unschedulable: Option<String>,
}

impl PodSummary {
    /// Summarises a list of Pods.
    pub fn of<'a>(pods: impl IntoIterator<Item = &'a KeptPod>) -> Self {
        let mut summary = PodSummary::default();
        for pod in pods {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let status = pod.status.as_ref();
            if matches!(
                status.and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            ) {
                continue;
            }
            summary.live = summary.live.saturating_add(1);
            let name = pod.metadata.name.as_deref().unwrap_or("?");
            let condition = |kind: &str| {
                status
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|c| c.iter().find(|c| c.type_ == kind))
                    .map(|c| c.status.as_str())
            };
            if condition("Ready") == Some("True") {
                summary.ready = summary.ready.saturating_add(1);
            }
            if condition("PodScheduled") == Some("False") && summary.unschedulable.is_none() {
                summary.unschedulable = Some(name.to_string());
            }
            if summary.crash_loop.is_none() {
                let containers = status.into_iter().flat_map(|s| {
                    s.init_container_statuses
                        .iter()
                        .flatten()
                        .chain(s.container_statuses.iter().flatten())
                });
                for c in containers {
                    let waiting = c.state.as_ref().and_then(|s| s.waiting.as_ref());
                    if waiting.and_then(|w| w.reason.as_deref()) == Some("CrashLoopBackOff") {
                        summary.crash_loop = Some(format!("{name}/{}", c.name));
                        break;
                    }
                }
            }
        }
        summary
    }
}

/// Judges one primary Deployment; `None` means it passes. `name` is `ns/name`.
pub fn judge_primary(
    name: &str,
    facts: &DeploymentFacts,
    pods: &PodSummary,
) -> Option<(ProbeReason, String)> {
    let want = facts.desired;
    if want <= 0 {
        return Some((
            ProbeReason::ScaledToZero,
            format!("Deployment {name} is scaled to 0"),
        ));
    }
    if facts.available >= want && pods.ready >= want {
        return None;
    }
    Some(if pods.live == 0 {
        (
            ProbeReason::NoPods,
            format!("Deployment {name} wants {want} replicas and has no Pod"),
        )
    } else if let Some(container) = &pods.crash_loop {
        (
            ProbeReason::CrashLoop,
            format!("Deployment {name}: container {container} is in CrashLoopBackOff"),
        )
    } else if let Some(pod) = &pods.unschedulable {
        (
            ProbeReason::Unschedulable,
            format!("Deployment {name}: Pod {pod} cannot be scheduled"),
        )
    } else {
        (
            ProbeReason::Unready,
            format!(
                "Deployment {name}: {} of {want} available, {} of {want} Pods Ready",
                facts.available, pods.ready
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::WorkloadConfig;
    use crate::kube::kept::KeptDeployment;
    use crate::selection::{nothing_selected, selection_text};

    /// The caches keep less of a Pod and a Deployment than a cluster serves: what they
    /// keep of served ones is judged.
    #[test]
    fn cached_objects_are_judged_from_what_is_kept() {
        let (deployment, pod) = crate::kube::watch_cache::served();
        assert_eq!(
            PodSummary::of([pod.as_ref()]),
            PodSummary {
                live: 1,
                ready: 1,
                crash_loop: Some("trigger-abc/trigger".into()),
                unschedulable: None,
            }
        );
        assert_eq!(
            DeploymentFacts::of_kept(&deployment),
            DeploymentFacts {
                name: "env0-agent-trigger-deployment".into(),
                desired: 1,
                available: 1,
                uid: Some("u1".into()),
                resource_version: Some("7".into()),
                epoch: Some(3),
            }
        );
        // The served object gives the same facts.
        let served: k8s_openapi::api::apps::v1::Deployment =
            serde_json::from_value(crate::kube::watch_cache::served_json().0).unwrap();
        assert_eq!(
            DeploymentFacts::of(&served),
            DeploymentFacts::of_kept(&deployment)
        );
    }
    use serde_json::json;

    fn pod(value: serde_json::Value) -> KeptPod {
        serde_json::from_value(value).unwrap()
    }

    fn ready_pod(name: &str) -> KeptPod {
        pod(json!({
            "metadata": {"name": name},
            "status": {"phase": "Running", "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "True"}
            ]}
        }))
    }

    fn facts(desired: i32, available: i32) -> DeploymentFacts {
        DeploymentFacts {
            name: "trigger".into(),
            desired,
            available,
            uid: None,
            resource_version: None,
            epoch: None,
        }
    }

    #[test]
    fn healthy_deployment_passes() {
        let pods = PodSummary::of(&[ready_pod("a")]);
        assert_eq!(pods.live, 1);
        assert_eq!(pods.ready, 1);
        assert_eq!(judge_primary("ns/trigger", &facts(1, 1), &pods), None);
    }

    #[test]
    fn scaled_to_zero_and_no_pods() {
        let none = PodSummary::of(&[]);
        let (reason, detail) = judge_primary("ns/trigger", &facts(0, 0), &none).unwrap();
        assert_eq!(reason, ProbeReason::ScaledToZero);
        assert_eq!(detail, "Deployment ns/trigger is scaled to 0");
        let (reason, _) = judge_primary("ns/trigger", &facts(1, 0), &none).unwrap();
        assert_eq!(reason, ProbeReason::NoPods);
    }

    #[test]
    fn terminating_and_finished_pods_do_not_count() {
        let mut terminating = ready_pod("old");
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        let finished = pod(json!({
            "metadata": {"name": "done"},
            "status": {"phase": "Succeeded", "conditions": [{"type": "Ready", "status": "True"}]}
        }));
        let pods = PodSummary::of(&[terminating, finished]);
        assert_eq!(pods, PodSummary::default());
        // Available replicas from the status do not rescue a Deployment whose only
        // Pod is going away.
        let (reason, _) = judge_primary("ns/trigger", &facts(1, 1), &pods).unwrap();
        assert_eq!(reason, ProbeReason::NoPods);
    }

    #[test]
    fn crash_loop_is_named() {
        let crashing = pod(json!({
            "metadata": {"name": "trigger-1"},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{
                    "name": "agent", "image": "x", "imageID": "", "ready": false,
                    "restartCount": 7,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}}
                }]}
        }));
        let pods = PodSummary::of(&[crashing]);
        assert_eq!(pods.crash_loop.as_deref(), Some("trigger-1/agent"));
        let (reason, detail) = judge_primary("ns/trigger", &facts(1, 0), &pods).unwrap();
        assert_eq!(reason, ProbeReason::CrashLoop);
        assert!(detail.contains("trigger-1/agent"), "{detail}");
    }

    #[test]
    fn unschedulable_and_plain_unready() {
        let pending = pod(json!({
            "metadata": {"name": "trigger-2"},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
            ]}
        }));
        let pods = PodSummary::of(&[pending]);
        let (reason, _) = judge_primary("ns/trigger", &facts(1, 0), &pods).unwrap();
        assert_eq!(reason, ProbeReason::Unschedulable);

        let starting = pod(json!({
            "metadata": {"name": "trigger-3"},
            "status": {"phase": "Running", "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False"}
            ]}
        }));
        let pods = PodSummary::of(&[starting, ready_pod("trigger-4")]);
        let (reason, detail) = judge_primary("ns/trigger", &facts(2, 1), &pods).unwrap();
        assert_eq!(reason, ProbeReason::Unready);
        assert_eq!(
            detail,
            "Deployment ns/trigger: 1 of 2 available, 1 of 2 Pods Ready"
        );
    }

    #[test]
    fn ready_pods_without_available_status_are_unready() {
        let pods = PodSummary::of(&[ready_pod("a")]);
        let (reason, _) = judge_primary("ns/trigger", &facts(1, 0), &pods).unwrap();
        assert_eq!(reason, ProbeReason::Unready);
    }

    #[test]
    fn facts_default_like_the_api_server() {
        let d: KeptDeployment = serde_json::from_value(json!({
            "metadata": {"name": "proxy"},
            "spec": {"selector": {"matchLabels": {"env0": "agent-proxy"}},
                     "template": {}}
        }))
        .unwrap();
        assert_eq!(
            DeploymentFacts::of_kept(&d),
            DeploymentFacts {
                name: "proxy".into(),
                desired: 1,
                available: 0,
                uid: None,
                resource_version: None,
                epoch: None,
            }
        );
        let annotated: KeptDeployment = serde_json::from_value(json!({
            "metadata": {"name": "proxy", "uid": "u-1", "resourceVersion": "9",
                         "annotations": {"kube-failover/epoch": "7"}},
            "spec": {"replicas": 1, "selector": {}, "template": {}}
        }))
        .unwrap();
        let facts = DeploymentFacts::of_kept(&annotated);
        assert_eq!(facts.epoch, Some(7));
        assert_eq!(facts.view(1).uid.as_deref(), Some("u-1"));
        assert_eq!(facts.resource_version.as_deref(), Some("9"));
    }

    #[test]
    fn messages_name_the_selection() {
        let by_name = WorkloadConfig {
            name: Some("agent-trigger".into()),
            selector: None,
            replicas: 1,
        };
        let by_selector = WorkloadConfig {
            name: None,
            selector: Some("env0=agent-proxy".into()),
            replicas: 1,
        };
        assert_eq!(
            nothing_selected("agents", &by_name),
            "Deployment agents/agent-trigger not found"
        );
        assert_eq!(
            nothing_selected("agents", &by_selector),
            "no Deployment in agents matches env0=agent-proxy"
        );
        assert_eq!(
            selection_text("agents", &by_selector),
            "Deployments in agents matching env0=agent-proxy"
        );
    }
}

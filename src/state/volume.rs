//! The state volume: the PersistentVolumeClaim the agent keeps its Terraform state on
//! must exist in the standby namespace and be `Bound` (read from the namespace's watch
//! cache). An unbound claim means the standby's agent would start without its state
//! (or not start at all).

use super::unanswered;
use crate::config::{VOLUME_CHECK, VolumeConfig};
use crate::kube::watch_cache::WatchStore;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube_failover_core::checks::{CheckKind, CheckResult, StateCheck};

/// The check of `volume` in namespace `ns`, from `store`; `untrusted` says why the
/// standby's caches cannot be trusted this tick, if they cannot.
pub fn check(
    store: &WatchStore<PersistentVolumeClaim>,
    volume: &VolumeConfig,
    ns: &str,
    untrusted: Option<&str>,
    wall_unix: f64,
) -> StateCheck {
    let claim = &volume.claim;
    let what = format!("PersistentVolumeClaim {ns}/{claim}");
    let (result, detail) = match untrusted {
        Some(why) => (CheckResult::Unanswerable, format!("{what}: {why}")),
        None => match store.read(|all| all.get(claim).cloned()) {
            Err((reason, detail)) => unanswered(reason, &what, &detail),
            Ok(None) => (CheckResult::Missing, format!("{what} does not exist")),
            Ok(Some(pvc)) => judge(&pvc, &what),
        },
    };
    StateCheck {
        name: VOLUME_CHECK.to_string(),
        kind: CheckKind::Volume,
        gate: volume.gate,
        result,
        detail,
        checked_at_unix: Some(wall_unix),
    }
}

fn judge(pvc: &PersistentVolumeClaim, what: &str) -> (CheckResult, String) {
    if pvc.metadata.deletion_timestamp.is_some() {
        return (CheckResult::Unbound, format!("{what} is being deleted"));
    }
    let phase = pvc
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    if phase == "Bound" {
        let volume = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .unwrap_or("?");
        (CheckResult::Ok, format!("{what} is Bound to {volume}"))
    } else {
        let phase: String = phase.chars().take(20).collect();
        (
            CheckResult::Unbound,
            format!("{what} is {phase}, not Bound"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Gate;
    use crate::model::ProbeReason;
    use kube::api::ObjectMeta;
    use kube::runtime::watcher::{self, Event};

    fn pvc(name: &str, phase: Option<&str>) -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "spec": { "volumeName": "pv-1" },
            "status": phase.map(|p| serde_json::json!({ "phase": p })),
        }))
        .unwrap()
    }

    fn store(
        items: Vec<PersistentVolumeClaim>,
    ) -> std::sync::Arc<WatchStore<PersistentVolumeClaim>> {
        let s = WatchStore::new("PersistentVolumeClaims in ns");
        s.apply(Event::Init);
        for i in items {
            s.apply(Event::InitApply(i));
        }
        s.apply(Event::InitDone);
        s
    }

    fn volume() -> VolumeConfig {
        VolumeConfig {
            claim: "env0-state-volume-claim".into(),
            gate: Gate::Block,
        }
    }

    #[test]
    fn bound_passes_pending_is_unbound_absent_is_missing() {
        let v = volume();
        let bound = check(
            &store(vec![pvc("env0-state-volume-claim", Some("Bound"))]),
            &v,
            "ns",
            None,
            1.0,
        );
        assert!(bound.passed(), "{bound:?}");
        assert_eq!(
            bound.detail,
            "PersistentVolumeClaim ns/env0-state-volume-claim is Bound to pv-1"
        );
        assert_eq!(bound.gate, Gate::Block);
        assert_eq!(bound.checked_at_unix, Some(1.0));
        let pending = check(
            &store(vec![pvc("env0-state-volume-claim", Some("Pending"))]),
            &v,
            "ns",
            None,
            1.0,
        );
        assert_eq!(pending.result, CheckResult::Unbound);
        assert!(pending.detail.ends_with("is Pending, not Bound"));
        let no_status = check(
            &store(vec![pvc("env0-state-volume-claim", None)]),
            &v,
            "ns",
            None,
            1.0,
        );
        assert_eq!(no_status.result, CheckResult::Unbound);
        let mut deleting = pvc("env0-state-volume-claim", Some("Bound"));
        deleting.metadata = ObjectMeta {
            deletion_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            )),
            ..deleting.metadata
        };
        let deleting = check(&store(vec![deleting]), &v, "ns", None, 1.0);
        assert_eq!(deleting.result, CheckResult::Unbound);
        let missing = check(
            &store(vec![pvc("other", Some("Bound"))]),
            &v,
            "ns",
            None,
            1.0,
        );
        assert_eq!(missing.result, CheckResult::Missing);
        assert_eq!(
            missing.reason_code().map(|r| r.as_str()),
            Some("standby_state_volume_missing")
        );
    }

    #[test]
    fn a_forbidden_or_unsettled_watch_is_unanswerable_never_a_pass() {
        let v = volume();
        let starting = WatchStore::<PersistentVolumeClaim>::new("PersistentVolumeClaims in ns");
        let c = check(&starting, &v, "ns", None, 1.0);
        assert_eq!(c.result, CheckResult::Unanswerable);
        let forbidden = store(vec![]);
        forbidden.fail(&watcher::Error::InitialListFailed(kube::Error::Api(
            kube::core::Status::failure("persistentvolumeclaims is forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        )));
        let c = check(&forbidden, &v, "ns", None, 1.0);
        assert_eq!(c.result, CheckResult::Forbidden, "{c:?}");
        assert!(c.detail.contains("HTTP 403"), "{}", c.detail);
        let live = store(vec![pvc("env0-state-volume-claim", Some("Bound"))]);
        let c = check(
            &live,
            &v,
            "ns",
            Some("standby API unreachable (refused)"),
            1.0,
        );
        assert_eq!(
            c.result,
            CheckResult::Unanswerable,
            "a stale cache is not a pass"
        );
        let _ = ProbeReason::Ok;
    }
}

//! The coordination's Leases as stored: their names, labels and annotations, and how
//! they read back into what the election ([`super::leader`]) and the observers
//! ([`super::observer`]) work with.

use super::leader::LeaseView;
use super::observer::{GroupVerdict, ObserverLease};
use k8s_openapi::api::coordination::v1::Lease;
use std::time::Duration;

/// Label telling a leader Lease from an observer Lease.
pub const ROLE_LABEL: &str = "kube-failover/role";
/// Annotation: the per-process instance id of the writer.
pub const INSTANCE_ANNOTATION: &str = "kube-failover/instance";
/// Annotation of an observer Lease: each group's verdict, a JSON object by group name
/// ([`super::observer::GroupVerdict`]).
pub const VERDICTS_ANNOTATION: &str = "kube-failover/verdicts";
/// Annotation of a leader Lease: the name of its holder's observer Lease, whose
/// renewals are the holder's sign of life.
pub const HEARTBEAT_ANNOTATION: &str = "kube-failover/heartbeat";
/// Annotation: how many groups the observer's process leads (see [`super::spread`]).
pub const LEADING_ANNOTATION: &str = "kube-failover/leading";

/// `kube-failover-<group>-leader`.
pub fn leader_lease_name(group: &str) -> String {
    format!("kube-failover-{group}-leader")
}

/// A duration in whole seconds, rounded up (a Lease's `leaseDurationSeconds`).
pub(super) fn seconds_i32(d: Duration) -> i32 {
    i32::try_from(d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))).unwrap_or(i32::MAX)
}

pub(super) fn annotation<'a>(lease: &'a Lease, key: &str) -> Option<&'a String> {
    lease.metadata.annotations.as_ref().and_then(|a| a.get(key))
}

/// The heartbeat a leader Lease's holder gives in `lease` (its observer Lease): the
/// resourceVersion while the holder's process (`instance`) writes it, else none.
pub(super) fn heartbeat_rv(lease: Option<&Lease>, instance: Option<&str>) -> Option<String> {
    let lease = lease?;
    if instance.is_some() && annotation(lease, INSTANCE_ANNOTATION).map(String::as_str) == instance
    {
        lease.metadata.resource_version.clone()
    } else {
        None
    }
}

/// A leader Lease as the election sees it (its holder's heartbeat filled in apart).
pub(super) fn parse_leader(lease: &Lease) -> LeaseView {
    let spec = lease.spec.as_ref();
    LeaseView {
        resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
        holder: spec
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty()),
        instance: annotation(lease, INSTANCE_ANNOTATION).cloned(),
        transitions: spec.and_then(|s| s.lease_transitions).unwrap_or(0),
        heartbeat: None,
    }
}

/// An observer Lease as one group sees it, with the group's `verdict` in it.
pub(super) fn parse_observer(lease: &Lease, verdict: &GroupVerdict) -> ObserverLease {
    let spec = lease.spec.as_ref();
    ObserverLease {
        name: lease.metadata.name.clone().unwrap_or_default(),
        resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
        identity: spec
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default(),
        instance: annotation(lease, INSTANCE_ANNOTATION).cloned(),
        verdict: verdict.verdict(),
        down_signals: verdict.down_signals.clone(),
        down_since_unix: verdict.down_since,
        leading: annotation(lease, LEADING_ANNOTATION).and_then(|s| s.parse().ok()),
        renewed_unix: spec
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.as_millisecond() as f64 / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DaemonConfig;
    use crate::coord::leader_timing;
    use crate::model::Verdict;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;
    use std::time::Duration;

    #[test]
    fn lease_names_and_default_timing() {
        assert_eq!(leader_lease_name("env0"), "kube-failover-env0-leader");
        let mut d = DaemonConfig::default();
        let t = leader_timing(&d);
        assert_eq!(t.lease_duration, Duration::from_secs(15));
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        d.probe_interval = Duration::from_millis(500);
        let t = leader_timing(&d);
        assert_eq!(t.lease_duration, Duration::from_secs(3));
        assert_eq!(t.renew_deadline, Duration::from_secs(2));
        assert_eq!(seconds_i32(Duration::from_millis(2500)), 3);
    }

    #[test]
    fn observer_leases_parse_their_annotations() {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some("kube-failover.observer.b".into()),
                resource_version: Some("9".into()),
                annotations: Some(BTreeMap::from([
                    (INSTANCE_ANNOTATION.into(), "abc".into()),
                    (LEADING_ANNOTATION.into(), "4".into()),
                ])),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("b".into()),
                renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
                ..LeaseSpec::default()
            }),
        };
        let entry = GroupVerdict {
            verdict: "down".into(),
            down_signals: vec!["api".into(), "workload:x".into()],
            down_since: Some(1_700_000_000.5),
        };
        let o = parse_observer(&lease, &entry);
        assert_eq!(o.identity, "b");
        assert_eq!(o.verdict, Verdict::Down);
        assert_eq!(o.down_signals, vec!["api", "workload:x"]);
        assert_eq!(o.down_since_unix, Some(1_700_000_000.5));
        assert_eq!(o.renewed_unix, Some(0.0));
        assert_eq!(o.instance.as_deref(), Some("abc"));
        assert_eq!(o.leading, Some(4));
        let garbled = GroupVerdict {
            verdict: "sideways".into(),
            down_signals: vec![],
            down_since: None,
        };
        assert_eq!(parse_observer(&lease, &garbled).verdict, Verdict::Unknown);
    }
}

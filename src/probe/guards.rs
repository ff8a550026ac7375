//! The guards' heartbeats (`kube-failover guard`, [`crate::guard::heartbeat`]) as the
//! daemon reads them: Leases in the standby namespace labelled with the group, watched
//! like every other object the daemon reads. A heartbeat's age is judged by this host's
//! clock against the guard's `renewTime`, so the two hosts' clocks must agree (NTP);
//! a heartbeat with no renewal time or duration counts as stale.

use crate::config::GroupConfig;
use crate::guard::heartbeat::{
    FORM, GROUP_LABEL, ISOLATION_TTL, ON_ISOLATION, REASON, SIDE_LABEL, STANDBY_EPOCH, STATE,
    STOP_WITHIN,
};
use crate::kube::watch_cache::WatchStore;
use crate::model::{GuardBeat, GuardForm, GuardsObservation, ProbeOutcome, ProbeReason, Side};
use k8s_openapi::api::coordination::v1::Lease;
use std::time::Duration;

/// The label selector of `group`'s heartbeats.
pub fn selector(group: &GroupConfig) -> String {
    format!("{GROUP_LABEL}={}", group.name)
}

/// The heartbeats of `group` held by `store` at `now_unix` (`None` when the group
/// expects no guard); `gate` says why the store cannot be trusted this tick.
pub fn observe(
    store: &WatchStore<Lease>,
    group: &GroupConfig,
    gate: Option<&str>,
    now_unix: f64,
    latency: Duration,
) -> Option<GuardsObservation> {
    if !group.guards.any() {
        return None;
    }
    let ns = group.standby.namespace.as_str();
    let beats = match gate {
        Some(why) => Err((ProbeReason::Error, why.to_string())),
        None => store.read(|leases| {
            leases
                .values()
                .filter_map(|l| beat(l, now_unix))
                .collect::<Vec<_>>()
        }),
    }
    .map_err(|(reason, detail)| {
        ProbeOutcome::fail(
            reason,
            latency,
            format!("guard heartbeats in {ns}: {detail}"),
        )
    });
    Some(GuardsObservation {
        expected_primary: group.guards.primary,
        expected_standby: group.guards.standby,
        beats,
    })
}

/// One heartbeat, or `None` for a Lease that is not one (no side label).
fn beat(lease: &Lease, now_unix: f64) -> Option<GuardBeat> {
    let meta = &lease.metadata;
    let side = match meta.labels.as_ref()?.get(SIDE_LABEL)?.as_str() {
        "primary" => Side::Primary,
        "standby" => Side::Standby,
        _ => return None,
    };
    let annotations = meta.annotations.clone().unwrap_or_default();
    let state = annotations.get(STATE).map(String::as_str);
    // A sidecar's heartbeat, or one that says `refusing` (only a sidecar does): never
    // proof of a stop, and never waited for as a stop-mode guard.
    let form = if annotations.get(FORM).map(String::as_str) == Some("sidecar")
        || state == Some("refusing")
    {
        GuardForm::Sidecar
    } else {
        GuardForm::Wrapper
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let renewed = spec
        .renew_time
        .map(|t| t.0.as_millisecond() as f64 / 1000.0);
    let ttl = spec.lease_duration_seconds.filter(|d| *d > 0);
    let (age_seconds, ttl_seconds) = match (renewed, ttl) {
        (Some(at), Some(ttl)) => ((now_unix - at).max(0.0), f64::from(ttl)),
        _ => (f64::INFINITY, 0.0),
    };
    Some(GuardBeat {
        identity: spec
            .holder_identity
            .or_else(|| meta.name.clone())
            .unwrap_or_default(),
        side,
        running: state == Some("running"),
        standby_epoch: annotations.get(STANDBY_EPOCH).and_then(|e| e.parse().ok()),
        reason: annotations.get(REASON).cloned().unwrap_or_default(),
        age_seconds,
        ttl_seconds,
        isolation_ttl_seconds: isolation_ttl(&annotations).filter(|_| form == GuardForm::Wrapper),
        stop_within_seconds: annotations
            .get(STOP_WITHIN)
            .and_then(|d| humantime::parse_duration(d).ok())
            .map_or(0.0, |d| d.as_secs_f64()),
        form,
    })
}

/// The isolation ttl of a guard in stop mode. A heartbeat that says `stop` with a ttl
/// that cannot be read is waited for as long as the longest ttl a guard accepts: the
/// guard may stop its agent by itself, and unknown is not "stopped".
fn isolation_ttl(annotations: &std::collections::BTreeMap<String, String>) -> Option<f64> {
    if annotations.get(ON_ISOLATION).map(String::as_str) != Some("stop") {
        return None;
    }
    let longest = crate::guard::config::MAX_ISOLATION_TTL.as_secs_f64();
    Some(
        annotations
            .get(ISOLATION_TTL)
            .and_then(|d| humantime::parse_duration(d).ok())
            .map_or(longest, |d| d.as_secs_f64().min(longest)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

    fn lease(side: &str, state: Option<&str>, epoch: Option<&str>, renewed: Option<i64>) -> Lease {
        let mut annotations = BTreeMap::new();
        if let Some(s) = state {
            annotations.insert(STATE.to_string(), s.to_string());
        }
        if let Some(e) = epoch {
            annotations.insert(STANDBY_EPOCH.to_string(), e.to_string());
        }
        annotations.insert(REASON.to_string(), "other_side_active".to_string());
        Lease {
            metadata: ObjectMeta {
                name: Some(format!("kube-failover-guard-g-{side}-x")),
                labels: Some(BTreeMap::from([
                    (GROUP_LABEL.to_string(), "g".to_string()),
                    (SIDE_LABEL.to_string(), side.to_string()),
                ])),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(format!("{side}-agent-0")),
                lease_duration_seconds: Some(15),
                renew_time: renewed.map(|s| {
                    MicroTime(k8s_openapi::jiff::Timestamp::from_second(s).expect("time"))
                }),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn a_heartbeat_says_side_state_epoch_and_age_by_this_clock() {
        let b = beat(
            &lease("primary", Some("stopped"), Some("3"), Some(1000)),
            1004.5,
        )
        .expect("a heartbeat");
        assert_eq!(b.identity, "primary-agent-0");
        assert_eq!(b.side, Side::Primary);
        assert!(!b.running);
        assert_eq!(b.standby_epoch, Some(3));
        assert_eq!(b.reason, "other_side_active");
        assert!((b.age_seconds - 4.5).abs() < 1e-9 && b.ttl_seconds == 15.0);
        assert!(b.fresh());
        let old = beat(
            &lease("primary", Some("stopped"), Some("3"), Some(1000)),
            1016.0,
        )
        .expect("a heartbeat");
        assert!(!old.fresh(), "older than its Lease duration");
        // A guard clock ahead of this one: age 0, not negative.
        let ahead =
            beat(&lease("standby", Some("running"), None, Some(1000)), 990.0).expect("a heartbeat");
        assert_eq!(ahead.age_seconds, 0.0);
        assert!(ahead.running && ahead.standby_epoch.is_none());
    }

    #[test]
    fn a_heartbeat_in_stop_mode_says_its_isolation_ttl_and_stop_time() {
        let mut l = lease("primary", Some("running"), None, Some(1000));
        let keep = beat(&l, 1001.0).expect("a heartbeat");
        assert_eq!(keep.isolation_ttl_seconds, None, "no annotation: keep");
        let a = l.metadata.annotations.as_mut().expect("annotations");
        a.insert(ON_ISOLATION.to_string(), "stop".to_string());
        a.insert(ISOLATION_TTL.to_string(), "10s".to_string());
        a.insert(STOP_WITHIN.to_string(), "4s 200ms".to_string());
        let stop = beat(&l, 1001.0).expect("a heartbeat");
        assert_eq!(stop.isolation_ttl_seconds, Some(10.0));
        assert!((stop.stop_within_seconds - 4.2).abs() < 1e-9);
        // A ttl that cannot be read: the longest a guard accepts (unknown is not stopped).
        let a = l.metadata.annotations.as_mut().expect("annotations");
        a.insert(ISOLATION_TTL.to_string(), "soon".to_string());
        assert_eq!(
            beat(&l, 1001.0).expect("a heartbeat").isolation_ttl_seconds,
            Some(3600.0)
        );
        let a = l.metadata.annotations.as_mut().expect("annotations");
        a.insert(ON_ISOLATION.to_string(), "keep".to_string());
        assert_eq!(
            beat(&l, 1001.0).expect("a heartbeat").isolation_ttl_seconds,
            None
        );
    }

    #[test]
    fn a_sidecar_heartbeat_says_its_form_and_never_its_isolation_ttl() {
        let mut l = lease("primary", Some("refusing"), Some("3"), Some(1000));
        let b = beat(&l, 1001.0).expect("a heartbeat");
        assert_eq!(
            b.form,
            GuardForm::Sidecar,
            "refusing: only a sidecar says it"
        );
        assert!(!b.running && !b.proves_stop_at(3));
        let a = l.metadata.annotations.as_mut().expect("annotations");
        a.insert(STATE.to_string(), "running".to_string());
        a.insert(FORM.to_string(), "sidecar".to_string());
        a.insert(ON_ISOLATION.to_string(), "stop".to_string());
        a.insert(ISOLATION_TTL.to_string(), "10s".to_string());
        let b = beat(&l, 1001.0).expect("a heartbeat");
        assert_eq!((b.form, b.running), (GuardForm::Sidecar, true));
        assert_eq!(
            b.isolation_ttl_seconds, None,
            "a sidecar is no stop-mode guard"
        );
        let stopped = beat(
            &lease("primary", Some("stopped"), Some("3"), Some(1000)),
            1001.0,
        )
        .expect("a heartbeat");
        assert_eq!(
            stopped.form,
            GuardForm::Wrapper,
            "no form annotation: a wrapper"
        );
        assert!(stopped.proves_stop_at(3));
    }

    #[test]
    fn a_lease_that_is_not_a_whole_heartbeat_proves_nothing() {
        // No renewal time: stale. Garbage epoch: none. No state: not running.
        let b = beat(&lease("primary", None, Some("x"), None), 1000.0).expect("a heartbeat");
        assert!(!b.fresh() && !b.running && b.standby_epoch.is_none());
        // No side label: not a guard's.
        let mut other = lease("primary", Some("running"), None, Some(1000));
        other.metadata.labels = None;
        assert_eq!(beat(&other, 1000.0), None);
        let mut unknown = lease("elsewhere", Some("running"), None, Some(1000));
        unknown.spec = None;
        assert_eq!(beat(&unknown, 1000.0), None);
    }
}

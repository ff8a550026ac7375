//! Freshness: an object in the standby cluster carries a timestamp that must be younger
//! than `max_age`, for users who replicate the state volume (VolSync's
//! `ReplicationDestination` `.status.lastSyncTime`, a Velero `Restore`, or an annotation
//! their own job writes).
//!
//! The kind is addressed without discovery: `api_version` and `kind` from the config,
//! and the resource's plural derived from the kind the way kube does it (lower case,
//! then English plural rules: `ReplicationDestination` → `replicationdestinations`,
//! `Restore` → `restores`, `Backup` → `backups`). The object is watched by name (a
//! field selector), through the standby cluster's caches. A kind the API server does
//! not serve (its CRD not installed, or a plural the derivation gets wrong) answers the
//! watch's list with 404 and the check says `not_installed`.
//!
//! The age is the daemon's wall clock minus the timestamp: a clock skew between the
//! daemon's host and whatever wrote the timestamp moves it by as much.

use super::unanswered;
use crate::config::FreshnessConfig;
use crate::kube::watch_cache::WatchStore;
use crate::model::ProbeReason;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube_failover_core::checks::{CheckKind, CheckResult, StateCheck};

/// The resource of `f`'s kind, its plural derived from the kind.
pub fn api_resource(f: &FreshnessConfig) -> ApiResource {
    let (group, version) = f.group_version();
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &f.kind))
}

/// The check of `f` from `store` (the watch of its object); `untrusted` says why the
/// standby's caches cannot be trusted this tick, if they cannot. Also returns the
/// timestamp's age in seconds when there is one.
pub fn check(
    store: &WatchStore<DynamicObject>,
    f: &FreshnessConfig,
    ns: &str,
    untrusted: Option<&str>,
    wall_unix: f64,
) -> (StateCheck, Option<f64>) {
    let what = format!("{} {ns}/{}", f.kind, f.object);
    let mut age = None;
    let (result, detail) = match untrusted {
        Some(why) => (CheckResult::Unanswerable, format!("{what}: {why}")),
        None => match store.read(|all| all.get(&f.object).cloned()) {
            Err((ProbeReason::NotFound, _)) => (
                CheckResult::NotInstalled,
                format!(
                    "{what}: the standby's API does not serve {} {} (its CRD is not \
                     installed, or its plural is not {})",
                    f.api_version,
                    f.kind,
                    api_resource(f).plural
                ),
            ),
            Err((reason, detail)) => unanswered(reason, &what, &detail),
            Ok(None) => (CheckResult::Missing, format!("{what} does not exist")),
            Ok(Some(obj)) => {
                let judged = judge(&obj, f, &what, wall_unix);
                age = judged.2;
                (judged.0, judged.1)
            }
        },
    };
    let check = StateCheck {
        name: f.check_name(),
        kind: CheckKind::Freshness,
        gate: f.gate,
        result,
        detail,
        checked_at_unix: Some(wall_unix),
    };
    (check, age)
}

fn judge(
    obj: &DynamicObject,
    f: &FreshnessConfig,
    what: &str,
    wall_unix: f64,
) -> (CheckResult, String, Option<f64>) {
    let value = match serde_json::to_value(obj) {
        Ok(v) => v,
        Err(_) => {
            return (
                CheckResult::Unanswerable,
                format!("{what}: could not be read"),
                None,
            );
        }
    };
    let pointer = &f.pointer;
    let Some(found) = value.pointer(pointer).filter(|v| !v.is_null()) else {
        return (
            CheckResult::Stale,
            format!("{what} has no timestamp at {pointer} (never synchronised?)"),
            None,
        );
    };
    let Some(text) = found.as_str() else {
        return (
            CheckResult::Unanswerable,
            format!("{what}: the value at {pointer} is not a string"),
            None,
        );
    };
    let Ok(at) = text.parse::<k8s_openapi::jiff::Timestamp>() else {
        return (
            CheckResult::Unanswerable,
            format!(
                "{what}: the value at {pointer} is not an RFC 3339 timestamp ({})",
                kube_failover_core::text::shown(text)
            ),
            None,
        );
    };
    let at_unix = at.as_millisecond() as f64 / 1000.0;
    let age = wall_unix - at_unix;
    let max = f.max_age.as_secs_f64();
    let shown_age =
        humantime::format_duration(std::time::Duration::from_secs(age.abs().round() as u64));
    if age > max {
        (
            CheckResult::Stale,
            format!(
                "{what}: {pointer} is {at}, {shown_age} old (max_age {})",
                humantime::format_duration(f.max_age)
            ),
            Some(age),
        )
    } else if age < 0.0 {
        (
            CheckResult::Ok,
            format!("{what}: {pointer} is {at}, {shown_age} in the future (clock skew?)"),
            Some(0.0),
        )
    } else {
        (
            CheckResult::Ok,
            format!("{what}: {pointer} is {at}, {shown_age} old"),
            Some(age),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Gate;
    use kube::runtime::watcher::{self, Event};
    use std::time::Duration;

    fn volsync() -> FreshnessConfig {
        FreshnessConfig {
            name: "volsync".into(),
            api_version: "volsync.backube/v1alpha1".into(),
            kind: "ReplicationDestination".into(),
            object: "env0-state".into(),
            namespace: None,
            pointer: "/status/lastSyncTime".into(),
            max_age: Duration::from_secs(15 * 60),
            gate: Gate::Block,
        }
    }

    fn object(name: &str, value: serde_json::Value) -> DynamicObject {
        let mut obj = DynamicObject::new(name, &api_resource(&volsync()));
        obj.metadata.annotations = Some(
            [(
                "example.com/synced-at".to_string(),
                "2027-01-15T10:00:00Z".to_string(),
            )]
            .into(),
        );
        obj.data = value;
        obj
    }

    fn store(items: Vec<DynamicObject>) -> std::sync::Arc<WatchStore<DynamicObject>> {
        let s = WatchStore::new("ReplicationDestination env0-state in ns");
        s.apply(Event::Init);
        for i in items {
            s.apply(Event::InitApply(i));
        }
        s.apply(Event::InitDone);
        s
    }

    /// 2027-01-15T10:00:00Z.
    const SYNCED: f64 = 1_800_007_200.0;

    #[test]
    fn the_plural_is_derived_from_the_kind() {
        assert_eq!(api_resource(&volsync()).plural, "replicationdestinations");
        assert_eq!(
            api_resource(&volsync()).api_version,
            "volsync.backube/v1alpha1"
        );
        let velero = FreshnessConfig {
            api_version: "velero.io/v1".into(),
            kind: "Restore".into(),
            ..volsync()
        };
        assert_eq!(api_resource(&velero).plural, "restores");
        let core = FreshnessConfig {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            ..volsync()
        };
        assert_eq!(api_resource(&core).plural, "configmaps");
        assert_eq!(api_resource(&core).group, "");
    }

    #[test]
    fn young_passes_old_is_stale_absent_is_stale_and_garbage_is_unanswerable() {
        let f = volsync();
        let synced = || {
            object(
                "env0-state",
                serde_json::json!({"status": {"lastSyncTime": "2027-01-15T10:00:00Z"}}),
            )
        };
        let s = store(vec![synced()]);
        let (c, age) = check(&s, &f, "ns", None, SYNCED + 60.0);
        assert!(c.passed(), "{c:?}");
        assert_eq!(age, Some(60.0));
        assert_eq!(
            c.detail,
            "ReplicationDestination ns/env0-state: /status/lastSyncTime is 2027-01-15T10:00:00Z, 1m old"
        );
        let (c, age) = check(&s, &f, "ns", None, SYNCED + 16.0 * 60.0);
        assert_eq!(c.result, CheckResult::Stale);
        assert_eq!(age, Some(960.0));
        assert!(c.detail.ends_with("16m old (max_age 15m)"), "{}", c.detail);
        assert_eq!(
            c.reason_code().map(|r| r.as_str()),
            Some("standby_state_stale")
        );
        let (c, _) = check(&s, &f, "ns", None, SYNCED - 30.0);
        assert!(
            c.passed() && c.detail.ends_with("in the future (clock skew?)"),
            "{c:?}"
        );

        let never = store(vec![object(
            "env0-state",
            serde_json::json!({"status": {}}),
        )]);
        let (c, age) = check(&never, &f, "ns", None, SYNCED);
        assert_eq!((c.result, age), (CheckResult::Stale, None));
        let absent = store(vec![]);
        let (c, _) = check(&absent, &f, "ns", None, SYNCED);
        assert_eq!(c.result, CheckResult::Missing);
        let garbage = store(vec![object(
            "env0-state",
            serde_json::json!({"status": {"lastSyncTime": "yesterday\u{1b}"}}),
        )]);
        let (c, _) = check(&garbage, &f, "ns", None, SYNCED);
        assert_eq!(c.result, CheckResult::Unanswerable);
        assert!(c.detail.contains("\\u{1b}"), "escaped: {}", c.detail);
        let number = store(vec![object(
            "env0-state",
            serde_json::json!({"status": {"lastSyncTime": 5}}),
        )]);
        assert_eq!(
            check(&number, &f, "ns", None, SYNCED).0.result,
            CheckResult::Unanswerable
        );
    }

    #[test]
    fn an_annotation_is_read_through_its_escaped_pointer() {
        let f = FreshnessConfig {
            pointer: "/metadata/annotations/example.com~1synced-at".into(),
            ..volsync()
        };
        let s = store(vec![object("env0-state", serde_json::json!({}))]);
        let (c, age) = check(&s, &f, "ns", None, SYNCED + 1.0);
        assert!(c.passed(), "{c:?}");
        assert_eq!(age, Some(1.0));
    }

    #[test]
    fn a_kind_not_served_or_forbidden_is_named_as_such() {
        let f = volsync();
        let status = |code: u16, reason: &str| {
            watcher::Error::InitialListFailed(kube::Error::Api(
                kube::core::Status::failure("m", reason)
                    .with_code(code)
                    .boxed(),
            ))
        };
        let s = store(vec![]);
        s.fail(&status(404, "NotFound"));
        let (c, _) = check(&s, &f, "ns", None, SYNCED);
        assert_eq!(c.result, CheckResult::NotInstalled, "{c:?}");
        assert!(c.detail.contains("replicationdestinations"), "{}", c.detail);
        assert_eq!(
            c.reason_code().map(|r| r.as_str()),
            Some("standby_state_unanswerable")
        );
        s.fail(&status(403, "Forbidden"));
        assert_eq!(
            check(&s, &f, "ns", None, SYNCED).0.result,
            CheckResult::Forbidden
        );
    }
}

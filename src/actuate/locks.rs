//! Terraform's lock Leases in the standby namespace after a promotion.
//!
//! Terraform's `kubernetes` backend locks a workspace's state with a Lease named
//! `lock-tfstate-<workspace>-<suffix>`: locking sets `spec.holderIdentity` to the lock ID
//! and the annotation `app.terraform.io/lock-info` to the lock's JSON (ID, Operation,
//! Who, Created, …); unlocking clears both and leaves the Lease. A Lease that is held in
//! the standby when a promotion starts was not taken by the standby's agent (it ran at 0
//! replicas): it was copied there, or left from an earlier failover, and no run will
//! ever release it. Such locks are named in the promotion's Event and notice, and
//! deleted with `groups.state.clear_stale_locks` (with uid and resourceVersion
//! preconditions, so a lock that changed since it was listed is left alone).

use super::events::new_event;
use super::{ActuateError, Actuator, Side};
use crate::error_chain::chain;
use crate::kube::call::bounded;
use crate::model::FailoverRecord;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};

/// The name prefix of the backend's lock Leases.
pub const LOCK_PREFIX: &str = "lock-tfstate-";
/// The annotation holding the lock's JSON.
pub const LOCK_INFO_ANNOTATION: &str = "app.terraform.io/lock-info";

/// A held Terraform lock Lease.
#[derive(Debug, Clone, PartialEq)]
pub struct LockLease {
    /// The Lease's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its uid (delete precondition).
    pub uid: Option<String>,
    /// Its resourceVersion (delete precondition).
    pub resource_version: Option<String>,
    /// `spec.holderIdentity`: the lock ID.
    pub lock_id: String,
    /// The lock info's `Operation`.
    pub operation: Option<String>,
    /// The lock info's `Who`.
    pub who: Option<String>,
    /// When the lock was taken: the lock info's `Created`, else the Lease's renew,
    /// acquire or creation time (RFC 3339).
    pub locked_at: Option<String>,
    /// The same as Unix seconds.
    pub locked_at_unix: Option<f64>,
}

impl LockLease {
    /// True when it was locked before `start_unix` (a promotion's start), or when its
    /// lock time is unknown.
    pub fn locked_before(&self, start_unix: i64) -> bool {
        self.locked_at_unix.is_none_or(|t| t < start_unix as f64)
    }

    fn describe(&self) -> String {
        let mut out = format!("{} (lock ID {}", self.name, self.lock_id);
        if let Some(op) = &self.operation {
            out.push_str(&format!(", {op}"));
        }
        if let Some(who) = &self.who {
            out.push_str(&format!(" by {who}"));
        }
        if let Some(at) = &self.locked_at {
            out.push_str(&format!(", locked {at}"));
        }
        out.push(')');
        out
    }
}

/// Longest value kept from the lock info (it is written by whoever runs Terraform).
const MAX_INFO_CHARS: usize = 200;

fn bounded_text(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_INFO_CHARS)
        .collect()
}

/// The lock a Lease holds, if it is a Terraform lock Lease and held.
pub fn held_lock(lease: &Lease) -> Option<LockLease> {
    let meta = &lease.metadata;
    let name = meta.name.as_deref()?;
    if !name.starts_with(LOCK_PREFIX) {
        return None;
    }
    let lock_id = lease
        .spec
        .as_ref()?
        .holder_identity
        .as_deref()
        .filter(|h| !h.is_empty())?;
    let info: Option<serde_json::Value> = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(LOCK_INFO_ANNOTATION))
        .and_then(|text| serde_json::from_str(text).ok());
    let field = |key: &str| {
        info.as_ref()
            .and_then(|i| i.get(key))
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(bounded_text)
    };
    let spec = lease.spec.as_ref();
    let created = field("Created")
        .and_then(|c| c.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .or_else(|| spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0))
        .or_else(|| spec.and_then(|s| s.acquire_time.as_ref()).map(|t| t.0))
        .or_else(|| meta.creation_timestamp.as_ref().map(|t| t.0));
    Some(LockLease {
        name: name.to_string(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        lock_id: bounded_text(lock_id),
        operation: field("Operation"),
        who: field("Who"),
        locked_at: created.map(|t| t.to_string()),
        locked_at_unix: created.map(|t| t.as_millisecond() as f64 / 1000.0),
    })
}

/// A stale lock found after a promotion.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundLock {
    /// The lock.
    pub lock: LockLease,
    /// Deleted by this call.
    pub deleted: bool,
    /// Why its deletion failed.
    pub error: Option<String>,
}

impl Actuator {
    /// The held Terraform lock Leases of the standby namespace taken before the
    /// promotion of `record` started (every held one when its start is unknown); with
    /// `clear`, each is deleted ([`Actuator::delete_stale_lock`]) when its lock time
    /// and the start are known. A lock gone meanwhile is left out. Fails only when the
    /// Leases cannot be listed: a deletion that fails is reported in its entry.
    pub async fn stale_locks(
        &self,
        epoch: u64,
        record: Option<&FailoverRecord>,
        clear: bool,
    ) -> Result<Vec<FoundLock>, ActuateError> {
        let start = record.and_then(|r| r.promoted_at_unix);
        let promoted_at = record.and_then(|r| r.promoted_at.as_deref()).unwrap_or("?");
        let mut out = Vec::new();
        for lock in self.held_locks().await? {
            if !start.is_none_or(|s| lock.locked_before(s)) {
                continue;
            }
            let (mut deleted, mut error) = (false, None);
            if clear && start.is_some() && lock.locked_at_unix.is_some() {
                match self.delete_stale_lock(&lock, epoch, promoted_at).await {
                    Ok(true) => deleted = true,
                    // Gone already: not a lock any more.
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(group = %self.group.name, lease = %lock.name,
                            reason = e.reason(), error = %chain(&e),
                            "could not delete a stale Terraform lock");
                        error = Some(chain(&e).to_string());
                    }
                }
            }
            out.push(FoundLock {
                lock,
                deleted,
                error,
            });
        }
        if !out.is_empty() {
            let names: Vec<String> = out
                .iter()
                .map(|l| {
                    let deleted = if l.deleted { ", deleted" } else { "" };
                    format!("{} (lock ID {}{deleted})", l.lock.name, l.lock.lock_id)
                })
                .collect();
            tracing::warn!(group = %self.group.name, epoch, locks = %names.join(", "),
                "stale Terraform locks in the standby namespace");
        }
        Ok(out)
    }

    /// The held Terraform lock Leases of the standby namespace (one list call).
    async fn held_locks(&self) -> Result<Vec<LockLease>, ActuateError> {
        let ns = self.standby_ns();
        let leases: Api<Lease> = Api::namespaced((*self.standby).clone(), ns);
        let list = bounded(self.call_timeout, leases.list(&ListParams::default()))
            .await
            .map_err(|source| ActuateError::Call {
                side: Side::Standby,
                namespace: ns.to_string(),
                op: "list",
                object: "Leases".to_string(),
                source,
            })?;
        let mut locks: Vec<LockLease> = list.items.iter().filter_map(held_lock).collect();
        for lock in &mut locks {
            if lock.namespace.is_empty() {
                lock.namespace = ns.to_string();
            }
        }
        locks.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(locks)
    }

    /// Deletes a stale lock Lease, on condition that it is still the one listed (uid and
    /// resourceVersion), and explains it with an Event on the Lease and a log line.
    /// `Ok(false)`: it was already gone.
    pub async fn delete_stale_lock(
        &self,
        lock: &LockLease,
        epoch: u64,
        promoted_at: &str,
    ) -> Result<bool, ActuateError> {
        if let Some(err) = self.refused(|| format!("delete of the lock Lease {}", lock.name)) {
            return Err(err);
        }
        let ns = self.standby_ns();
        let leases: Api<Lease> = Api::namespaced((*self.standby).clone(), ns);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: lock.uid.clone(),
                resource_version: lock.resource_version.clone(),
            }),
            ..DeleteParams::default()
        };
        match bounded(self.call_timeout, leases.delete(&lock.name, &params)).await {
            Ok(_) => {}
            Err(e) if e.status_code() == Some(404) => return Ok(false),
            Err(source) => {
                return Err(ActuateError::Call {
                    side: Side::Standby,
                    namespace: ns.to_string(),
                    op: "delete",
                    object: format!("Lease {}", lock.name),
                    source,
                });
            }
        }
        let message = format!(
            "group {} epoch {epoch}: deleted the stale Terraform lock {}, taken before the \
             promotion started at {promoted_at}: no run of the standby held it \
             (groups.state.clear_stale_locks)",
            self.group.name,
            lock.describe()
        );
        tracing::warn!(
            group = %self.group.name,
            epoch,
            namespace = %ns,
            lease = %lock.name,
            lock_id = %lock.lock_id,
            locked_at = ?lock.locked_at,
            reason = "stale_lock_cleared",
            "stale Terraform lock deleted"
        );
        let involved = ObjectReference {
            api_version: Some("coordination.k8s.io/v1".to_string()),
            kind: Some("Lease".to_string()),
            name: Some(lock.name.clone()),
            namespace: Some(ns.to_string()),
            uid: lock.uid.clone(),
            ..ObjectReference::default()
        };
        let event = new_event(
            involved,
            &self.identity,
            "KubeFailoverStaleLockCleared",
            "Normal",
            "Delete",
            message,
        );
        self.create_event(&self.standby, ns, event).await;
        Ok(true)
    }

    /// The Event on the failover record when a promotion completed: how long it took,
    /// the stale locks found (and deleted), what people should do. A Warning when stale
    /// locks are left.
    pub async fn promotion_complete_event(&self, message: String, locks_left: bool) {
        let kind = if locks_left { "Warning" } else { "Normal" };
        self.record_event_of_type(kind, "KubeFailoverPromotionComplete", message)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(name: &str, holder: Option<&str>, info: Option<&str>) -> Lease {
        let mut annotations = serde_json::Map::new();
        if let Some(info) = info {
            annotations.insert(LOCK_INFO_ANNOTATION.into(), info.into());
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name, "namespace": "env0-agent", "uid": "u-1", "resourceVersion": "41",
                "creationTimestamp": "2024-06-01T00:00:00Z",
                "labels": {"tfstate": "true", "app.kubernetes.io/managed-by": "terraform"},
                "annotations": annotations,
            },
            "spec": {"holderIdentity": holder},
        }))
        .unwrap()
    }

    const INFO: &str = r#"{"ID":"1f5c-9","Operation":"OperationTypeApply","Info":"","Who":"runner@agent-7","Version":"1.9.0","Created":"2025-01-02T02:00:00.123456789Z","Path":""}"#;

    #[test]
    fn a_held_terraform_lock_is_read_from_holder_and_lock_info() {
        let lock = held_lock(&lease(
            "lock-tfstate-default-state",
            Some("1f5c-9"),
            Some(INFO),
        ))
        .expect("held");
        assert_eq!(lock.lock_id, "1f5c-9");
        assert_eq!(lock.operation.as_deref(), Some("OperationTypeApply"));
        assert_eq!(lock.who.as_deref(), Some("runner@agent-7"));
        assert_eq!(
            lock.locked_at.as_deref(),
            Some("2025-01-02T02:00:00.123456789Z")
        );
        assert_eq!(
            (lock.uid.as_deref(), lock.resource_version.as_deref()),
            (Some("u-1"), Some("41"))
        );
        let at = lock.locked_at_unix.unwrap();
        assert!(lock.locked_before(at as i64 + 1));
        assert!(!lock.locked_before(at as i64));
        assert_eq!(
            lock.describe(),
            "lock-tfstate-default-state (lock ID 1f5c-9, OperationTypeApply by runner@agent-7, \
             locked 2025-01-02T02:00:00.123456789Z)"
        );
    }

    #[test]
    fn released_locks_and_other_leases_are_not_locks() {
        // Unlocking clears the holder and leaves the Lease.
        assert_eq!(
            held_lock(&lease("lock-tfstate-default-state", None, None)),
            None
        );
        assert_eq!(
            held_lock(&lease("lock-tfstate-default-state", Some(""), None)),
            None
        );
        // The daemon's own Leases, or anything else.
        assert_eq!(
            held_lock(&lease("kube-failover-env0-leader", Some("w"), None)),
            None
        );
    }

    #[test]
    fn without_lock_info_the_lease_times_are_used() {
        let lock = held_lock(&lease("lock-tfstate-x", Some("id"), Some("not json"))).unwrap();
        assert_eq!(lock.operation, None);
        assert_eq!(lock.locked_at.as_deref(), Some("2024-06-01T00:00:00Z"));
        let unknown = LockLease {
            locked_at: None,
            locked_at_unix: None,
            ..lock
        };
        assert!(unknown.locked_before(0), "unknown time: reported as stale");
    }
}

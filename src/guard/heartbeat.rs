//! The guard's heartbeat: one Lease in the standby namespace, named after the group,
//! side and identity, saying whether the agent runs, since when, why, and the highest
//! epoch at which the guard saw the standby active. The daemon and people read it; the
//! guard reads its own back after a restart, so it remembers a promotion even when the
//! record is gone by then.

use super::decide::GuardReason;
use crate::kube::call::{CallError, bounded};
use crate::model::GuardForm;
use crate::model::Side;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use std::collections::BTreeMap;
use std::time::Duration;

/// Label on every guard heartbeat: the group's name.
pub const GROUP_LABEL: &str = "kube-failover/guard";
/// Label: the side the guard runs on.
pub const SIDE_LABEL: &str = "kube-failover/guard-side";
/// Annotation: `running` or `stopped`; a sidecar guard (see [`FORM`]) says `running`
/// while its verdict lets the agent run and `refusing` once it makes the agent's
/// liveness probe fail (never `stopped`: kubelet restarts the agent's container).
pub const STATE: &str = "kube-failover/guard-state";
/// Annotation: the guard's form, `wrapper` or `sidecar` (absent: `wrapper`). The
/// daemon never counts a sidecar's heartbeat as proof that the agent stopped.
pub const FORM: &str = "kube-failover/guard-form";
/// Annotation: the reason code of the state.
pub const REASON: &str = "kube-failover/guard-reason";
/// Annotation: the highest epoch seen with the standby active (absent: none).
pub const STANDBY_EPOCH: &str = "kube-failover/guard-standby-epoch";
/// Annotation: RFC 3339 time of the last change of state.
pub const SINCE: &str = "kube-failover/guard-since";
/// Annotation: the guard's `on_isolation`, `keep` or `stop`.
pub const ON_ISOLATION: &str = "kube-failover/guard-on-isolation";
/// Annotation (with `stop`): its `isolation_ttl`, e.g. `10s`.
pub const ISOLATION_TTL: &str = "kube-failover/guard-isolation-ttl";
/// Annotation (with `stop`): how long it may take, once `isolation_ttl` has passed,
/// until its agent is gone (one interval, four bounded calls, `stop_grace`), e.g. `15s`.
pub const STOP_WITHIN: &str = "kube-failover/guard-stop-within";
/// The field manager of the guard's writes.
const MANAGER: &str = "kube-failover-guard";

/// What a heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    /// The agent runs.
    pub running: bool,
    /// Why.
    pub reason: GuardReason,
    /// The highest epoch seen with the standby active.
    pub standby_epoch: Option<u64>,
    /// RFC 3339 time of the last change of `running`.
    pub since: String,
}

/// Where the heartbeat goes.
#[derive(Clone)]
pub struct Heartbeat {
    api: Api<Lease>,
    name: String,
    identity: String,
    group: String,
    side: Side,
    ttl: Duration,
    timeout: Duration,
    isolation: Option<(Duration, Duration)>,
    form: GuardForm,
}

impl Heartbeat {
    /// The heartbeat `name` in `namespace`, valid for `ttl` after each write.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: String,
        identity: String,
        (group, side): (&str, Side),
        (ttl, timeout): (Duration, Duration),
    ) -> Self {
        Heartbeat {
            api: Api::namespaced(client, namespace),
            name,
            identity,
            group: group.to_string(),
            side,
            ttl,
            timeout,
            isolation: None,
            form: GuardForm::Wrapper,
        }
    }

    /// Says `form` in every write (default `wrapper`).
    pub fn with_form(mut self, form: GuardForm) -> Self {
        self.form = form;
        self
    }

    /// Says `on_isolation = "stop"` with `isolation_ttl` and `stop_within` (see
    /// [`STOP_WITHIN`]) in every write; without it, `keep`.
    pub fn with_isolation(mut self, isolation_ttl: Duration, stop_within: Duration) -> Self {
        self.isolation = Some((isolation_ttl, stop_within));
        self
    }

    /// The Lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The highest standby epoch a previous run of this guard wrote, if any.
    pub async fn remembered_epoch(&self) -> Result<Option<u64>, CallError> {
        let lease = bounded(self.timeout, self.api.get_opt(&self.name)).await?;
        Ok(lease
            .and_then(|l| l.metadata.annotations)
            .and_then(|a| a.get(STANDBY_EPOCH).and_then(|v| v.parse().ok())))
    }

    /// Writes `beat` (server-side apply: created when missing, one request).
    pub async fn write(&self, beat: &Beat) -> Result<(), CallError> {
        let mut annotations = BTreeMap::from([
            (
                STATE.to_string(),
                state(beat.running, self.form).to_string(),
            ),
            (FORM.to_string(), self.form.as_str().to_string()),
            (REASON.to_string(), beat.reason.as_str().to_string()),
            (SINCE.to_string(), beat.since.clone()),
        ]);
        if let Some(epoch) = beat.standby_epoch {
            annotations.insert(STANDBY_EPOCH.to_string(), epoch.to_string());
        }
        let hs = |d: Duration| humantime::format_duration(d).to_string();
        match self.isolation {
            Some((ttl, within)) => {
                annotations.insert(ON_ISOLATION.to_string(), "stop".to_string());
                annotations.insert(ISOLATION_TTL.to_string(), hs(ttl));
                annotations.insert(STOP_WITHIN.to_string(), hs(within));
            }
            None => {
                annotations.insert(ON_ISOLATION.to_string(), "keep".to_string());
            }
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(BTreeMap::from([
                    (
                        "app.kubernetes.io/managed-by".to_string(),
                        "kube-failover".to_string(),
                    ),
                    (GROUP_LABEL.to_string(), self.group.clone()),
                    (SIDE_LABEL.to_string(), self.side.as_str().to_string()),
                ])),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(self.ttl.as_secs().max(1)).unwrap_or(i32::MAX),
                ),
                renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
                ..LeaseSpec::default()
            }),
        };
        let mut value = serde_json::to_value(&lease).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert("apiVersion".into(), "coordination.k8s.io/v1".into());
            object.insert("kind".into(), "Lease".into());
        }
        let params = PatchParams::apply(MANAGER).force();
        bounded(
            self.timeout,
            self.api.patch(&self.name, &params, &Patch::Apply(value)),
        )
        .await?;
        Ok(())
    }
}

/// The [`STATE`] a guard of `form` writes.
fn state(running: bool, form: GuardForm) -> &'static str {
    match (running, form) {
        (true, _) => "running",
        (false, GuardForm::Wrapper) => "stopped",
        (false, GuardForm::Sidecar) => "refusing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sidecar_never_says_stopped() {
        assert_eq!(state(false, GuardForm::Wrapper), "stopped");
        assert_eq!(state(false, GuardForm::Sidecar), "refusing");
        assert_eq!(state(true, GuardForm::Sidecar), "running");
        assert_eq!(state(true, GuardForm::Wrapper), "running");
    }
}

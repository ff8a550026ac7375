//! The actuator: carries out the engine's [`Action`]s as Kubernetes calls. Scaling
//! goes through the scale subresource, record writes carry resourceVersion
//! preconditions, and every Deployment scaled gets an Event.
//!
//! Every action is idempotent: it looks at the current state first and changes only
//! what differs, so repeating an action after a crash (or a lost answer) is safe.
//! Every call is bounded by the actuator's call timeout.
//!
//! This file holds the actuator's face: [`Actuator::execute`] dispatching each action,
//! what it reports ([`ActionReport`]) and how it fails ([`ActuateError`]). The work is
//! in `scale` (scaling with the fresh-record check), `record_writes` (the failover
//! record's writes), `events` (Kubernetes Events) and `locks` (Terraform's lock Leases
//! after a promotion).

mod events;
mod locks;
mod record_writes;
mod scale;

pub use locks::{FoundLock, LockLease, held_lock};

use crate::config::GroupConfig;
use crate::kube::call::CallError;
use crate::liveness::LazyClient;
use crate::model::{Action, FailoverRecord, FencedBy, Observation, ProbeReason};
use crate::record::{RecordError, Update};
use scale::Scaling;
use serde::Serialize;
use std::fmt;
use std::time::Duration;
use tracing::warn;

/// The component name on Events and the field manager on writes.
const COMPONENT: &str = "kube-failover";

pub use crate::model::Side;

/// One Deployment whose replica count the actuator changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScaleChange {
    /// The cluster the Deployment is in.
    pub side: Side,
    /// The Deployment's namespace.
    pub namespace: String,
    /// The Deployment's name.
    pub deployment: String,
    /// `spec.replicas` before.
    pub from: i32,
    /// `spec.replicas` after.
    pub to: i32,
}

/// What an action changed, for the daemon's log line and `/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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
    /// [`Action::ClearStaleLocks`]: the promotion's epoch and the stale locks found,
    /// each with whether it was deleted.
    #[serde(skip)]
    pub stale_locks: Option<(u64, Vec<FoundLock>)>,
}

impl ActionReport {
    fn new(action: &Action) -> Self {
        ActionReport {
            action: action.kind(),
            ..ActionReport::default()
        }
    }

    /// What the action left undone although its calls were made (a stale lock that
    /// could not be deleted): it counts as failed, and its report still tells what
    /// was done.
    pub fn left_undone(&self) -> Option<String> {
        let (_, locks) = self.stale_locks.as_ref()?;
        let failed: Vec<&FoundLock> = locks.iter().filter(|l| l.error.is_some()).collect();
        let first = failed.first()?;
        Some(format!(
            "{} of {} stale locks not deleted; Lease {}: {}",
            failed.len(),
            locks.len(),
            first.lock.name,
            first.error.as_deref().unwrap_or_default()
        ))
    }

    /// True when the action changed something (scaled a Deployment or wrote the
    /// record); false when it found everything already as wanted.
    pub fn changed(&self) -> bool {
        !self.scaled.is_empty() || self.record_written || self.deleted_locks().next().is_some()
    }

    fn deleted_locks(&self) -> impl Iterator<Item = &FoundLock> {
        self.stale_locks
            .iter()
            .flat_map(|(_, locks)| locks)
            .filter(|l| l.deleted)
    }
}

impl fmt::Display for ActionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.action)?;
        if !self.changed() {
            f.write_str(" nothing to change")?;
        }
        for (i, l) in self.deleted_locks().enumerate() {
            let sep = if i == 0 {
                " deleted stale lock Leases "
            } else {
                ", "
            };
            write!(f, "{sep}{}", l.lock.name)?;
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

/// The `KubeFailoverPromotionComplete` Event of [`Action::AnnouncePromoted`], as the
/// promotion's notice composed it.
#[derive(Debug, Clone, PartialEq)]
pub enum PromotionEvent {
    /// Write it now: Normal, or Warning when stale locks are left.
    Write {
        /// The Event's message.
        message: String,
        /// Stale Terraform locks are left in the standby namespace.
        locks_left: bool,
    },
    /// The group's env0 task writes it when its lookup of the stranded deployments
    /// ends (`[env0]`), through [`Actuator::promotion_complete_event`].
    HandedToEnv0,
}

/// Why an action failed. The message names the cluster, namespace and object.
#[derive(Debug, thiserror::Error)]
pub enum ActuateError {
    /// A Kubernetes call failed or timed out.
    #[error("{side} cluster, namespace {namespace}: {op} {object}")]
    Call {
        /// The cluster called.
        side: Side,
        /// The namespace called.
        namespace: String,
        /// The operation: `list`, `get`, `scale`.
        op: &'static str,
        /// What was called, e.g. `Deployment agent-trigger`.
        object: String,
        #[source]
        /// Why it failed.
        source: CallError,
    },
    /// A workload to scale up selects no Deployment.
    #[error("{side} cluster: {detail}")]
    NothingSelected {
        /// The cluster.
        side: Side,
        /// The namespace.
        namespace: String,
        /// Which selection matched nothing.
        detail: String,
    },
    /// Reading or writing the failover record failed.
    #[error("standby cluster, namespace {namespace}")]
    Record {
        /// The standby namespace.
        namespace: String,
        #[source]
        /// Why it failed.
        source: RecordError,
    },
    /// The record could not be read this tick, so it is not written blind.
    #[error(
        "standby cluster, namespace {namespace}: ConfigMap {name} could not be read \
         ({detail}); not writing it blind"
    )]
    RecordUnknown {
        /// The standby namespace.
        namespace: String,
        /// The record's ConfigMap name.
        name: String,
        /// Why it could not be read.
        reason: ProbeReason,
        /// What the read said.
        detail: String,
    },
    /// This instance no longer leads the group (its renew deadline passed, as during a
    /// pause of the process inside an action): the write was not sent.
    #[error("no longer the leader: {write} not sent")]
    NotLeading {
        /// The write not sent, e.g. `scale Deployment agent-trigger`.
        write: String,
    },
    /// The record is not in the state the action expects (another epoch, or a phase
    /// the action must not overwrite): someone else moved it on.
    #[error("standby cluster, namespace {namespace}: ConfigMap {name}: {detail}")]
    Stale {
        /// The standby namespace.
        namespace: String,
        /// The record's ConfigMap name.
        name: String,
        /// What changed.
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
            ActuateError::Stale { .. } | ActuateError::NotLeading { .. } => "conflict",
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

/// Told just before a promotion's `promoting` record is written, so that what must not
/// run past a promotion stops first (the Terraform state mirror, `crate::mirror`).
pub trait BeforePromotion: Send + Sync {
    /// Stops what must stop; returns the state mirror's age in seconds (since it last
    /// found the standby in sync), written into the record.
    fn before_promotion(&self) -> futures::future::BoxFuture<'_, Option<u64>>;
}

/// Carries out actions for one group.
pub struct Actuator {
    group: GroupConfig,
    primary: LazyClient,
    standby: LazyClient,
    identity: String,
    call_timeout: Duration,
    before_promotion: Option<std::sync::Arc<dyn BeforePromotion>>,
    leader_gate: Option<LeaderGate>,
}

/// Whether this instance may write now (it leads the group within its renew deadline).
pub type LeaderGate = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

impl Actuator {
    /// The default bound on each Kubernetes call.
    pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

    /// An actuator for `group`, acting as `identity` (written into the record and
    /// Events). Its clients are built when it first calls (see [`LazyClient`]).
    pub fn new(
        group: &GroupConfig,
        primary: impl Into<LazyClient>,
        standby: impl Into<LazyClient>,
        identity: String,
    ) -> Self {
        Actuator {
            group: group.clone(),
            primary: primary.into(),
            standby: standby.into(),
            identity,
            call_timeout: Self::DEFAULT_CALL_TIMEOUT,
            before_promotion: None,
            leader_gate: None,
        }
    }

    /// Asks `gate` just before each write: an action that outlives the leadership (the
    /// process paused, a slow call) stops there instead of writing as a deposed leader.
    /// The runner checks before each action; an action has several writes.
    pub fn with_leader_gate(mut self, gate: LeaderGate) -> Self {
        self.leader_gate = Some(gate);
        self
    }

    /// Whether a write may be sent now (always, without a gate: the operator's commands).
    fn may_write(&self) -> bool {
        self.leader_gate.as_ref().is_none_or(|gate| gate())
    }

    /// The error naming a write not sent, when [`Actuator::may_write`] says no.
    fn refused(&self, write: impl FnOnce() -> String) -> Option<ActuateError> {
        (!self.may_write()).then(|| ActuateError::NotLeading { write: write() })
    }

    /// Calls `hook` before each `promoting` record write.
    pub fn with_before_promotion(mut self, hook: std::sync::Arc<dyn BeforePromotion>) -> Self {
        self.before_promotion = Some(hook);
        self
    }

    /// Sets the bound on each Kubernetes call.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Carries out `action`, given the observation the decision was made on
    /// ([`Action::AnnouncePromoted`] with a plain Event).
    pub async fn execute(
        &self,
        action: &Action,
        obs: &Observation,
    ) -> Result<ActionReport, ActuateError> {
        self.execute_with(action, obs, None).await
    }

    /// As [`Actuator::execute`]; `event` is the text of [`Action::AnnouncePromoted`]'s
    /// Event as the promotion's notice composed it.
    pub async fn execute_with(
        &self,
        action: &Action,
        obs: &Observation,
        event: Option<PromotionEvent>,
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
                self.update_record(action, *epoch, Update::Failed(*reason))
                    .await
            }
            Action::FencePrimary { epoch, names } => {
                self.scale(action, Scaling::Fence, *epoch, names).await
            }
            Action::RecordFenced { epoch, by } => {
                let report = self
                    .update_record(action, *epoch, Update::Fenced(*by))
                    .await?;
                if *by == FencedBy::Guard && report.record_written {
                    self.announce_guard_fence(*epoch).await;
                }
                Ok(report)
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
            Action::ClearStaleLocks { epoch } => {
                let record = obs
                    .standby
                    .record
                    .as_ref()
                    .ok()
                    .filter(|r| r.epoch == *epoch);
                let mut report = ActionReport::new(action);
                let locks = self.stale_locks(*epoch, record, true).await?;
                report.stale_locks = Some((*epoch, locks));
                Ok(report)
            }
            Action::AnnouncePromoted { epoch } => {
                match event {
                    Some(PromotionEvent::Write {
                        message,
                        locks_left,
                    }) => {
                        self.promotion_complete_event(message, locks_left).await;
                    }
                    Some(PromotionEvent::HandedToEnv0) => {}
                    None => {
                        let message = format!(
                            "group {}: the standby is active; promotion epoch {epoch} completed",
                            self.group.name
                        );
                        self.promotion_complete_event(message, false).await;
                    }
                }
                Ok(ActionReport::new(action))
            }
            Action::WarnStateChecks { .. } => {
                let group = &self.group.name;
                if let Some(message) =
                    crate::state::promotion_notice(group, &obs.standby.state_checks)
                {
                    warn!(group = %group, %message, "promotion started while state checks fail");
                    let reason = crate::state::STATE_EVENT_REASON;
                    self.record_event(reason, message).await;
                }
                Ok(ActionReport::new(action))
            }
        }
    }

    fn standby_ns(&self) -> &str {
        &self.group.standby.namespace
    }

    fn stale(&self, name: &str, detail: String) -> ActuateError {
        ActuateError::Stale {
            namespace: self.standby_ns().to_string(),
            name: name.to_string(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_chain::chain;
    use kube::core::Status;

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
            "primary cluster, namespace agents: scale Deployment agent-trigger",
            "its own context only"
        );
        assert_eq!(
            chain(&err).to_string(),
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
            chain(&conflict).to_string(),
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
}

//! Notices to people: when a promotion completes or fails, and when the group is failed
//! back, each configured webhook gets one document saying what happened and what to do
//! now (redeploy the runs that waited for approval, check the runs in flight, clear
//! stale Terraform locks, check the state's freshness).
//!
//! [`Notice`] is the document (its JSON form is the schema in the README), built by the
//! pure functions of `content`; `render` writes it as JSON or as a Slack message;
//! `deliver` sends it from a background task per webhook (bounded queue, retries with
//! backoff, never blocking a tick); `track` decides, per group and tick, which events
//! happened and sends each once.

mod content;
mod deliver;
mod env0;
mod metrics;
mod render;
mod track;

pub(crate) use content::unix_of;
pub use content::{SideInfo, reason_text};
pub use deliver::Notifier;
pub use env0::{Env0Report, PendingPromotion, PromotionHandoff, Redeploy, Stranded};
pub use metrics::NoticeMetrics;
pub use render::render;
pub use track::GroupNotices;

/// Notices built as the tests of other modules need them.
#[cfg(test)]
pub(crate) mod tests_support {
    pub(crate) use super::content::tests::promotion_notice;
}

pub use crate::config::{NoticeEvent, NoticeFormat};
use serde::{Deserialize, Serialize};

/// Version of the notice document; raised when a field changes meaning or disappears
/// (new fields may appear without a new version).
pub const SCHEMA_VERSION: u32 = 1;

/// One notice: what happened to a group, why, and what people should do now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// [`SCHEMA_VERSION`].
    pub version: u32,
    /// `<group>/<epoch>/<event>`: the same for every copy of this notice (retries, another
    /// instance), so a receiver can drop duplicates.
    pub id: String,
    /// `promotion`, `failback` or `failed`.
    pub event: NoticeEvent,
    /// The failover group.
    pub group: String,
    /// The promotion epoch this is about.
    pub epoch: u64,
    /// One line for people.
    pub summary: String,
    /// The daemon instance that sent it (`daemon.identity`).
    pub sent_by: String,
    /// When the notice was made (RFC 3339).
    pub created_at: String,
    /// The side that was active before.
    pub from: SideInfo,
    /// The side that is (or was meant to become) active.
    pub to: SideInfo,
    /// Why: the record's reason code first, then the primary's failing signals when this
    /// instance saw the promotion start.
    pub reasons: Vec<Reason>,
    /// When the promotion (or failback) started, RFC 3339; `null` when unknown.
    pub started_at: Option<String>,
    /// When it completed or was declared failed, RFC 3339; `null` when unknown.
    pub finished_at: Option<String>,
    /// The time between the two, in seconds; `null` when either is unknown.
    pub duration_seconds: Option<f64>,
    /// Who wrote the record's last transition (a daemon identity, or an operator).
    pub recorded_by: String,
    /// The standby's state checks at the time; `null` when this daemon has none to report.
    pub state_checks: Option<Vec<StateCheck>>,
    /// Age of the mirrored Terraform state when the promotion started, in seconds;
    /// `null` when not known (no mirror).
    pub mirror_age_seconds: Option<f64>,
    /// Terraform lock Leases (`lock-tfstate-*`) of the standby namespace that were
    /// locked before the promotion started; `null` when not looked for (failback,
    /// failed) or when they could not be listed (see `stale_locks_error`).
    pub stale_locks: Option<Vec<StaleLock>>,
    /// Why the lock Leases could not be listed.
    pub stale_locks_error: Option<String>,
    /// What people should do now, in order.
    pub actions: Vec<ActionItem>,
    /// The env0 deployments the promotion stranded, and the redeploys (`[env0]`,
    /// promotion only); `null` when not looked up.
    #[serde(default)]
    pub env0: Option<Env0Report>,
}

/// A reason code and what it means.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// A reason code (README, "Reason codes").
    pub code: String,
    /// The signal it is about (`api`, `workload:…`, `http:…`), for a probe's reason.
    pub signal: Option<String>,
    /// What it means, or what the probe saw.
    pub text: String,
}

/// How a failing state check affects a promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateCheckGate {
    /// The standby is unfit while the check fails: promotion waits.
    Block,
    /// Promotion goes ahead; the notice says what is missing.
    Warn,
}

/// One standby state check (remote backend reachable, state volume bound, state fresh)
/// as it stood when the notice was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCheck {
    /// The check's name.
    pub name: String,
    /// `block` or `warn`.
    pub gate: StateCheckGate,
    /// True when it passed.
    pub passed: bool,
    /// Its reason code.
    pub reason: String,
    /// What it saw.
    pub detail: String,
}

/// A Terraform lock Lease left in the standby namespace from before the promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaleLock {
    /// The Lease, `lock-tfstate-<workspace>-<suffix>`.
    pub name: String,
    /// Its namespace (the standby's).
    pub namespace: String,
    /// `spec.holderIdentity`: the lock ID (`terraform force-unlock <ID>`).
    pub lock_id: String,
    /// The Terraform operation that took the lock (`OperationTypeApply`, …), from the
    /// Lease's `app.terraform.io/lock-info` annotation.
    pub operation: Option<String>,
    /// Who took it (`user@host`), from the same annotation.
    pub who: Option<String>,
    /// When it was taken (RFC 3339): the lock info's `Created`, else the Lease's renew,
    /// acquire or creation time.
    pub locked_at: Option<String>,
    /// True when the daemon deleted it (`groups.state.clear_stale_locks`).
    pub deleted: bool,
}

/// One thing people should do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionItem {
    /// A stable identifier: `redeploy_waiting_runs`, `check_in_flight_runs`,
    /// `env0_redeploy`, `clear_stale_locks`, `check_state_freshness`, `check_standby`,
    /// `plan_failback`.
    pub id: String,
    /// What to do, for people.
    pub text: String,
}

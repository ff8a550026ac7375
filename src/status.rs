//! The `/status` document: what the admin server serves and `kube-failover status`
//! prints. Plain strings and numbers, so that a client of another version can read it.

use serde::{Deserialize, Serialize};

/// The whole `/status` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    /// `observe` or `auto`.
    pub mode: String,
    /// The daemon's identity (as written into records and Events).
    pub identity: String,
    /// Config loaded and first tick done, not shutting down.
    pub ready: bool,
    pub last_tick_unix: Option<f64>,
    pub groups: Vec<GroupStatus>,
}

/// One group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub name: String,
    /// A [`crate::engine::GroupState`] name, e.g. `primary_active`.
    pub state: String,
    /// When the group entered `state` (Unix seconds).
    pub since_unix: f64,
    pub primary_down: bool,
    pub standby_fit: bool,
    /// Which side the record says is active: `primary` or `standby`.
    pub active_cluster: String,
    pub signals: Vec<SignalStatus>,
    pub standby: StandbyStatus,
    pub record: Option<RecordStatus>,
    pub last_decision: DecisionStatus,
    /// Desired replicas found in the standby while the primary is active.
    pub unexpected_standby_replicas: i32,
    /// Both sides want replicas (two agents may run at once).
    #[serde(default)]
    pub dual_active: bool,
    /// Neither side runs the workload (for longer than `promotion_timeout`).
    #[serde(default)]
    pub no_active_side: bool,
    /// The last failed action, if the last attempt failed.
    pub last_action_error: Option<String>,
}

/// One primary signal after hysteresis, with its last probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalStatus {
    pub name: String,
    pub up: bool,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    /// Consecutive answers that proved nothing (credentials, permissions, selection).
    #[serde(default)]
    pub consecutive_unknown: u32,
    pub last_reason: Option<String>,
    pub last_latency_seconds: Option<f64>,
    pub last_detail: String,
}

/// Standby fitness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandbyStatus {
    pub api_reason: String,
    pub workloads_reason: String,
    pub detail: String,
}

/// The failover record as last read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordStatus {
    pub phase: String,
    pub epoch: u64,
    pub reason: String,
    pub promoted_at: Option<String>,
    pub completed_at: Option<String>,
    pub fenced_at: Option<String>,
    pub holder: String,
    /// Primary Deployments active when the promotion started (fenced by name too).
    #[serde(default)]
    pub primary_deployments: Vec<String>,
    #[serde(default)]
    pub failback_at: Option<String>,
    #[serde(default)]
    pub restored_at: Option<String>,
}

/// The last decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionStatus {
    pub at_unix: f64,
    pub reasons: Vec<String>,
    /// Actions taken (auto) or that would have been taken (observe).
    pub actions: Vec<String>,
    /// True in observe mode when a promotion would have started.
    pub would_promote: bool,
}

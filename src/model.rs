//! The vocabulary shared by probes, the decision engine and the actuator: what was
//! observed in one tick, what the engine decided, and why. Plain data, no I/O.

use serde::Serialize;
use std::time::Duration;

/// A bounded reason code for one probe result. Used as a metric label, so the set is
/// closed: never format an error message into one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeReason {
    /// The check passed.
    Ok,
    /// No answer within the probe timeout.
    Timeout,
    /// The host answered but nothing listens: connection refused. The path to the host
    /// works, so this says the server is down, not the watcher's network.
    Refused,
    /// TCP connection reset, unroutable, or the name did not resolve.
    Connect,
    /// TLS handshake or certificate failure.
    Tls,
    /// The server answered with an unexpected HTTP status.
    HttpStatus,
    /// 401: the credentials were rejected.
    Unauthorized,
    /// 403: RBAC forbids the verb.
    Forbidden,
    /// The object (Deployment, namespace) does not exist.
    NotFound,
    /// The Deployment exists but fewer replicas are available/Ready than desired.
    Unready,
    /// The Deployment wants replicas but no Pod exists for it.
    NoPods,
    /// A container of a selected Pod is in CrashLoopBackOff.
    CrashLoop,
    /// A selected Pod cannot be scheduled.
    Unschedulable,
    /// The Deployment is scaled to 0, so the workload is not running.
    ScaledToZero,
    /// The answer could not be decoded.
    Decode,
    /// Any other API error.
    Error,
}

impl ProbeReason {
    /// Every reason, for pre-registering metric label values.
    pub const ALL: [ProbeReason; 16] = [
        ProbeReason::Ok,
        ProbeReason::Timeout,
        ProbeReason::Refused,
        ProbeReason::Connect,
        ProbeReason::Tls,
        ProbeReason::HttpStatus,
        ProbeReason::Unauthorized,
        ProbeReason::Forbidden,
        ProbeReason::NotFound,
        ProbeReason::Unready,
        ProbeReason::NoPods,
        ProbeReason::CrashLoop,
        ProbeReason::Unschedulable,
        ProbeReason::ScaledToZero,
        ProbeReason::Decode,
        ProbeReason::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeReason::Ok => "ok",
            ProbeReason::Timeout => "timeout",
            ProbeReason::Refused => "refused",
            ProbeReason::Connect => "connect",
            ProbeReason::Tls => "tls",
            ProbeReason::HttpStatus => "http_status",
            ProbeReason::Unauthorized => "unauthorized",
            ProbeReason::Forbidden => "forbidden",
            ProbeReason::NotFound => "not_found",
            ProbeReason::Unready => "unready",
            ProbeReason::NoPods => "no_pods",
            ProbeReason::CrashLoop => "crash_loop",
            ProbeReason::Unschedulable => "unschedulable",
            ProbeReason::ScaledToZero => "scaled_to_zero",
            ProbeReason::Decode => "decode",
            ProbeReason::Error => "error",
        }
    }

    /// True when the failure says the watcher could not reach the host at all (as
    /// opposed to the host refusing or the server answering badly). Used for
    /// self-distrust: a refused connection proves the path to the host works.
    pub fn is_unreachable(self) -> bool {
        matches!(
            self,
            ProbeReason::Timeout | ProbeReason::Connect | ProbeReason::Tls
        )
    }
}

/// The result of one probe: pass or fail, why, how long it took, and a short
/// human-readable detail (never a secret; may be empty).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeOutcome {
    pub reason: ProbeReason,
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    pub detail: String,
}

impl ProbeOutcome {
    pub fn ok(latency: Duration) -> Self {
        ProbeOutcome {
            reason: ProbeReason::Ok,
            latency,
            detail: String::new(),
        }
    }

    pub fn fail(reason: ProbeReason, latency: Duration, detail: impl Into<String>) -> Self {
        ProbeOutcome {
            reason,
            latency,
            detail: detail.into(),
        }
    }

    pub fn passed(&self) -> bool {
        self.reason == ProbeReason::Ok
    }
}

/// Which cluster of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The cluster normally running the workload.
    Primary,
    /// The cluster that takes over on promotion.
    Standby,
}

impl Side {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Primary => "primary",
            Side::Standby => "standby",
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One Deployment as seen in a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentView {
    pub name: String,
    /// `spec.replicas` (the scale subresource's desired count).
    pub desired: i32,
    /// Replicas available per the Deployment status.
    pub available: i32,
    /// Pods of this Deployment that are Ready and not terminating.
    pub ready_pods: i32,
}

/// Everything observed about the primary cluster in one tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrimaryObservation {
    /// `/readyz` of the primary API server.
    pub api: ProbeOutcome,
    /// One outcome per workload signal (name as in [`Signal`]), in config order.
    pub workloads: Vec<(String, ProbeOutcome)>,
    /// One outcome per configured HTTP check, in config order.
    pub http: Vec<(String, ProbeOutcome)>,
    /// The selected Deployments in the primary, when they could be listed
    /// (`None` when the API could not be asked). Used for fencing.
    pub deployments: Option<Vec<DeploymentView>>,
}

/// The failover record's phase, as stored in the standby cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordPhase {
    /// The primary is the active side (also: no record yet, or after a failback).
    Primary,
    /// A promotion was decided and is being carried out.
    Promoting,
    /// The standby is active.
    Promoted,
    /// The promotion did not complete within its timeout; it is being retried.
    Failed,
}

impl RecordPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordPhase::Primary => "primary",
            RecordPhase::Promoting => "promoting",
            RecordPhase::Promoted => "promoted",
            RecordPhase::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "primary" => RecordPhase::Primary,
            "promoting" => RecordPhase::Promoting,
            "promoted" => RecordPhase::Promoted,
            "failed" => RecordPhase::Failed,
            _ => return None,
        })
    }

    /// True when the standby side has been (or is being) made active.
    pub fn standby_active(self) -> bool {
        !matches!(self, RecordPhase::Primary)
    }
}

/// The failover record (one per group), read from the standby cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct FailoverRecord {
    pub phase: Option<RecordPhase>,
    /// Increases by one with every promotion.
    pub epoch: u64,
    /// Reason code of the promotion (or failure).
    pub reason: String,
    /// RFC 3339 times, as written.
    pub promoted_at: Option<String>,
    pub completed_at: Option<String>,
    pub fenced_at: Option<String>,
    /// Which daemon wrote the record last.
    pub holder: String,
    /// Seconds since the Unix epoch of the last promotion start, for the cooldown.
    pub promoted_at_unix: Option<i64>,
    /// The object's resourceVersion, for optimistic concurrency; `None` when the
    /// record does not exist yet.
    pub resource_version: Option<String>,
}

impl FailoverRecord {
    /// The effective phase: a missing record means the primary is active.
    pub fn effective_phase(&self) -> RecordPhase {
        self.phase.unwrap_or(RecordPhase::Primary)
    }
}

/// Everything observed about the standby cluster in one tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StandbyObservation {
    /// `/readyz` of the standby API server.
    pub api: ProbeOutcome,
    /// Whether every selected Deployment exists (a selector must match at least one).
    pub workloads: ProbeOutcome,
    /// The selected Deployments, when they could be listed.
    pub deployments: Option<Vec<DeploymentView>>,
    /// The failover record: `Ok(record)` (a default record when none exists yet), or
    /// the reason it could not be read.
    pub record: Result<FailoverRecord, ProbeOutcome>,
}

/// One tick's input to the engine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Observation {
    /// Wall-clock seconds since the Unix epoch when the tick started; compared with the
    /// monotonic clock to detect clock jumps, and with the record for the cooldown.
    pub wall_unix: f64,
    pub primary: PrimaryObservation,
    pub standby: StandbyObservation,
}

/// What the engine asks the actuator to do. Every action is idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Write the record with phase `promoting`, `epoch`, against the observed
    /// resourceVersion. The promotion must not proceed if this write fails.
    RecordPromoting { epoch: u64, reason: String },
    /// Scale every standby workload to its promoted replica count.
    ScaleStandbyUp,
    /// Record phase `promoted` (standby Ready).
    RecordPromoted { epoch: u64 },
    /// Record phase `failed` with a reason (promotion timed out); retrying goes on.
    RecordFailed { epoch: u64, reason: String },
    /// Scale every primary workload to 0.
    FencePrimary,
    /// Record that the primary is fenced (all its workloads at 0).
    RecordFenced { epoch: u64 },
    /// Scale standby workloads back to 0 (unexpected replicas while the primary is active).
    ScaleStandbyDown,
}

impl Action {
    /// Every value [`Action::kind`] can return, for pre-registering metric labels.
    pub const KINDS: [&'static str; 7] = [
        "record_promoting",
        "scale_standby_up",
        "record_promoted",
        "record_failed",
        "fence_primary",
        "record_fenced",
        "scale_standby_down",
    ];

    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::RecordPromoting { .. } => "record_promoting",
            Action::ScaleStandbyUp => "scale_standby_up",
            Action::RecordPromoted { .. } => "record_promoted",
            Action::RecordFailed { .. } => "record_failed",
            Action::FencePrimary => "fence_primary",
            Action::RecordFenced { .. } => "record_fenced",
            Action::ScaleStandbyDown => "scale_standby_down",
        }
    }
}

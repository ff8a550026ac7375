//! The vocabulary shared by probes, the decision engine and the actuator: what was
//! observed in one tick, what the engine decided, and why. Plain data, no I/O.

use serde::Serialize;
use std::time::Duration;

/// A bounded reason code for one probe result. Used as a metric label, so the set is
/// closed: never format an error message into one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
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
    /// 429: the API server's priority and fairness throttled the watcher's request. It
    /// says the watcher asks too much, not that the workload is down.
    Throttled,
}

impl ProbeReason {
    /// Every reason, for pre-registering metric label values.
    pub const ALL: [ProbeReason; 17] = [
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
        ProbeReason::Throttled,
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
            ProbeReason::Throttled => "throttled",
        }
    }

    /// What this answer proves about the primary's workload: that it serves
    /// ([`Evidence::Pass`]), that it does not ([`Evidence::Down`]), or nothing
    /// ([`Evidence::Unknown`]: the watcher's credentials, permissions, certificates or
    /// selection failed, or the answer could not be read). Unknown never counts toward a
    /// promotion (safety invariant 1).
    pub fn evidence(self) -> Evidence {
        match self {
            ProbeReason::Ok => Evidence::Pass,
            ProbeReason::Timeout
            | ProbeReason::Refused
            | ProbeReason::Connect
            | ProbeReason::HttpStatus
            | ProbeReason::Unready
            | ProbeReason::NoPods
            | ProbeReason::CrashLoop
            | ProbeReason::Unschedulable
            | ProbeReason::ScaledToZero => Evidence::Down,
            ProbeReason::Tls
            | ProbeReason::Unauthorized
            | ProbeReason::Forbidden
            | ProbeReason::NotFound
            | ProbeReason::Decode
            | ProbeReason::Error
            | ProbeReason::Throttled => Evidence::Unknown,
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

/// What one probe answer proves about the primary's workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// The check passed.
    Pass,
    /// The workload is not serving (down evidence).
    Down,
    /// The watcher cannot tell.
    Unknown,
}

/// The result of one probe: pass or fail, why, how long it took, and a short
/// human-readable detail (never a secret; may be empty).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ProbeOutcome {
    /// Pass, or why not.
    pub reason: ProbeReason,
    #[serde(with = "humantime_serde")]
    /// How long the probe took, failures included.
    pub latency: Duration,
    /// A short, secret-free detail naming the object (may be empty).
    pub detail: String,
}

impl ProbeOutcome {
    /// A passed probe.
    pub fn ok(latency: Duration) -> Self {
        ProbeOutcome {
            reason: ProbeReason::Ok,
            latency,
            detail: String::new(),
        }
    }

    /// A failed probe with its reason and detail.
    pub fn fail(reason: ProbeReason, latency: Duration, detail: impl Into<String>) -> Self {
        ProbeOutcome {
            reason,
            latency,
            detail: detail.into(),
        }
    }

    /// True when the probe passed.
    pub fn passed(&self) -> bool {
        self.reason == ProbeReason::Ok
    }
}

/// Which cluster of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DeploymentView {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`, to tell a re-created Deployment of the same name.
    pub uid: Option<String>,
    /// `spec.replicas` (the scale subresource's desired count).
    pub desired: i32,
    /// Replicas available per the Deployment status.
    pub available: i32,
    /// Pods of this Deployment that are Ready and not terminating.
    pub ready_pods: i32,
    /// The promotion epoch kube-failover wrote on it when it scaled it up
    /// (annotation [`EPOCH_ANNOTATION`]); `None` when absent or unreadable.
    pub epoch: Option<u64>,
}

/// Annotation written on every standby Deployment a promotion scales up: the epoch of
/// that promotion. A failover record re-created after a loss starts above it, so epochs
/// never repeat, and a standby found active with it is a promotion, not stray replicas.
pub const EPOCH_ANNOTATION: &str = "kube-failover/epoch";

/// A Deployment as named in the failover record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct DeploymentRef {
    /// `metadata.name`.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// `metadata.uid`, when known.
    pub uid: Option<String>,
}

/// Which signal of the primary an outcome belongs to. Carried with every outcome, so
/// outcomes, hysteresis, metrics and `/status` are matched by identity, never by
/// position.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignalId {
    /// `/readyz` of the primary's API server.
    Api,
    /// One configured workload, by its Deployment name or label selector.
    Workload(String),
    /// One configured HTTP check, by its name.
    Http(String),
}

impl std::fmt::Display for SignalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignalId::Api => f.write_str("api"),
            SignalId::Workload(w) => write!(f, "workload:{w}"),
            SignalId::Http(h) => write!(f, "http:{h}"),
        }
    }
}

impl std::str::FromStr for SignalId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None if s == "api" => Ok(SignalId::Api),
            Some(("workload", w)) if !w.is_empty() => Ok(SignalId::Workload(w.to_string())),
            Some(("http", h)) if !h.is_empty() => Ok(SignalId::Http(h.to_string())),
            _ => Err(format!("{s:?} is not a signal (api, workload:…, http:…)")),
        }
    }
}

impl Serialize for SignalId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SignalId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Everything observed about the primary cluster in one tick.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct PrimaryObservation {
    /// `/readyz` of the primary API server.
    pub api: ProbeOutcome,
    /// One outcome per workload signal, in config order.
    pub workloads: Vec<(SignalId, ProbeOutcome)>,
    /// One outcome per configured HTTP check, in config order.
    pub http: Vec<(SignalId, ProbeOutcome)>,
    /// The selected Deployments in the primary, and those named in the record, when
    /// they could be listed (`None` when the API could not be asked). Used for fencing.
    pub deployments: Option<Vec<DeploymentView>>,
    /// Deployments named in the record that the primary's API says do not exist
    /// (404 by name): they run nothing, so they count as fenced.
    pub absent: Vec<String>,
    /// A watch feeding the workload signals has not completed its first list since the
    /// daemon started, and nothing on the watcher's side (credentials, RBAC,
    /// certificates) failed it: its signals are unknown because they were not read yet,
    /// not because the watcher is blind.
    #[serde(default)]
    pub watches_starting: bool,
}

impl PrimaryObservation {
    /// Every signal's outcome with its id: the API first, then workloads and checks.
    pub fn signals(&self) -> impl Iterator<Item = (SignalId, &ProbeOutcome)> {
        std::iter::once((SignalId::Api, &self.api)).chain(
            self.workloads
                .iter()
                .chain(&self.http)
                .map(|(id, o)| (id.clone(), o)),
        )
    }

    /// The outcome of one signal, if it was observed.
    pub fn outcome(&self, id: &SignalId) -> Option<&ProbeOutcome> {
        match id {
            SignalId::Api => Some(&self.api),
            _ => self
                .workloads
                .iter()
                .chain(&self.http)
                .find(|(i, _)| i == id)
                .map(|(_, o)| o),
        }
    }
}

/// The failover record's phase, as stored in the standby cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
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
    /// The record value.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordPhase::Primary => "primary",
            RecordPhase::Promoting => "promoting",
            RecordPhase::Promoted => "promoted",
            RecordPhase::Failed => "failed",
        }
    }

    /// Reads a record value; `None` for anything else.
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(default)]
pub struct FailoverRecord {
    /// `None` when the record does not say (then the primary is active).
    pub phase: Option<RecordPhase>,
    /// Increases by one with every promotion.
    pub epoch: u64,
    /// Reason code of the promotion (or failure).
    pub reason: String,
    /// RFC 3339 times, as written.
    pub promoted_at: Option<String>,
    /// RFC 3339 time the standby was Ready.
    pub completed_at: Option<String>,
    /// RFC 3339 time every recorded primary Deployment was seen at 0, or every
    /// expected guard said it stopped the primary's agents.
    pub fenced_at: Option<String>,
    /// Which of the two proved it (set with `fenced_at`).
    pub fenced_by: Option<FencedBy>,
    /// Which daemon wrote the record last.
    pub holder: String,
    /// Seconds since the Unix epoch of the last promotion start, for the cooldown.
    pub promoted_at_unix: Option<i64>,
    /// The primary Deployments that were active when the promotion started: fenced by
    /// name as well as by selector, and all must be seen at 0 before `fenced_at`.
    pub primary_deployments: Vec<DeploymentRef>,
    /// RFC 3339 time the record was first seen back in phase `primary` after a
    /// promotion (a failback); the cooldown runs from it too.
    pub failback_at: Option<String>,
    /// The same as Unix seconds.
    pub failback_at_unix: Option<i64>,
    /// RFC 3339 time (milliseconds) a failback by hand took its first step: the standby
    /// going down (written by `kube-failover failback`; kept when it resumes).
    pub failback_started_at: Option<String>,
    /// RFC 3339 time (milliseconds) that failback completed: the primary scaled up (and
    /// Ready, with `--wait`) and the group handed back to the daemons.
    pub failback_completed_at: Option<String>,
    /// RFC 3339 time the record was written back after it was found missing.
    pub restored_at: Option<String>,
    /// Who paused the group (the operator's user name); `None` when it is not paused.
    /// While a pause holds, every daemon instance probes and reports but acts on nothing.
    pub paused_by: Option<String>,
    /// Unix seconds at which the pause ends by itself; `None`: until resumed.
    pub paused_until_unix: Option<i64>,
    /// Why the group was paused (free text from the operator; may be empty).
    pub pause_reason: String,
    /// The step of a failback in progress (written by `kube-failover failback`); while
    /// it is set the daemon neither fences, corrects nor promotes.
    pub failback_step: Option<FailbackStep>,
    /// The last transitions of the record, oldest first, at most [`HISTORY_LEN`].
    pub history: Vec<Transition>,
    /// How old the standby's copy of the Terraform state Secrets was when the promotion
    /// started: seconds since the mirror last found the standby in sync with the
    /// primary (`[groups.state.mirror]`). `None`: no mirror, or it never synced.
    pub mirror_age_seconds: Option<u64>,
    /// The object's resourceVersion, for optimistic concurrency; `None` when the
    /// record does not exist yet.
    pub resource_version: Option<String>,
}

/// How many transitions the record keeps in its history.
pub const HISTORY_LEN: usize = 20;

/// One transition of the failover record, as kept in its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Transition {
    /// RFC 3339 time of the write.
    pub at: String,
    /// The phase written.
    pub phase: RecordPhase,
    /// The epoch written.
    pub epoch: u64,
    /// Who wrote it: a daemon's identity or an operator's user name.
    pub by: String,
    /// What the record says besides its phase: `fenced`, `paused`, `failback:<step>`,
    /// `restored`, space-separated (may be empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub what: String,
    /// The record's reason code (may be empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// A step of an operator's failback, recorded so an interrupted failback resumes where
/// it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailbackStep {
    /// The standby is being scaled to 0 and its Pods waited for (the record still says
    /// the standby is active).
    StandbyDown,
    /// The record says `primary`; the primary is being scaled up and waited for.
    PrimaryUp,
}

impl FailbackStep {
    /// The record value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailbackStep::StandbyDown => "standby_down",
            FailbackStep::PrimaryUp => "primary_up",
        }
    }

    /// Reads a record value; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        [FailbackStep::StandbyDown, FailbackStep::PrimaryUp]
            .into_iter()
            .find(|f| f.as_str() == s)
    }
}

impl FailoverRecord {
    /// The effective phase: a missing record means the primary is active.
    pub fn effective_phase(&self) -> RecordPhase {
        self.phase.unwrap_or(RecordPhase::Primary)
    }

    /// True when the record exists in the cluster (it was read with a
    /// resourceVersion); false for the default record of a missing ConfigMap.
    pub fn exists(&self) -> bool {
        self.resource_version.is_some()
    }

    /// True when an operator's pause holds at `wall_unix` (set, and not expired).
    pub fn paused_at(&self, wall_unix: f64) -> bool {
        self.paused_by.is_some()
            && self
                .paused_until_unix
                .is_none_or(|until| wall_unix < until as f64)
    }

    /// Why the daemon must not act on this record at `wall_unix`: an operator's pause
    /// or a failback in progress; `None` when it may.
    pub fn hold_at(&self, wall_unix: f64) -> Option<ReasonCode> {
        if self.failback_step.is_some() {
            Some(ReasonCode::FailbackInProgress)
        } else if self.paused_at(wall_unix) {
            Some(ReasonCode::Paused)
        } else {
            None
        }
    }

    /// When the cooldown starts: the later of the last promotion and the last failback.
    pub fn cooldown_from_unix(&self) -> Option<i64> {
        match (self.promoted_at_unix, self.failback_at_unix) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Everything observed about the standby cluster in one tick.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
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
    /// The configured state checks (`[groups.state]`, `[groups.drift]`), in config order.
    #[serde(default)]
    pub state_checks: Vec<crate::checks::StateCheck>,
    /// The heartbeats of the guards beside the agents (`[groups.guards]`); `None` when
    /// the group expects no guard.
    #[serde(default)]
    pub guards: Option<GuardsObservation>,
}

/// The guards' heartbeats as read from the standby, and how many the config expects.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct GuardsObservation {
    /// Guards expected beside the primary's agents.
    pub expected_primary: u32,
    /// Guards expected beside the standby's agents.
    pub expected_standby: u32,
    /// The heartbeats of the group, or why they could not be read.
    pub beats: Result<Vec<GuardBeat>, ProbeOutcome>,
}

/// One guard's heartbeat Lease, as the daemon read it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct GuardBeat {
    /// The guard's identity (its Lease's holder).
    pub identity: String,
    /// The side whose agent it runs beside.
    pub side: Side,
    /// The agent runs.
    pub running: bool,
    /// The highest epoch at which the guard saw the standby active.
    pub standby_epoch: Option<u64>,
    /// The guard's reason code for its state.
    pub reason: String,
    /// Seconds since the guard last wrote it, by the daemon's clock.
    pub age_seconds: f64,
    /// Seconds after a write for which it counts (its Lease duration).
    pub ttl_seconds: f64,
    /// The guard's `isolation_ttl` in seconds when its `on_isolation` is `stop` (it
    /// stops its agent once it could not read the record for that long and too few
    /// daemons vouch for the primary); `None` with `keep`.
    #[serde(default)]
    pub isolation_ttl_seconds: Option<f64>,
    /// What the guard may take, once `isolation_ttl` has passed, until its agent is
    /// gone: one interval, its bounded calls and `stop_grace` (0 when not said).
    #[serde(default)]
    pub stop_within_seconds: f64,
    /// How the guard keeps its agent stopped: as its parent process (`wrapper`), or as
    /// a sidecar whose verdict the agent's liveness probe asks (`sidecar`).
    #[serde(default)]
    pub form: GuardForm,
}

/// How a guard runs beside its agent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardForm {
    /// The agent's parent process: a stop is a stop (SIGTERM, then SIGKILL), and the
    /// agent stays stopped.
    #[default]
    Wrapper,
    /// A sidecar the agent's liveness probe asks: a refusal makes kubelet kill the
    /// agent's container, which it then restarts (with back-off), so the agent runs
    /// again briefly after each restart. Its heartbeat never proves a stop.
    Sidecar,
}

impl GuardForm {
    /// The config, annotation and label value.
    pub fn as_str(self) -> &'static str {
        match self {
            GuardForm::Wrapper => "wrapper",
            GuardForm::Sidecar => "sidecar",
        }
    }
}

impl GuardBeat {
    /// Written recently enough to count.
    pub fn fresh(&self) -> bool {
        self.age_seconds <= self.ttl_seconds
    }

    /// This heartbeat proves the agent beside it stopped for the promotion at `epoch`:
    /// fresh, not running, at that epoch or later, and written by a wrapper (a
    /// sidecar's refusal is no stop: kubelet restarts the agent's container).
    pub fn proves_stop_at(&self, epoch: u64) -> bool {
        self.form == GuardForm::Wrapper
            && self.fresh()
            && !self.running
            && self.standby_epoch.is_some_and(|e| e >= epoch)
    }

    /// For a guard with `on_isolation = "stop"`: how long after the `promoting` record
    /// its agent is surely stopped, by the daemon's clock. A guard that reads the record
    /// after it was written stops its agent on it; one that cannot read it last did
    /// before it was written, so its isolation clock ran out by then. That is
    /// `isolation_ttl + stop_within`, plus a margin for the two hosts' clock rates of
    /// 10 % of `isolation_ttl`, at least 1 s. `None` with `on_isolation = "keep"`.
    pub fn isolation_bound(&self) -> Option<std::time::Duration> {
        let ttl = self
            .isolation_ttl_seconds
            .filter(|t| t.is_finite() && *t > 0.0)?;
        let within = if self.stop_within_seconds.is_finite() {
            self.stop_within_seconds.max(0.0)
        } else {
            0.0
        };
        let seconds = ttl + within + (ttl / 10.0).max(1.0);
        // At most a day: a garbled annotation must not hold a promotion for ever.
        Some(std::time::Duration::from_secs_f64(seconds.min(86_400.0)))
    }
}

/// The guards of one side, counted for `/status`, metrics and alerts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct GuardTally {
    /// Fresh heartbeats saying the agent runs.
    pub running: u32,
    /// Fresh heartbeats saying the agent is stopped.
    pub stopped: u32,
    /// Heartbeats older than their duration: their guard is gone or cut off.
    pub stale: u32,
    /// Expected guards without a fresh heartbeat, counted only for the side the record
    /// says is active (its agents run; the other side's are scaled to 0, guards and all).
    pub missing: u32,
    /// Fresh heartbeats saying `stopped` beside the side the record says is active: an
    /// agent that should run does not.
    pub stopped_while_active: u32,
}

impl GuardsObservation {
    /// The guards of `side`, with `active` the side the record says is active.
    pub fn tally(&self, side: Side, active: Side) -> GuardTally {
        let mut t = GuardTally::default();
        for beat in self.beats.iter().flatten().filter(|b| b.side == side) {
            match (beat.fresh(), beat.running) {
                (false, _) => t.stale += 1,
                (true, true) => t.running += 1,
                (true, false) => t.stopped += 1,
            }
        }
        if side == active {
            let expected = match side {
                Side::Primary => self.expected_primary,
                Side::Standby => self.expected_standby,
            };
            t.missing = expected.saturating_sub(t.running + t.stopped);
            t.stopped_while_active = t.stopped;
        }
        t
    }

    /// The fresh heartbeats of `side`'s guards.
    pub fn fresh(&self, side: Side) -> impl Iterator<Item = &GuardBeat> {
        self.beats
            .iter()
            .flatten()
            .filter(move |b| b.side == side && b.fresh())
    }

    /// The primary's agents are proven stopped for the promotion at `epoch`: the
    /// heartbeats could be read, at least `expected_primary` (and at least one) fresh
    /// primary wrapper guards say `stopped` at that epoch or later, and no fresh one
    /// says `running` or is a sidecar (an agent beside a sidecar guard is restarted by
    /// kubelet after each kill, so it is never proven stopped). A stale heartbeat
    /// proves nothing either way.
    pub fn primary_stopped_at(&self, epoch: u64) -> bool {
        if self.expected_primary == 0 || self.beats.is_err() {
            return false;
        }
        let mut stopped = 0u32;
        for beat in self.fresh(Side::Primary) {
            if beat.running || beat.form == GuardForm::Sidecar {
                return false;
            }
            if beat.proves_stop_at(epoch) {
                stopped += 1;
            }
        }
        stopped >= self.expected_primary
    }
}

impl StandbyObservation {
    /// The highest promotion epoch found on the standby's Deployments (0 when none): a
    /// new promotion goes above it, so epochs never repeat after a lost record.
    pub fn annotated_epoch(&self) -> u64 {
        self.deployments
            .iter()
            .flatten()
            .filter_map(|d| d.epoch)
            .max()
            .unwrap_or(0)
    }

    /// The epoch of a promotion in force, as the standby's Deployments that want
    /// replicas carry it in their annotation (`None` when none does).
    pub fn active_epoch(&self) -> Option<u64> {
        self.deployments
            .iter()
            .flatten()
            .filter(|d| d.desired > 0)
            .filter_map(|d| d.epoch)
            .max()
    }
}

/// One tick's input to the engine.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Observation {
    /// Wall-clock seconds since the Unix epoch when the tick started; compared with the
    /// monotonic clock to detect clock jumps, and with the record for the cooldown.
    pub wall_unix: f64,
    /// The primary cluster.
    pub primary: PrimaryObservation,
    /// The standby cluster.
    pub standby: StandbyObservation,
    /// The verdicts the other daemon instances published for this group (this
    /// instance's own verdict is the engine's). Empty for a single daemon.
    pub observers: Vec<ObserverReport>,
}

/// What one daemon instance says about the primary, as published in its observer Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every signal of the primary is up.
    Up,
    /// Some signals are failing, not enough to call the primary down.
    Suspect,
    /// The primary is down by the signal quorum (after hysteresis).
    Down,
    /// This instance cannot tell (blind, frozen, or still starting).
    Unknown,
}

impl Verdict {
    /// Every verdict, for pre-registering metric label values.
    pub const ALL: [Verdict; 4] = [
        Verdict::Up,
        Verdict::Suspect,
        Verdict::Down,
        Verdict::Unknown,
    ];

    /// The label and annotation value.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Up => "up",
            Verdict::Suspect => "suspect",
            Verdict::Down => "down",
            Verdict::Unknown => "unknown",
        }
    }

    /// Reads an annotation value; anything else is `Unknown` (never down).
    pub fn parse(s: &str) -> Self {
        Verdict::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .unwrap_or(Verdict::Unknown)
    }
}

/// Another daemon instance's verdict on the primary, read from its observer Lease.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ObserverReport {
    /// The instance's `daemon.identity`.
    pub identity: String,
    /// What it says.
    pub verdict: Verdict,
    /// How long ago it renewed its Lease (its verdict's age); `None` when unknown,
    /// which is never fresh.
    #[serde(with = "humantime_serde")]
    pub age: Option<Duration>,
    /// The signals it sees down (e.g. `api`), for `/status`.
    pub down_signals: Vec<String>,
    /// Since when (Unix seconds) it has said `down`, when it does.
    pub down_since_unix: Option<f64>,
}

/// What the engine asks the actuator to do. Every action is idempotent and
/// self-contained: it carries the epoch the decision was made on, and the actuator
/// re-reads the record before it scales, going ahead only if phase and epoch still match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Write the record with phase `promoting`, `epoch`, against the observed
    /// resourceVersion. The promotion must not proceed if this write fails.
    RecordPromoting {
        /// The new epoch: one above every epoch seen.
        epoch: u64,
        /// Why the promotion starts.
        reason: ReasonCode,
        /// The primary Deployments active at the last healthy observation.
        primary_deployments: Vec<DeploymentRef>,
    },
    /// Scale every standby workload to its promoted replica count (and mark it with
    /// the epoch), if the record still says the standby is active at `epoch`.
    ScaleStandbyUp {
        /// The promotion's epoch.
        epoch: u64,
    },
    /// Record phase `promoted` (standby Ready).
    RecordPromoted {
        /// The promotion's epoch.
        epoch: u64,
    },
    /// Record phase `failed` with a reason (promotion timed out); retrying goes on.
    RecordFailed {
        /// The promotion's epoch.
        epoch: u64,
        /// Why it failed.
        reason: ReasonCode,
    },
    /// Scale every primary workload to 0: those the selectors match and those named,
    /// if the record still says the standby is active at `epoch`.
    FencePrimary {
        /// The promotion's epoch.
        epoch: u64,
        /// The primary Deployments named in the record.
        names: Vec<String>,
    },
    /// Record that the primary is fenced: every recorded Deployment seen at 0, or every
    /// expected guard beside the primary's agents stopped at this epoch.
    RecordFenced {
        /// The promotion's epoch.
        epoch: u64,
        /// What proved it.
        by: FencedBy,
    },
    /// Scale standby workloads back to 0 (unexpected replicas while the primary is
    /// active), if the record still says the primary is active at `epoch`.
    ScaleStandbyDown {
        /// The record's epoch (phase `primary`).
        epoch: u64,
    },
    /// Write back a record that disappeared, as it was last seen (same phase and
    /// epoch), with `restored_at` set. Nothing is scaled until this succeeds.
    RestoreRecord {
        /// The record as last seen.
        record: Box<FailoverRecord>,
    },
    /// Stamp `failback_at` on a record that is back in phase `primary` at `epoch`.
    RecordFailback {
        /// The record's epoch.
        epoch: u64,
    },
    /// Tell people through a Kubernetes Event on the record (a condition began).
    Announce {
        /// The condition.
        reason: ReasonCode,
    },
    /// A promotion starts while state checks of the standby fail (their gate only
    /// warns): a Warning Event on the record lists each, right after the `promoting`
    /// record is written.
    WarnStateChecks {
        /// The promotion's epoch.
        epoch: u64,
    },
    /// Right after the `promoted` record (`[groups.state] clear_stale_locks`): delete
    /// each Terraform lock Lease of the standby namespace taken before the promotion
    /// started (no run of the standby can hold it), on condition that it is still the
    /// Lease listed. Runs only if the `promoted` record of `epoch` was written.
    ClearStaleLocks {
        /// The promotion's epoch.
        epoch: u64,
    },
    /// Right after the `promoted` record (and the stale locks): a
    /// `KubeFailoverPromotionComplete` Event on the record saying how long the promotion
    /// took, the stale locks found and what people should do (a Warning when locks are
    /// left). Runs only if the `promoted` record of `epoch` was written.
    AnnouncePromoted {
        /// The promotion's epoch.
        epoch: u64,
    },
}

impl Action {
    /// Every value [`Action::kind`] can return, for pre-registering metric labels.
    pub const KINDS: [&'static str; 13] = [
        "record_promoting",
        "scale_standby_up",
        "record_promoted",
        "record_failed",
        "fence_primary",
        "record_fenced",
        "scale_standby_down",
        "restore_record",
        "record_failback",
        "announce",
        "warn_state_checks",
        "clear_stale_locks",
        "announce_promoted",
    ];

    /// True when this action is not carried out: it follows the `promoted` record of
    /// `failed`, whose write failed earlier in the same decision.
    pub fn held_by_failed_promoted(&self, failed: Option<u64>) -> bool {
        failed.is_some() && self.follows_promoted() == failed
    }

    /// The kinds that only write Kubernetes Events, best effort: a failed Event is
    /// logged, never a failed action.
    pub const EVENT_KINDS: [&'static str; 3] =
        ["announce", "warn_state_checks", "announce_promoted"];

    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::RecordPromoting { .. } => "record_promoting",
            Action::ScaleStandbyUp { .. } => "scale_standby_up",
            Action::RecordPromoted { .. } => "record_promoted",
            Action::RecordFailed { .. } => "record_failed",
            Action::FencePrimary { .. } => "fence_primary",
            Action::RecordFenced { .. } => "record_fenced",
            Action::ScaleStandbyDown { .. } => "scale_standby_down",
            Action::RestoreRecord { .. } => "restore_record",
            Action::RecordFailback { .. } => "record_failback",
            Action::Announce { .. } => "announce",
            Action::WarnStateChecks { .. } => "warn_state_checks",
            Action::ClearStaleLocks { .. } => "clear_stale_locks",
            Action::AnnouncePromoted { .. } => "announce_promoted",
        }
    }

    /// The epoch of the `promoted` record this action follows: it runs only if that
    /// record was written in the same decision.
    pub fn follows_promoted(&self) -> Option<u64> {
        match self {
            Action::ClearStaleLocks { epoch } | Action::AnnouncePromoted { epoch } => Some(*epoch),
            _ => None,
        }
    }

    /// True for the actions that write the failover record.
    pub fn writes_record(&self) -> bool {
        matches!(
            self,
            Action::RecordPromoting { .. }
                | Action::RecordPromoted { .. }
                | Action::RecordFailed { .. }
                | Action::RecordFenced { .. }
                | Action::RestoreRecord { .. }
                | Action::RecordFailback { .. }
        )
    }

    /// True for the actions that scale Deployments.
    pub fn scales(&self) -> bool {
        matches!(
            self,
            Action::ScaleStandbyUp { .. }
                | Action::FencePrimary { .. }
                | Action::ScaleStandbyDown { .. }
        )
    }
}

/// What proved the old primary fenced (the record's `fenced_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FencedBy {
    /// Its API server showed every recorded Deployment at 0.
    Scale,
    /// Its guards said they stopped the agents, while its API may be unreachable.
    Guard,
}

impl FencedBy {
    /// The record and label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FencedBy::Scale => "scale",
            FencedBy::Guard => "guard",
        }
    }

    /// The value from its record text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "scale" => Some(FencedBy::Scale),
            "guard" => Some(FencedBy::Guard),
            _ => None,
        }
    }
}

/// Named state of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupState {
    /// Startup grace, or the primary has never been seen healthy: no promotion.
    Starting,
    /// The primary is up and active.
    PrimaryActive,
    /// Some of the primary's signals are failing, not (yet) enough to call it down.
    PrimarySuspect,
    /// The watcher cannot observe the primary (its credentials, permissions or
    /// certificates are rejected, or the selection matches nothing) for
    /// `failure_threshold` ticks: it is blind and cannot protect anyone. No promotion.
    PrimaryUnobservable,
    /// The primary is down; in auto mode a promotion starts now, in observe mode this is
    /// where the daemon says it would promote.
    PrimaryDown,
    /// The primary is down but promotion is not allowed (standby unfit, cooldown).
    Blocked,
    /// The watcher distrusts its own view (stall, clock jump, everything unreachable).
    Frozen,
    /// A promotion is recorded and being carried out.
    Promoting,
    /// The standby is active.
    Promoted,
    /// The promotion did not complete in time; it is being retried.
    Failed,
    /// An operator paused the group, or a failback is in progress: probes, metrics and
    /// dual-active detection go on, no action is taken.
    Paused,
}

impl GroupState {
    /// Every state, for pre-registering metric label values.
    pub const ALL: [GroupState; 11] = [
        GroupState::Starting,
        GroupState::PrimaryActive,
        GroupState::PrimarySuspect,
        GroupState::PrimaryUnobservable,
        GroupState::PrimaryDown,
        GroupState::Blocked,
        GroupState::Frozen,
        GroupState::Promoting,
        GroupState::Promoted,
        GroupState::Failed,
        GroupState::Paused,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Starting => "starting",
            GroupState::PrimaryActive => "primary_active",
            GroupState::PrimarySuspect => "primary_suspect",
            GroupState::PrimaryUnobservable => "primary_unobservable",
            GroupState::PrimaryDown => "primary_down",
            GroupState::Blocked => "blocked",
            GroupState::Frozen => "frozen",
            GroupState::Promoting => "promoting",
            GroupState::Promoted => "promoted",
            GroupState::Failed => "failed",
            GroupState::Paused => "paused",
        }
    }
}

macro_rules! reason_codes {
    ($($(#[$doc:meta])* $name:ident => $text:literal,)*) => {
        /// Why the engine decided what it did. Bounded: these are log fields, metric
        /// labels and `/status` entries.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum ReasonCode {
            $($(#[$doc])* $name,)*
        }

        impl ReasonCode {
            /// Every reason code.
            pub const ALL: &'static [ReasonCode] = &[$(ReasonCode::$name,)*];

            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ReasonCode::$name => $text,)*
                }
            }
        }
    };
}

reason_codes! {
    /// Every primary signal is up.
    PrimaryHealthy => "primary_healthy",
    /// Some primary signals are down or failing, fewer than the quorum.
    SignalsFailing => "signals_failing",
    /// At least `quorum` primary signals are down.
    PrimaryDownQuorum => "primary_down_quorum",
    /// Within startup grace.
    StartupGrace => "startup_grace",
    /// Within startup grace, the watches feeding the primary's workload signals have not
    /// completed their first list yet: not judged yet, neither healthy nor blind.
    WatchesStarting => "watches_starting",
    /// The primary has not been seen healthy since the daemon started: nothing to fail
    /// over from yet (a wrong namespace or selector must not promote).
    PrimaryNeverHealthy => "primary_never_healthy",
    /// The primary rejects the watcher's credentials (401): unknown, not down.
    PrimaryCredentialsRejected => "primary_credentials_rejected",
    /// The primary forbids the watcher what it needs (403): unknown, not down.
    PrimaryForbidden => "primary_forbidden",
    /// TLS with the primary failed (certificate rejected): unknown, not down.
    PrimaryTlsRejected => "primary_tls_rejected",
    /// The primary's API answers but the selection matches nothing (renamed or
    /// relabelled Deployment, wrong namespace): unknown, not down.
    PrimaryWorkloadMissing => "primary_workload_missing",
    /// The primary's answer could not be decoded: unknown, not down.
    PrimaryAnswerUndecodable => "primary_answer_undecodable",
    /// The primary's API server throttles the watcher (429): unknown, not down.
    PrimaryThrottled => "primary_throttled",
    /// Another error that says nothing about the primary's workload.
    PrimaryError => "primary_error",
    /// The standby's API server does not answer.
    StandbyApiDown => "standby_api_down",
    /// A selected Deployment is missing in the standby.
    StandbyWorkloadMissing => "standby_workload_missing",
    /// The standby rejects the watcher's credentials (401).
    StandbyCredentialsRejected => "standby_credentials_rejected",
    /// The standby forbids the watcher what it needs (403).
    StandbyForbidden => "standby_forbidden",
    /// TLS with the standby failed (certificate rejected).
    StandbyTlsRejected => "standby_tls_rejected",
    /// The failover record could not be read.
    RecordUnreadable => "record_unreadable",
    /// The failover record disappeared after it was seen: it is written back before
    /// anything is scaled; never read as a failback.
    RecordLost => "record_lost",
    /// The failover record was written with an epoch below one seen before (created
    /// again while it was missing, or put back from an old copy): the last copy is
    /// written over it, keeping its pause, before anything is scaled.
    RecordRegressed => "record_regressed",
    /// A promotion (or failback) happened less than `cooldown` ago.
    Cooldown => "cooldown",
    /// Ticks arrived more than twice the interval apart.
    LoopStalled => "loop_stalled",
    /// Wall clock and monotonic clock disagree.
    ClockJump => "clock_jump",
    /// Neither cluster was reachable in the same tick: the watcher's own network is the
    /// likelier culprit.
    AllClustersUnreachable => "all_clusters_unreachable",
    /// Frozen until `freeze_for` has passed since the last distrust.
    FreezeHold => "freeze_hold",
    /// Observe mode: a promotion would start now.
    WouldPromote => "would_promote",
    /// A promotion starts now.
    PromotionStarted => "promotion_started",
    /// Waiting for the standby's workloads to become Ready.
    AwaitingStandbyReady => "awaiting_standby_ready",
    /// The standby's workloads are Ready.
    StandbyReady => "standby_ready",
    /// The promotion did not finish within `promotion_timeout`.
    PromotionTimeout => "promotion_timeout",
    /// A scaling action failed; it is retried after a backoff.
    RetryBackoff => "retry_backoff",
    /// The old primary still has replicas: fencing.
    FencingPrimary => "fencing_primary",
    /// The old primary's workloads are at 0.
    PrimaryFenced => "primary_fenced",
    /// Every expected guard beside the old primary's agents says it stopped them at
    /// this promotion's epoch: fenced without the primary's API (scaled to 0 when it
    /// answers again).
    PrimaryStoppedByGuards => "primary_stopped_by_guards",
    /// The old primary cannot be reached, so it cannot be fenced yet.
    PrimaryUnreachable => "primary_unreachable",
    /// The standby's scale-up waits for the guards beside the primary's agents that
    /// have `on_isolation = "stop"`: until each says it stopped at this epoch, or its
    /// isolation bound (`isolation_ttl` + margin) has passed since the `promoting`
    /// record, so that an isolated primary's agent is gone before the standby's starts.
    WaitingForGuardStop => "waiting_for_guard_stop",
    /// Replicas appeared in the standby while the primary is active.
    StandbyUnexpectedReplicas => "standby_unexpected_replicas",
    /// Both sides want replicas: two agents may run at once.
    DualActive => "dual_active",
    /// Neither side is running the workload (for longer than `promotion_timeout`).
    NoActiveSide => "no_active_side",
    /// The record says the standby is active (restart, or another daemon did it).
    ResumedFromRecord => "resumed_from_record",
    /// The record is back in phase `primary` after a promotion: a failback.
    FailbackSeen => "failback_seen",
    /// Fewer fresh observers (this instance included) than `observers.quorum`: no
    /// promotion, whatever this instance sees.
    ObserverQuorumUnreachable => "observer_quorum_unreachable",
    /// Enough fresh observers, but fewer than `observers.quorum` of them say `down`.
    ObserverQuorumNotMet => "observer_quorum_not_met",
    /// An operator paused the group (`kube-failover pause`): nothing is acted on until
    /// it is resumed or the pause expires.
    Paused => "paused",
    /// An operator's failback is in progress (the record's `failback_step`): the daemon
    /// neither fences, corrects nor promotes until it completes.
    FailbackInProgress => "failback_in_progress",
    /// An operator started the promotion (`kube-failover promote`).
    OperatorPromotion => "operator_promotion",
    /// A remote state backend does not answer as expected from the daemon's host.
    StandbyStateBackendUnreachable => "standby_state_backend_unreachable",
    /// The state PersistentVolumeClaim does not exist in the standby namespace.
    StandbyStateVolumeMissing => "standby_state_volume_missing",
    /// The state PersistentVolumeClaim exists but is not `Bound`.
    StandbyStateVolumeUnbound => "standby_state_volume_unbound",
    /// A replication timestamp is older than its `max_age` (or absent).
    StandbyStateStale => "standby_state_stale",
    /// The standby's Deployments differ from their primary twins.
    StandbyAgentDrift => "standby_agent_drift",
    /// A state check could not be answered (forbidden, its kind not installed, no
    /// established watch): the standby cannot be shown fit.
    StandbyStateUnanswerable => "standby_state_unanswerable",
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}

display_as_str!(ProbeReason, RecordPhase, GroupState, Verdict, FailbackStep);

//! The `/status` document: what the admin server serves and `kube-failover status`
//! prints. Typed with the enums of the core crate; every enum value is wrapped in
//! [`Named`], so a client of another version reads a name it does not know as text
//! instead of failing.

use crate::model::{GroupState, ProbeReason, ReasonCode, RecordPhase, Side, SignalId, Verdict};
use kube_failover_core::checks::{CheckKind, CheckResult, Gate};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A value of one of this version's enums, or a name this version does not know (from
/// a daemon of another version). Serialized as the plain name either way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Named<T> {
    /// A name this version knows.
    Known(T),
    /// Any other name.
    Other(String),
}

impl<T> From<T> for Named<T> {
    fn from(value: T) -> Self {
        Named::Known(value)
    }
}

impl<T: serde::de::DeserializeOwned> Named<T> {
    /// Reads a name: a known value when this version knows it, else the text.
    pub fn parse(name: &str) -> Self {
        serde_json::from_value(serde_json::Value::String(name.to_string()))
            .map(Named::Known)
            .unwrap_or_else(|_| Named::Other(name.to_string()))
    }
}

impl<T> Named<T> {
    /// The known value, if it is one.
    pub fn known(&self) -> Option<&T> {
        match self {
            Named::Known(v) => Some(v),
            Named::Other(_) => None,
        }
    }
}

impl<T: fmt::Display> fmt::Display for Named<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Named::Known(v) => v.fmt(f),
            Named::Other(s) => f.write_str(s),
        }
    }
}

impl<T: fmt::Display> PartialEq<str> for Named<T> {
    fn eq(&self, other: &str) -> bool {
        match self {
            Named::Known(v) => v.to_string() == other,
            Named::Other(s) => s == other,
        }
    }
}

impl<T: fmt::Display> PartialEq<&str> for Named<T> {
    fn eq(&self, other: &&str) -> bool {
        self == *other
    }
}

/// The whole `/status` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The daemon's version.
    pub version: String,
    /// `observe` or `auto`.
    pub mode: String,
    /// The daemon's identity (as written into records and Events).
    pub identity: String,
    /// Config loaded and first tick done, not shutting down.
    pub ready: bool,
    /// When the last tick of any group finished (Unix seconds).
    pub last_tick_unix: Option<f64>,
    /// One entry per group, in config order once each has ticked.
    pub groups: Vec<GroupStatus>,
}

/// One group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group's name.
    pub name: String,
    /// The group's state, e.g. `primary_active`.
    pub state: Named<GroupState>,
    /// When the group entered `state` (Unix seconds).
    pub since_unix: f64,
    /// The primary is down by quorum (after hysteresis).
    pub primary_down: bool,
    /// The standby could take over now.
    pub standby_fit: bool,
    /// Which side the record says is active: `primary` or `standby` (`unknown` while
    /// the record cannot be read).
    pub active_cluster: Named<Side>,
    /// The primary's signals after hysteresis.
    pub signals: Vec<SignalStatus>,
    /// Standby fitness.
    pub standby: StandbyStatus,
    /// The failover record as last read (`None` while unreadable).
    pub record: Option<RecordStatus>,
    /// The last decision.
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
    /// Who leads the group and what every observer says (several instances).
    #[serde(default)]
    pub coordination: Option<CoordStatus>,
    /// Every configured state check (`[groups.state]`, `[groups.drift]`), in config order.
    #[serde(default)]
    pub state_checks: Vec<StateCheckStatus>,
    /// The standby's Deployments against their primary twins (`None`: drift is off).
    #[serde(default)]
    pub drift: Option<DriftStatus>,
    /// The Terraform state mirror (`[groups.state.mirror]`), when configured.
    #[serde(default)]
    pub mirror: Option<MirrorStatus>,
    /// The guards beside the agents (`[groups.guards]`), when any is expected.
    #[serde(default)]
    pub guards: Option<GuardsStatus>,
    /// The env0 deployments the latest promotion stranded (`[env0]`), when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env0: Option<Env0Status>,
}

/// The guards beside the agents, as their heartbeats say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardsStatus {
    /// Guards expected beside the primary's agents.
    pub expected_primary: u32,
    /// Guards expected beside the standby's agents.
    pub expected_standby: u32,
    /// Why the heartbeats could not be read this tick (`None`: read).
    pub error: Option<String>,
    /// Per side: `primary`, then `standby`.
    pub sides: Vec<GuardSideStatus>,
    /// Every heartbeat, stale ones included.
    pub heartbeats: Vec<GuardHeartbeatStatus>,
}

/// The guards of one side, counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardSideStatus {
    /// `primary` or `standby`.
    pub side: Named<Side>,
    /// The counts (fresh running / stopped, stale, missing, stopped while active).
    #[serde(flatten)]
    pub tally: crate::model::GuardTally,
}

/// One guard's heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuardHeartbeatStatus {
    /// The guard's identity.
    pub identity: String,
    /// The side it runs on.
    pub side: Named<Side>,
    /// `running` or `stopped` (what it last wrote); `refusing` for a sidecar guard
    /// whose verdict makes the agent's liveness probe fail.
    pub state: String,
    /// `wrapper` or `sidecar` (a sidecar's heartbeat never proves a stop).
    #[serde(default = "wrapper")]
    pub form: String,
    /// The guard's reason code.
    pub reason: String,
    /// The highest epoch at which it saw the standby active.
    pub standby_epoch: Option<u64>,
    /// Seconds since it was written (-1: it carries no renewal time or duration).
    pub age_seconds: f64,
    /// Written within its Lease duration.
    pub fresh: bool,
    /// With `on_isolation = "stop"`: how long a promotion's scale-up waits for it at
    /// most (its `isolation_ttl` plus margin, seconds); `None` with `keep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation_bound_seconds: Option<f64>,
}

fn wrapper() -> String {
    "wrapper".to_string()
}

/// One state check's last outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateCheckStatus {
    /// `backend:<name>`, `volume`, `freshness:<name>`, `drift:image`, `drift:settings`.
    pub name: String,
    /// `backend`, `volume`, `freshness` or `drift`.
    pub kind: Named<CheckKind>,
    /// `block` or `warn`.
    pub gate: Named<Gate>,
    /// The check passed.
    pub ok: bool,
    /// `ok`, or why not (`unreachable`, `missing`, `unbound`, `stale`, `forbidden`, …).
    pub result: Named<CheckResult>,
    /// The reason code a failure carries (`None` when it passed).
    pub reason: Option<Named<ReasonCode>>,
    /// A short detail naming the object (never a secret).
    pub detail: String,
    /// When the answer judged was had (Unix seconds).
    pub last_checked_unix: Option<f64>,
}

/// Drift between the standby's Deployments and their primary twins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftStatus {
    /// `warn` or `block` (`block`: a different image makes the standby unfit).
    pub gate: String,
    /// When the primary's side was last read while the primary was healthy (Unix
    /// seconds): the comparison uses that reading.
    pub primary_seen_unix: Option<f64>,
    /// When the standby's side was last read (Unix seconds).
    pub standby_seen_unix: Option<f64>,
    /// The Deployments compared (present on either side), by name.
    #[serde(default)]
    pub deployments: Vec<String>,
    /// Every field that differs.
    pub items: Vec<DriftItem>,
    /// What could not be compared, and why (e.g. Secrets the daemon may not read).
    pub not_compared: Vec<String>,
}

/// One field that differs between a standby Deployment and its primary twin. Values
/// that may be secret (Secret data, environment variables named like secrets or taken
/// from Secrets) are shown as hashes keyed per daemon process: equal or not, nothing
/// more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftItem {
    /// The Deployment's name (the same on both sides).
    pub deployment: String,
    /// The container, when the field belongs to one (`init:<name>` for init containers).
    pub container: Option<String>,
    /// `deployment`, `containers`, `image`, `image_id`, `env`, `env_from`, `volumes`,
    /// `configmap_data`, `secret_data` or `resources`.
    pub field: String,
    /// The environment variable, ConfigMap or Secret the difference is about.
    pub key: Option<String>,
    /// The primary's value.
    pub primary: String,
    /// The standby's value.
    pub standby: String,
}

/// The Terraform state mirror of a group: what it copies, whether it runs, how far
/// behind the standby is, and what it leaves alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MirrorStatus {
    /// `groups.state.mirror.enabled`.
    pub enabled: bool,
    /// Copying: the record says the primary is active (this instance writes only when
    /// it leads; see `writer`).
    pub active: bool,
    /// Why it does not copy (`promoted`, `paused`, `record_unknown`, …), when stopped.
    pub stopped_reason: Option<String>,
    /// The same for people.
    pub stopped_detail: Option<String>,
    /// This instance writes the copies (it leads the group, in `auto` mode).
    pub writer: bool,
    /// The label selector of the Secrets copied.
    pub selector: String,
    /// Where they are copied from.
    pub primary_namespace: String,
    /// Where they are copied to.
    pub standby_namespace: String,
    /// `groups.state.mirror.prune`.
    pub prune: bool,
    /// Secrets whose standby copy matched the primary at the last pass.
    pub secrets: u64,
    /// Bytes of their data.
    pub bytes: u64,
    /// Standby Secrets left alone (at most 50 listed; `conflict_count` has them all).
    pub conflicts: Vec<MirrorConflictStatus>,
    /// How many conflicts there are.
    pub conflict_count: usize,
    /// Secrets still to copy (a write failed, or another instance writes): at most 50.
    pub pending: Vec<String>,
    /// Standby Secrets the primary does not have, kept (no prune, or not the mirror's
    /// copies): at most 50.
    pub kept: Vec<String>,
    /// Unix time of the primary's state the standby was last found in sync with.
    pub last_sync_unix: Option<f64>,
    /// Seconds since then, when the status was written.
    pub lag_seconds: Option<f64>,
    /// `groups.state.mirror.max_lag` in seconds.
    pub max_lag_seconds: f64,
    /// The last pass's failure, if it failed (never Secret data).
    pub last_error: Option<String>,
}

/// A standby Secret the mirror leaves alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorConflictStatus {
    /// The Secret's name.
    pub name: String,
    /// `changed_since_copy`, `not_copied_by_mirror` or `stale_part`.
    pub kind: String,
    /// What it means and what to do.
    pub detail: String,
}

/// Several daemon instances on one group: the leader and the observers' verdicts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordStatus {
    /// The leader Lease's holder as last read (`None`: nobody holds it).
    pub leader: Option<String>,
    /// How long this instance has seen no live leader of the group, once that is longer
    /// than the lease duration (`None`: led, or not for that long). Nothing is promoted
    /// or fenced while nobody leads.
    #[serde(default)]
    pub no_leader_seconds: Option<f64>,
    /// This instance's role: `leader`, `follower` or `identity_clash`.
    pub role: String,
    /// `policy.observers.quorum`.
    pub quorum: u32,
    /// `policy.observers.expected`, when set.
    pub expected: Option<u32>,
    /// Every observer seen, this instance first.
    pub observers: Vec<ObserverStatus>,
}

/// One observer's published verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObserverStatus {
    /// The instance's `daemon.identity`.
    pub identity: String,
    /// Its verdict on the primary.
    pub verdict: Named<Verdict>,
    /// Seconds since it renewed its Lease (`None`: unknown).
    pub age_seconds: Option<f64>,
    /// Renewed within `policy.observers.ttl`: its verdict counts.
    pub fresh: bool,
    /// This instance's own verdict.
    pub this_instance: bool,
    /// The signals it sees down.
    pub down_signals: Vec<String>,
    /// Since when it has said `down` (Unix seconds).
    pub down_since_unix: Option<f64>,
}

/// One primary signal after hysteresis, with its last probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalStatus {
    /// The signal, e.g. `api` or `workload:env0=agent-trigger`.
    pub name: Named<SignalId>,
    /// Up after hysteresis.
    pub up: bool,
    /// Consecutive answers that were down evidence.
    pub consecutive_failures: u32,
    /// Consecutive passes.
    pub consecutive_successes: u32,
    /// Consecutive answers that proved nothing (credentials, permissions, selection).
    #[serde(default)]
    pub consecutive_unknown: u32,
    /// The last probe's reason.
    pub last_reason: Option<Named<ProbeReason>>,
    /// The last probe's latency.
    pub last_latency_seconds: Option<f64>,
    /// The last probe's detail (never a secret).
    pub last_detail: String,
}

/// Standby fitness.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StandbyStatus {
    /// `/readyz` of the standby's API server.
    pub api_reason: Named<ProbeReason>,
    /// Whether every selected Deployment exists there.
    pub workloads_reason: Named<ProbeReason>,
    /// Details of what failed.
    pub detail: String,
}

/// The failover record as last read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordStatus {
    /// The effective phase.
    pub phase: Named<RecordPhase>,
    /// Increases by one with every promotion.
    pub epoch: u64,
    /// Reason code of the promotion or of its failure.
    pub reason: String,
    /// RFC 3339 time the promotion started.
    pub promoted_at: Option<String>,
    /// RFC 3339 time the standby was Ready.
    pub completed_at: Option<String>,
    /// RFC 3339 time the old primary was seen at 0, or its guards stopped its agents.
    pub fenced_at: Option<String>,
    /// `scale` or `guard`: what proved it.
    #[serde(default)]
    pub fenced_by: Option<String>,
    /// The daemon that wrote last.
    pub holder: String,
    /// Primary Deployments active when the promotion started (fenced by name too).
    #[serde(default)]
    pub primary_deployments: Vec<String>,
    #[serde(default)]
    /// RFC 3339 time of the last failback.
    pub failback_at: Option<String>,
    #[serde(default)]
    /// RFC 3339 time the record was written back after it was lost.
    pub restored_at: Option<String>,
    /// How far behind the primary the standby's Terraform state was when the last
    /// promotion started (seconds; the state mirror's age).
    #[serde(default)]
    pub mirror_age_seconds: Option<u64>,
}

/// The last decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionStatus {
    /// When the decision was made (Unix seconds).
    pub at_unix: f64,
    /// Most important first.
    pub reasons: Vec<Named<ReasonCode>>,
    /// Actions taken (auto) or that would have been taken (observe).
    pub actions: Vec<String>,
    /// True in observe mode when a promotion would have started.
    pub would_promote: bool,
    /// Failing state checks whose gate only warns.
    #[serde(default)]
    pub warnings: Vec<Named<ReasonCode>>,
}

/// env0's part of `/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Env0Status {
    /// `idle` (no promotion looked into yet), `looking`, `done` or `failed` (retried).
    pub state: String,
    /// The promotion epoch looked into.
    pub epoch: Option<u64>,
    /// When the last lookup ended (RFC 3339).
    pub checked_at: Option<String>,
    /// The reason code of the last failure.
    pub reason: Option<String>,
    /// What env0 said (or why it could not be asked).
    #[serde(flatten)]
    pub report: Env0Report,
}

/// An environment whose latest deployment the promotion stranded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stranded {
    /// The environment's id.
    pub environment_id: String,
    /// Its name.
    pub environment: String,
    /// Its project's id.
    pub project_id: String,
    /// The stranded deployment's id.
    pub deployment_id: String,
    /// Its status: `WAITING_FOR_USER`, `IN_PROGRESS` or `QUEUED`.
    pub status: String,
    /// When it began (RFC 3339); `null` when env0 did not say (it may have begun after
    /// the promotion: never redeployed by the daemon).
    pub started_at: Option<String>,
    /// The deployment in env0's UI.
    pub link: String,
}

impl Stranded {
    /// `name (project P, deployment D, STATUS, link)`.
    pub fn describe(&self) -> String {
        format!(
            "{} (project {}, deployment {}, {}{}, {})",
            self.environment,
            self.project_id,
            self.deployment_id,
            self.status,
            if self.started_at.is_none() {
                ", start time unknown"
            } else {
                ""
            },
            self.link
        )
    }
}

/// One redeploy the daemon asked for (or found asked for already).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redeploy {
    /// The environment's id.
    pub environment_id: String,
    /// Its name.
    pub environment: String,
    /// The stranded deployment it replaces.
    pub deployment_id: String,
    /// `done` (env0 took it), `failed` (env0 refused or did not answer: redeploy by
    /// hand), `claimed` (asked before by this or another instance; its outcome was not
    /// recorded: look in env0), `skipped` (the daemon no longer leads, or the group is
    /// paused or failing back).
    pub result: String,
    /// The new deployment's id, when env0 gave one.
    pub new_deployment_id: Option<String>,
    /// Who asked (`daemon.identity`).
    pub by: String,
    /// Why it failed or was skipped.
    pub error: Option<String>,
}

impl Redeploy {
    /// One line for people.
    pub fn describe(&self) -> String {
        let new = self
            .new_deployment_id
            .as_ref()
            .map(|n| format!(", new deployment {n}"))
            .unwrap_or_default();
        let why = self
            .error
            .as_ref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        format!(
            "{} (deployment {}): redeploy {} by {}{new}{why}",
            self.environment, self.deployment_id, self.result, self.by
        )
    }
}

/// env0's part of a promotion notice.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Env0Report {
    /// The environments whose latest deployment the promotion stranded.
    pub stranded: Vec<Stranded>,
    /// The redeploys (`env0.redeploy`).
    pub redeploys: Vec<Redeploy>,
    /// Why env0 could not be asked (then `stranded` is empty and means nothing).
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_this_version_does_not_know_are_kept_as_text() {
        let state: Named<GroupState> = serde_json::from_str("\"primary_active\"").unwrap();
        assert_eq!(state, Named::Known(GroupState::PrimaryActive));
        let newer: Named<GroupState> = serde_json::from_str("\"electing\"").unwrap();
        assert_eq!(newer, Named::Other("electing".into()));
        assert_eq!(newer, "electing");
        assert_eq!(serde_json::to_string(&state).unwrap(), "\"primary_active\"");
        let signal: Named<SignalId> = Named::parse("workload:env0=agent-trigger");
        assert_eq!(
            signal.known(),
            Some(&SignalId::Workload("env0=agent-trigger".into()))
        );
        assert_eq!(signal.to_string(), "workload:env0=agent-trigger");
        assert_eq!(
            Named::<ReasonCode>::parse("cooldown"),
            Named::Known(ReasonCode::Cooldown)
        );
    }
}

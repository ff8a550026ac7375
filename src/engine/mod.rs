//! The decision engine: pure, synchronous, no clock reads and no I/O. The daemon hands
//! it the monotonic `now` and one tick's [`Observation`]; it hands back the state, the
//! reasons and the actions to take. Hysteresis, quorum, startup grace, cooldown,
//! self-distrust and the promotion state machine all live here.

mod group;
mod signal;
#[cfg(test)]
mod tests;

pub use group::{Engine, EngineSettings};
pub use signal::{Signal, SignalSnapshot};

use crate::model::Action;
use serde::Serialize;

/// Named state of one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupState {
    /// Startup grace: not enough history to decide anything.
    Starting,
    /// The primary is up and active.
    PrimaryActive,
    /// Some of the primary's signals are failing, not (yet) enough to call it down.
    PrimarySuspect,
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
}

impl GroupState {
    pub const ALL: [GroupState; 9] = [
        GroupState::Starting,
        GroupState::PrimaryActive,
        GroupState::PrimarySuspect,
        GroupState::PrimaryDown,
        GroupState::Blocked,
        GroupState::Frozen,
        GroupState::Promoting,
        GroupState::Promoted,
        GroupState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Starting => "starting",
            GroupState::PrimaryActive => "primary_active",
            GroupState::PrimarySuspect => "primary_suspect",
            GroupState::PrimaryDown => "primary_down",
            GroupState::Blocked => "blocked",
            GroupState::Frozen => "frozen",
            GroupState::Promoting => "promoting",
            GroupState::Promoted => "promoted",
            GroupState::Failed => "failed",
        }
    }
}

/// Why the engine decided what it did. Bounded: these are log fields, metric labels and
/// `/status` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// Every primary signal is up.
    PrimaryHealthy,
    /// Some primary signals are down or failing, fewer than the quorum.
    SignalsFailing,
    /// At least `quorum` primary signals are down.
    PrimaryDownQuorum,
    /// Within startup grace.
    StartupGrace,
    /// The standby's API server does not answer.
    StandbyApiDown,
    /// A selected Deployment is missing in the standby.
    StandbyWorkloadMissing,
    /// The failover record could not be read.
    RecordUnreadable,
    /// A promotion happened less than `cooldown` ago.
    Cooldown,
    /// Ticks arrived more than twice the interval apart.
    LoopStalled,
    /// Wall clock and monotonic clock disagree.
    ClockJump,
    /// Neither cluster was reachable in the same tick: the watcher's own network is the
    /// likelier culprit.
    AllClustersUnreachable,
    /// Frozen until `freeze_for` has passed since the last distrust.
    FreezeHold,
    /// Observe mode: a promotion would start now.
    WouldPromote,
    /// A promotion starts now.
    PromotionStarted,
    /// Waiting for the standby's workloads to become Ready.
    AwaitingStandbyReady,
    /// The standby's workloads are Ready.
    StandbyReady,
    /// The promotion did not finish within `promotion_timeout`.
    PromotionTimeout,
    /// The primary answers again and still has replicas: fencing.
    FencingPrimary,
    /// The old primary's workloads are at 0.
    PrimaryFenced,
    /// The old primary cannot be reached, so it cannot be fenced yet.
    PrimaryUnreachable,
    /// Replicas appeared in the standby while the primary is active.
    StandbyUnexpectedReplicas,
    /// The record says the standby is active (restart, or another daemon did it).
    ResumedFromRecord,
}

impl ReasonCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::PrimaryHealthy => "primary_healthy",
            ReasonCode::SignalsFailing => "signals_failing",
            ReasonCode::PrimaryDownQuorum => "primary_down_quorum",
            ReasonCode::StartupGrace => "startup_grace",
            ReasonCode::StandbyApiDown => "standby_api_down",
            ReasonCode::StandbyWorkloadMissing => "standby_workload_missing",
            ReasonCode::RecordUnreadable => "record_unreadable",
            ReasonCode::Cooldown => "cooldown",
            ReasonCode::LoopStalled => "loop_stalled",
            ReasonCode::ClockJump => "clock_jump",
            ReasonCode::AllClustersUnreachable => "all_clusters_unreachable",
            ReasonCode::FreezeHold => "freeze_hold",
            ReasonCode::WouldPromote => "would_promote",
            ReasonCode::PromotionStarted => "promotion_started",
            ReasonCode::AwaitingStandbyReady => "awaiting_standby_ready",
            ReasonCode::StandbyReady => "standby_ready",
            ReasonCode::PromotionTimeout => "promotion_timeout",
            ReasonCode::FencingPrimary => "fencing_primary",
            ReasonCode::PrimaryFenced => "primary_fenced",
            ReasonCode::PrimaryUnreachable => "primary_unreachable",
            ReasonCode::StandbyUnexpectedReplicas => "standby_unexpected_replicas",
            ReasonCode::ResumedFromRecord => "resumed_from_record",
        }
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One tick's output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub state: GroupState,
    /// Most important first.
    pub reasons: Vec<ReasonCode>,
    /// To run in order; in observe mode the daemon runs none of them.
    pub actions: Vec<Action>,
    /// The primary is down by quorum (after hysteresis).
    pub primary_down: bool,
    /// The standby could take over right now.
    pub standby_fit: bool,
    /// Sum of desired replicas of the standby's workloads while the primary is active
    /// (0 when none, or when not known).
    pub unexpected_standby_replicas: i32,
    /// Per-signal state after hysteresis.
    pub signals: Vec<SignalSnapshot>,
    /// True when `state` differs from the previous tick's.
    pub state_changed: bool,
}

impl Decision {
    /// Observe mode: a promotion would have started in this tick.
    pub fn would_promote(&self) -> bool {
        self.reasons.contains(&ReasonCode::WouldPromote)
    }
}

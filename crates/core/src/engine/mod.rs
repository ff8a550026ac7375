//! The decision engine: pure, synchronous, no clock reads and no I/O. The daemon hands
//! it the monotonic `now` and one tick's [`Observation`]; it hands back the state, the
//! reasons and the actions to take. Hysteresis, quorum, startup grace, cooldown,
//! self-distrust and the promotion state machine all live here.

mod group;
#[cfg(test)]
mod props;
mod signal;
#[cfg(test)]
mod tests;

pub use crate::model::{GroupState, ReasonCode};
pub use group::{Engine, EngineSettings};
pub use signal::{Signal, SignalSnapshot, min_spacing};

use crate::model::{Action, Verdict};
use serde::Serialize;

/// One tick's output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The group's state after this tick.
    pub state: GroupState,
    /// Most important first.
    pub reasons: Vec<ReasonCode>,
    /// To run in order, when [`Decision::acts`]; otherwise what the leader in auto
    /// mode would run.
    pub actions: Vec<Action>,
    /// The primary is down by quorum (after hysteresis).
    pub primary_down: bool,
    /// The standby could take over right now.
    pub standby_fit: bool,
    /// Sum of desired replicas of the standby's workloads while the primary is active
    /// (0 when none, or when not known).
    pub unexpected_standby_replicas: i32,
    /// Both sides want replicas this tick (safety invariant 6), whatever the config.
    pub dual_active: bool,
    /// Neither side runs the workload, for longer than `promotion_timeout`.
    pub no_active_side: bool,
    /// Per-signal state after hysteresis.
    pub signals: Vec<SignalSnapshot>,
    /// True when `state` differs from the previous tick's.
    pub state_changed: bool,
    /// This instance's verdict on the primary, published for the other instances.
    pub verdict: Verdict,
    /// Failing state checks whose gate only warns: they never stop a promotion and are
    /// listed so that people know what the standby lacks (state checks with gate
    /// `block` make the standby unfit instead, named among `reasons` when they hold a
    /// promotion back).
    pub warnings: Vec<ReasonCode>,
    /// The daemon carries out `actions`: auto mode, and this instance leads the group.
    pub acts: bool,
}

/// Whether the instance that decides leads its group: an input of every decision, since
/// only the leader's actions are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// This instance holds the group's leader Lease: its decision is carried out.
    Leads,
    /// Another instance leads (or none does yet): this one decides, publishes its
    /// verdict, and writes nothing.
    Follows,
}

impl Decision {
    /// A promotion would have started in this tick, had the decision been carried out
    /// (observe mode, or an instance that does not lead).
    pub fn would_promote(&self) -> bool {
        self.reasons.contains(&ReasonCode::WouldPromote)
    }
}

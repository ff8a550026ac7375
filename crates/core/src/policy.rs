//! The policy a group is decided by: its mode and its `[groups.policy]` settings. Plain
//! data read from the config file; the engine takes it as it is.

use crate::text::choose;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Whether the daemon may write to the clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Mode {
    /// Decide and report, never write.
    Observe,
    /// Decide and act.
    Auto,
}

impl Mode {
    /// Every mode, in the order the documentation lists them.
    pub const ALL: [Mode; 2] = [Mode::Observe, Mode::Auto];

    /// The config and label value: `observe` or `auto`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Observe => "observe",
            Mode::Auto => "auto",
        }
    }
}

impl TryFrom<String> for Mode {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        choose(&value, &Mode::ALL, |m| m.as_str())
    }
}

/// `[groups.policy]`: when the primary counts as down, and what may happen then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Consecutive failed probes before a signal goes down.
    pub failure_threshold: u32,
    /// Consecutive passed probes before a signal goes up again.
    pub success_threshold: u32,
    /// How many of the primary's signals must be down for the primary to be down.
    pub quorum: u32,
    /// Minimum time between two promotions of this group.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// After start, no promotion until this long has passed (and enough ticks were seen).
    #[serde(with = "humantime_serde")]
    pub startup_grace: Duration,
    /// How long the standby may take to become Ready before the promotion is `failed`.
    #[serde(with = "humantime_serde")]
    pub promotion_timeout: Duration,
    /// How long promotion stays frozen after the watcher distrusted its own view (a
    /// clock jump, every cluster unreachable). A stalled loop holds nothing: it only
    /// makes what was seen before the gap not count.
    #[serde(with = "humantime_serde")]
    pub freeze_for: Duration,
    /// Scale standby workloads back to 0 when replicas appear there while the primary
    /// is active (auto mode only; always reported).
    pub correct_standby: bool,
    /// Scale the old primary's workloads to 0 once its API answers after a promotion.
    pub fence: bool,
    /// `[groups.policy.observers]`: how many daemon instances must agree.
    pub observers: ObserverPolicy,
}

/// `[groups.policy.observers]`: the quorum of daemon instances (observers) that must
/// say the primary is down before the leader promotes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObserverPolicy {
    /// Fresh observers saying `down` needed to promote, this instance included. 1 keeps
    /// the single-daemon behaviour.
    pub quorum: u32,
    /// How many instances are meant to run (for validation and the alert on missing
    /// observers); `None` when not said.
    pub expected: Option<u32>,
    /// An observer's verdict counts while its Lease was renewed within this; default
    /// three probe intervals.
    #[serde(with = "humantime_serde")]
    pub ttl: Option<Duration>,
}

impl Default for ObserverPolicy {
    fn default() -> Self {
        ObserverPolicy {
            quorum: 1,
            expected: None,
            ttl: None,
        }
    }
}

impl ObserverPolicy {
    /// The verdict freshness bound, default applied (three probe intervals).
    pub fn ttl_or_default(&self, interval: Duration) -> Duration {
        self.ttl.unwrap_or_else(|| interval.saturating_mul(3))
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            failure_threshold: 3,
            success_threshold: 1,
            quorum: 1,
            cooldown: Duration::from_secs(600),
            startup_grace: Duration::from_secs(30),
            promotion_timeout: Duration::from_secs(120),
            freeze_for: Duration::from_secs(60),
            correct_standby: true,
            fence: true,
            observers: ObserverPolicy::default(),
        }
    }
}

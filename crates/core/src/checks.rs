//! Standby state checks: whether the standby would run the same agent against the same
//! Terraform state. Each check (a remote state backend reachable, the state volume
//! bound, a replication timestamp fresh, the standby's Deployments like the primary's)
//! has a gate: a failing `block` check makes the standby unfit, so a promotion waits;
//! a failing `warn` check never stops one and is listed so people know what is missing.
//!
//! A check that cannot be answered (forbidden, its kind not installed, a watch not
//! established) fails: it cannot show the standby fit, and it is never a reason to
//! promote.

use crate::model::ReasonCode;
use crate::text::choose;
use serde::{Deserialize, Serialize};

/// What a failing check does to a promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Gate {
    /// The standby is unfit while the check fails: a promotion waits (`blocked`).
    Block,
    /// A promotion goes ahead; the check is listed as a warning.
    #[default]
    Warn,
}

impl Gate {
    /// Every gate, in the order the documentation lists them.
    pub const ALL: [Gate; 2] = [Gate::Block, Gate::Warn];

    /// The config and label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Gate::Block => "block",
            Gate::Warn => "warn",
        }
    }
}

impl TryFrom<String> for Gate {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        choose(&value, &Gate::ALL, |g| g.as_str())
    }
}

/// What a check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// A remote state backend (HTTPS URL or TCP host:port), from the daemon's host.
    Backend,
    /// The state PersistentVolumeClaim in the standby namespace.
    Volume,
    /// An object in the standby whose timestamp must be recent (replication).
    Freshness,
    /// The standby's Deployments against their primary twins.
    Drift,
}

impl CheckKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Backend => "backend",
            CheckKind::Volume => "volume",
            CheckKind::Freshness => "freshness",
            CheckKind::Drift => "drift",
        }
    }
}

/// The result of one check. Bounded: a metric label and a `/status` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckResult {
    /// The check passed.
    Ok,
    /// The backend did not answer (timeout, refused, connection or TLS failure).
    Unreachable,
    /// The backend answered with a status outside the expected set.
    HttpStatus,
    /// The object the check needs does not exist.
    Missing,
    /// The PersistentVolumeClaim exists but is not `Bound`.
    Unbound,
    /// The timestamp is older than `max_age`, or there is none.
    Stale,
    /// The standby differs from the primary.
    Drift,
    /// The daemon may not read what the check needs (401/403): unanswerable.
    Forbidden,
    /// The standby's API does not serve the kind (its CRD is not installed):
    /// unanswerable.
    NotInstalled,
    /// No answer to judge by (a watch not established, the standby's API unreachable,
    /// a value that cannot be read, nothing compared yet): unanswerable.
    Unanswerable,
}

impl CheckResult {
    /// Every result, for pre-registering metric label values.
    pub const ALL: [CheckResult; 10] = [
        CheckResult::Ok,
        CheckResult::Unreachable,
        CheckResult::HttpStatus,
        CheckResult::Missing,
        CheckResult::Unbound,
        CheckResult::Stale,
        CheckResult::Drift,
        CheckResult::Forbidden,
        CheckResult::NotInstalled,
        CheckResult::Unanswerable,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::Ok => "ok",
            CheckResult::Unreachable => "unreachable",
            CheckResult::HttpStatus => "http_status",
            CheckResult::Missing => "missing",
            CheckResult::Unbound => "unbound",
            CheckResult::Stale => "stale",
            CheckResult::Drift => "drift",
            CheckResult::Forbidden => "forbidden",
            CheckResult::NotInstalled => "not_installed",
            CheckResult::Unanswerable => "unanswerable",
        }
    }

    /// True when the check passed.
    pub fn passed(self) -> bool {
        self == CheckResult::Ok
    }

    /// True when the check could not be answered: it fails, and says the daemon cannot
    /// tell rather than that the state is missing.
    pub fn unanswerable(self) -> bool {
        matches!(
            self,
            CheckResult::Forbidden | CheckResult::NotInstalled | CheckResult::Unanswerable
        )
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

display_as_str!(Gate, CheckKind, CheckResult);

/// One state check's outcome in one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateCheck {
    /// Unique in the group and bounded: `backend:<name>`, `volume`,
    /// `freshness:<name>`, `drift:image`, `drift:settings`.
    pub name: String,
    /// What it looks at.
    pub kind: CheckKind,
    /// What a failure does to a promotion.
    pub gate: Gate,
    /// Pass, or why not.
    pub result: CheckResult,
    /// A short, secret-free detail naming the object (may be empty).
    #[serde(default)]
    pub detail: String,
    /// Unix seconds of the answer judged (a shared backend answer may be up to one
    /// interval old); `None` when there was none.
    #[serde(default)]
    pub checked_at_unix: Option<f64>,
}

impl StateCheck {
    /// True when the check passed.
    pub fn passed(&self) -> bool {
        self.result.passed()
    }

    /// The reason code of a failing check (`None` when it passed): unanswerable checks
    /// are `standby_state_unanswerable` whatever they look at.
    pub fn reason_code(&self) -> Option<ReasonCode> {
        if self.result.passed() {
            return None;
        }
        if self.result.unanswerable() {
            return Some(ReasonCode::StandbyStateUnanswerable);
        }
        Some(match self.kind {
            CheckKind::Backend => ReasonCode::StandbyStateBackendUnreachable,
            CheckKind::Volume if self.result == CheckResult::Missing => {
                ReasonCode::StandbyStateVolumeMissing
            }
            CheckKind::Volume => ReasonCode::StandbyStateVolumeUnbound,
            CheckKind::Freshness => ReasonCode::StandbyStateStale,
            CheckKind::Drift => ReasonCode::StandbyAgentDrift,
        })
    }

    /// True when the check fails and its gate blocks a promotion.
    pub fn blocks(&self) -> bool {
        !self.passed() && self.gate == Gate::Block
    }

    /// True when the check fails and its gate only warns.
    pub fn warns(&self) -> bool {
        !self.passed() && self.gate == Gate::Warn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: CheckKind, result: CheckResult) -> StateCheck {
        StateCheck {
            name: "c".into(),
            kind,
            gate: Gate::Block,
            result,
            detail: String::new(),
            checked_at_unix: None,
        }
    }

    #[test]
    fn reason_codes_name_the_cause_and_unanswerable_is_its_own() {
        use CheckKind::{Backend, Freshness, Volume};
        use CheckResult::{
            HttpStatus, Missing, NotInstalled, Ok, Stale, Unanswerable, Unbound, Unreachable,
        };
        let cases = [
            (Backend, Unreachable, "standby_state_backend_unreachable"),
            (Backend, HttpStatus, "standby_state_backend_unreachable"),
            (Volume, Missing, "standby_state_volume_missing"),
            (Volume, Unbound, "standby_state_volume_unbound"),
            (Volume, CheckResult::Forbidden, "standby_state_unanswerable"),
            (Freshness, Stale, "standby_state_stale"),
            (Freshness, Missing, "standby_state_stale"),
            (Freshness, NotInstalled, "standby_state_unanswerable"),
            (CheckKind::Drift, CheckResult::Drift, "standby_agent_drift"),
            (CheckKind::Drift, Unanswerable, "standby_state_unanswerable"),
        ];
        for (kind, result, code) in cases {
            let c = check(kind, result);
            assert_eq!(c.reason_code().map(|r| r.as_str()), Some(code), "{c:?}");
            assert!(c.blocks() && !c.warns());
        }
        assert_eq!(check(Volume, Ok).reason_code(), None);
        assert!(!check(Volume, Ok).blocks());
    }

    #[test]
    fn gates_read_their_config_names_and_default_to_warn() {
        assert_eq!(Gate::try_from("block".to_string()), Ok(Gate::Block));
        assert_eq!(Gate::default(), Gate::Warn);
        let err = Gate::try_from("stop".to_string()).unwrap_err();
        assert!(err.contains("\"block\", \"warn\""), "{err}");
    }
}

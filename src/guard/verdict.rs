//! The sidecar guard's verdict (`form = "sidecar"`): whether the agent beside it may
//! run, and why, as `GET /agent` answers it to the agent container's liveness probe.
//! The guard's loop sets it; the admin server reads it.

use super::decide::GuardReason;
use std::sync::Mutex;

/// The verdict; until the loop first judges the record, a refusal.
#[derive(Debug, Default)]
pub struct Verdict {
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone, Copy)]
struct State {
    allowed: bool,
    reason: Option<GuardReason>,
    standby_epoch: Option<u64>,
}

impl Verdict {
    /// The agent may run.
    pub fn allowed(&self) -> bool {
        self.read().allowed
    }

    /// Lets the agent run, for `reason`.
    pub fn allow(&self, reason: GuardReason) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.allowed = true;
        s.reason = Some(reason);
    }

    /// Refuses the agent, for `reason`, with the highest epoch seen with the standby
    /// active.
    pub fn refuse(&self, reason: GuardReason, standby_epoch: Option<u64>) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *s = State {
            allowed: false,
            reason: Some(reason),
            standby_epoch,
        };
    }

    /// Whether the agent may run, and the one line `GET /agent` answers.
    pub fn answer(&self) -> (bool, String) {
        let s = self.read();
        let Some(reason) = s.reason else {
            return (
                false,
                "refused: the guard has not judged the failover record yet\n".to_string(),
            );
        };
        let code = reason.as_str();
        if s.allowed {
            let why = match reason {
                GuardReason::Vouched => "enough daemons vouch for the primary",
                GuardReason::RecordUnreadable => {
                    "the record stays unreadable and the agent was never refused"
                }
                GuardReason::NoRecordYet => "no failover recorded: the primary is active",
                _ => "the record says this side is active",
            };
            return (true, format!("allowed: {code}: {why}\n"));
        }
        let why = match reason {
            GuardReason::Isolated => {
                "the record cannot be read and too few daemons vouch for the primary"
            }
            GuardReason::NoRecordYet => "no failover recorded: the standby is not active",
            _ => "the record says the other side is active",
        };
        let epoch = s
            .standby_epoch
            .map(|e| format!(" (standby active at epoch {e})"))
            .unwrap_or_default();
        (false, format!("refused: {code}: {why}{epoch}\n"))
    }

    fn read(&self) -> State {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_until_judged_then_as_the_loop_says() {
        let v = Verdict::default();
        assert_eq!(
            v.answer(),
            (
                false,
                "refused: the guard has not judged the failover record yet\n".into()
            )
        );
        v.allow(GuardReason::NoRecordYet);
        assert!(v.allowed());
        assert_eq!(
            v.answer(),
            (
                true,
                "allowed: no_record_yet: no failover recorded: the primary is active\n".into()
            )
        );
        v.refuse(GuardReason::OtherSideActive, Some(3));
        assert!(!v.allowed());
        assert_eq!(
            v.answer(),
            (
                false,
                "refused: other_side_active: the record says the other side is active (standby active at epoch 3)\n"
                    .into()
            )
        );
        v.allow(GuardReason::SideActive);
        assert!(v.answer().0);
    }
}

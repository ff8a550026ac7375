//! What the guard wants of the agent, from the failover record alone: pure, so every
//! rule is a unit test. The guard runs the agent only where the record says its side is
//! active (safety invariant 10), and it never stops a running agent because the record
//! could not be read.

use crate::model::{FailoverRecord, ProbeReason, Side};

/// One reading of the record: found, not found (no ConfigMap), or why it could not be
/// read.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// The record as stored.
    Found(Box<FailoverRecord>),
    /// The ConfigMap does not exist.
    Missing,
    /// It could not be read (the API unreachable, credentials rejected, forbidden, an
    /// undecodable record).
    Unreadable(ProbeReason),
}

/// What the guard wants the agent to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Running.
    Run,
    /// Stopped.
    Stop,
    /// As it is: nothing read proves either.
    Keep,
}

/// Why the guard wants what it wants: a bounded reason code for logs, metrics and the
/// heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuardReason {
    /// The record says this guard's side is active.
    SideActive,
    /// The record says the other side is active.
    OtherSideActive,
    /// No record exists and none was ever seen naming the standby: the primary is active
    /// (the daemon writes a record only with the first promotion).
    NoRecordYet,
    /// The record is gone after it named the standby active: a lost record is never a
    /// failback, so nothing changes until it is back.
    RecordMissing,
    /// The record says `primary` at an epoch below one seen naming the standby: not a
    /// failback of that promotion (epochs never repeat), so nothing changes.
    RecordEpochBehind,
    /// The record could not be read.
    RecordUnreadable,
    /// `on_isolation = "stop"`: the record could not be read for `isolation_ttl` and
    /// fewer than `daemons_needed` daemons vouch for the primary: the primary may be
    /// replaced without this guard knowing, so its agent stops.
    Isolated,
    /// `on_isolation = "stop"`: the record could not be read for `isolation_ttl`, and
    /// at least `daemons_needed` daemons say the primary is active and healthy (nobody
    /// is promoting: e.g. the standby is down for maintenance).
    Vouched,
}

impl GuardReason {
    /// The reason code.
    pub fn as_str(self) -> &'static str {
        match self {
            GuardReason::SideActive => "side_active",
            GuardReason::OtherSideActive => "other_side_active",
            GuardReason::NoRecordYet => "no_record_yet",
            GuardReason::RecordMissing => "record_missing",
            GuardReason::RecordEpochBehind => "record_epoch_behind",
            GuardReason::RecordUnreadable => "record_unreadable",
            GuardReason::Isolated => "isolated",
            GuardReason::Vouched => "vouched",
        }
    }
}

/// The guard's memory of the record: the highest epoch it saw with the standby active.
#[derive(Debug, Clone, Default)]
pub struct Judge {
    standby_epoch: Option<u64>,
}

impl Judge {
    /// A judge that remembers a promotion at `epoch` (read back from the guard's own
    /// heartbeat after a restart).
    pub fn remembering(standby_epoch: Option<u64>) -> Self {
        Judge { standby_epoch }
    }

    /// The highest epoch seen with the standby active.
    pub fn standby_epoch(&self) -> Option<u64> {
        self.standby_epoch
    }

    /// What the agent on `side` should be after `reading`.
    pub fn judge(&mut self, side: Side, reading: &Reading) -> (Want, GuardReason) {
        let standby_active = match reading {
            Reading::Unreadable(_) => return (Want::Keep, GuardReason::RecordUnreadable),
            Reading::Missing if self.standby_epoch.is_some() => {
                return (Want::Keep, GuardReason::RecordMissing);
            }
            Reading::Missing => false,
            Reading::Found(record) => {
                let standby = record.effective_phase().standby_active();
                if standby {
                    self.standby_epoch = Some(self.standby_epoch.unwrap_or(0).max(record.epoch));
                } else if self.standby_epoch.is_some_and(|seen| record.epoch < seen) {
                    return (Want::Keep, GuardReason::RecordEpochBehind);
                }
                standby
            }
        };
        let ours = match side {
            Side::Primary => !standby_active,
            Side::Standby => standby_active,
        };
        match (ours, reading) {
            (true, Reading::Missing) => (Want::Run, GuardReason::NoRecordYet),
            (true, _) => (Want::Run, GuardReason::SideActive),
            (false, Reading::Missing) => (Want::Stop, GuardReason::NoRecordYet),
            (false, _) => (Want::Stop, GuardReason::OtherSideActive),
        }
    }
}

/// What a primary's guard with `on_isolation = "stop"` wants while the record cannot
/// be read: `vouched` when at least `daemons_needed` daemons just said the group is
/// `primary_active`, `unconfirmed_for` the time since the last read of the record or
/// quorum of vouches. A quorum runs the agent (it goes on, or starts again after an
/// isolation ended by the daemons coming back: they read the record and see the
/// primary active and healthy); nothing for `isolation_ttl` stops it; in between,
/// `None`: the record's own answer (keep) stands.
pub fn on_isolation(
    vouched: bool,
    unconfirmed_for: std::time::Duration,
    isolation_ttl: std::time::Duration,
) -> Option<(Want, GuardReason)> {
    if vouched {
        Some((Want::Run, GuardReason::Vouched))
    } else if unconfirmed_for >= isolation_ttl {
        Some((Want::Stop, GuardReason::Isolated))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RecordPhase;

    fn record(phase: RecordPhase, epoch: u64) -> Reading {
        Reading::Found(Box::new(FailoverRecord {
            phase: Some(phase),
            epoch,
            ..FailoverRecord::default()
        }))
    }

    #[test]
    fn the_primary_runs_until_the_record_names_the_standby_and_again_after_a_failback() {
        let mut j = Judge::default();
        let p = Side::Primary;
        assert_eq!(
            j.judge(p, &Reading::Missing),
            (Want::Run, GuardReason::NoRecordYet)
        );
        for phase in [
            RecordPhase::Promoting,
            RecordPhase::Promoted,
            RecordPhase::Failed,
        ] {
            assert_eq!(
                j.judge(p, &record(phase, 1)),
                (Want::Stop, GuardReason::OtherSideActive),
                "{phase:?}"
            );
        }
        assert_eq!(j.standby_epoch(), Some(1));
        assert_eq!(
            j.judge(p, &record(RecordPhase::Primary, 1)),
            (Want::Run, GuardReason::SideActive),
            "a failback keeps the epoch"
        );
    }

    #[test]
    fn the_standby_runs_only_while_the_record_names_it() {
        let mut j = Judge::default();
        let s = Side::Standby;
        assert_eq!(
            j.judge(s, &Reading::Missing),
            (Want::Stop, GuardReason::NoRecordYet)
        );
        assert_eq!(
            j.judge(s, &record(RecordPhase::Primary, 0)),
            (Want::Stop, GuardReason::OtherSideActive)
        );
        assert_eq!(
            j.judge(s, &record(RecordPhase::Promoting, 1)),
            (Want::Run, GuardReason::SideActive)
        );
        assert_eq!(
            j.judge(s, &record(RecordPhase::Primary, 1)),
            (Want::Stop, GuardReason::OtherSideActive)
        );
    }

    #[test]
    fn an_unreadable_record_never_stops_or_starts_anything() {
        for side in [Side::Primary, Side::Standby] {
            for reason in [
                ProbeReason::Connect,
                ProbeReason::Timeout,
                ProbeReason::Unauthorized,
                ProbeReason::Forbidden,
                ProbeReason::Decode,
            ] {
                let mut j = Judge::default();
                assert_eq!(
                    j.judge(side, &Reading::Unreadable(reason)),
                    (Want::Keep, GuardReason::RecordUnreadable)
                );
            }
        }
    }

    #[test]
    fn an_isolated_guard_runs_only_on_a_quorum_of_vouches() {
        let s = std::time::Duration::from_secs;
        let ttl = s(10);
        assert_eq!(
            on_isolation(true, s(0), ttl),
            Some((Want::Run, GuardReason::Vouched))
        );
        // Asked before the ttl ran out, no quorum: the record's "keep" stands.
        assert_eq!(on_isolation(false, s(5), ttl), None);
        assert_eq!(
            on_isolation(false, s(10), ttl),
            Some((Want::Stop, GuardReason::Isolated))
        );
    }

    #[test]
    fn a_lost_record_is_never_a_failback() {
        let mut j = Judge::default();
        let p = Side::Primary;
        j.judge(p, &record(RecordPhase::Promoted, 3));
        assert_eq!(
            j.judge(p, &Reading::Missing),
            (Want::Keep, GuardReason::RecordMissing)
        );
        // Re-created below the promotion's epoch: not its failback either.
        assert_eq!(
            j.judge(p, &record(RecordPhase::Primary, 0)),
            (Want::Keep, GuardReason::RecordEpochBehind)
        );
        // Restored, then failed back.
        assert_eq!(
            j.judge(p, &record(RecordPhase::Promoted, 3)),
            (Want::Stop, GuardReason::OtherSideActive)
        );
        assert_eq!(
            j.judge(p, &record(RecordPhase::Primary, 3)),
            (Want::Run, GuardReason::SideActive)
        );
    }

    #[test]
    fn a_guard_restarted_after_a_promotion_remembers_it_from_its_heartbeat() {
        let mut j = Judge::remembering(Some(2));
        assert_eq!(
            j.judge(Side::Primary, &Reading::Missing),
            (Want::Keep, GuardReason::RecordMissing)
        );
    }
}

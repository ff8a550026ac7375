//! Per-signal hysteresis with Kubernetes probe semantics: a signal goes down after
//! `failure_threshold` consecutive answers that are down evidence and up again after
//! `success_threshold` consecutive passes. An answer that is *unknown* (the watcher
//! cannot tell: credentials, permissions, certificates, a selection matching nothing)
//! is neither: it breaks both runs, and a signal whose latest answer is unknown never
//! counts as down (safety invariant 1).

use crate::model::{Evidence, ProbeReason, SignalId};
use serde::Serialize;

/// One signal's hysteresis state.
#[derive(Debug, Clone)]
pub struct Signal {
    id: SignalId,
    up: bool,
    consecutive_failures: u32,
    consecutive_successes: u32,
    consecutive_unknown: u32,
    last_reason: Option<ProbeReason>,
    failure_threshold: u32,
    success_threshold: u32,
}

/// What `/status` and the metrics show of a signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignalSnapshot {
    /// Which signal.
    pub id: SignalId,
    /// Up after hysteresis.
    pub up: bool,
    /// Consecutive answers that were down evidence.
    pub consecutive_failures: u32,
    /// Consecutive passes.
    pub consecutive_successes: u32,
    /// Consecutive answers that prove nothing (unknown).
    pub consecutive_unknown: u32,
    /// `None` until the first observation.
    pub last_reason: Option<ProbeReason>,
}

impl Signal {
    /// A new signal starts up: a restarted daemon has no evidence of failure.
    pub fn new(id: SignalId, failure_threshold: u32, success_threshold: u32) -> Self {
        Signal {
            id,
            up: true,
            consecutive_failures: 0,
            consecutive_successes: 0,
            consecutive_unknown: 0,
            last_reason: None,
            failure_threshold: failure_threshold.max(1),
            success_threshold: success_threshold.max(1),
        }
    }

    /// Feeds one probe result; returns true when the signal changed between up and down.
    pub fn observe(&mut self, reason: ProbeReason) -> bool {
        self.last_reason = Some(reason);
        let was_up = self.up;
        match reason.evidence() {
            Evidence::Pass => {
                self.consecutive_failures = 0;
                self.consecutive_unknown = 0;
                self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                if !self.up && self.consecutive_successes >= self.success_threshold {
                    self.up = true;
                }
            }
            Evidence::Down => {
                self.consecutive_successes = 0;
                self.consecutive_unknown = 0;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.up && self.consecutive_failures >= self.failure_threshold {
                    self.up = false;
                }
            }
            Evidence::Unknown => {
                // Neither a pass nor a failure: both runs are broken, so evidence on
                // either side of a blind spot is never added up.
                self.consecutive_successes = 0;
                self.consecutive_failures = 0;
                self.consecutive_unknown = self.consecutive_unknown.saturating_add(1);
            }
        }
        was_up != self.up
    }

    /// Forgets the current run of failures and passes without changing up/down: used
    /// when the watcher distrusts its own view, so that evidence gathered while blind
    /// never counts toward a promotion.
    pub fn forget_streak(&mut self) {
        self.consecutive_failures = 0;
        self.consecutive_successes = 0;
    }

    /// Up after hysteresis (the latest answer may still be unknown).
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Down after hysteresis, and the latest answer is down evidence: only such a
    /// signal counts toward the quorum.
    pub fn counts_down(&self) -> bool {
        !self.up && self.consecutive_unknown == 0
    }

    /// True when the last answer was not a pass (down evidence or unknown).
    pub fn is_failing(&self) -> bool {
        self.consecutive_failures > 0 || self.consecutive_unknown > 0
    }

    /// The watcher has been blind on this signal for `failure_threshold` answers in a
    /// row; the reason is the latest answer's.
    pub fn unobservable(&self) -> Option<ProbeReason> {
        (self.consecutive_unknown >= self.failure_threshold)
            .then_some(self.last_reason)
            .flatten()
    }

    /// Which signal this is.
    pub fn id(&self) -> &SignalId {
        &self.id
    }

    /// What `/status` and the metrics show of this signal.
    pub fn snapshot(&self) -> SignalSnapshot {
        SignalSnapshot {
            id: self.id.clone(),
            up: self.up,
            consecutive_failures: self.consecutive_failures,
            consecutive_successes: self.consecutive_successes,
            consecutive_unknown: self.consecutive_unknown,
            last_reason: self.last_reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_down_only_after_failure_threshold_consecutive_failures() {
        let mut s = Signal::new(SignalId::Api, 3, 1);
        assert!(!s.observe(ProbeReason::Timeout));
        assert!(!s.observe(ProbeReason::Timeout));
        assert!(s.is_up());
        assert!(s.observe(ProbeReason::Timeout));
        assert!(!s.is_up());
    }

    #[test]
    fn a_pass_resets_the_failure_run() {
        let mut s = Signal::new(SignalId::Api, 3, 1);
        for _ in 0..1000 {
            s.observe(ProbeReason::Connect);
            s.observe(ProbeReason::Connect);
            s.observe(ProbeReason::Ok);
        }
        assert!(s.is_up());
        assert_eq!(s.snapshot().consecutive_failures, 0);
    }

    #[test]
    fn comes_back_up_after_success_threshold_passes() {
        let mut s = Signal::new(SignalId::Api, 1, 2);
        s.observe(ProbeReason::Unready);
        assert!(!s.is_up());
        assert!(!s.observe(ProbeReason::Ok));
        assert!(!s.is_up());
        assert!(s.observe(ProbeReason::Ok));
        assert!(s.is_up());
    }

    #[test]
    fn unknown_never_counts_as_down_and_breaks_the_failure_run() {
        let mut s = Signal::new(SignalId::Workload("x".into()), 3, 1);
        for _ in 0..100 {
            s.observe(ProbeReason::Forbidden);
        }
        assert!(s.is_up() && !s.counts_down());
        assert_eq!(s.unobservable(), Some(ProbeReason::Forbidden));
        // Two failures, a blind tick, two failures: never three in a row.
        for r in [
            ProbeReason::Refused,
            ProbeReason::Refused,
            ProbeReason::Unauthorized,
            ProbeReason::Refused,
            ProbeReason::Refused,
        ] {
            s.observe(r);
        }
        assert!(s.is_up(), "a blind tick in between must break the run");
        assert_eq!(s.unobservable(), None);
    }

    #[test]
    fn a_down_signal_whose_answer_turns_unknown_stops_counting() {
        let mut s = Signal::new(SignalId::Api, 1, 1);
        s.observe(ProbeReason::Refused);
        assert!(s.counts_down());
        s.observe(ProbeReason::Tls);
        assert!(!s.is_up(), "hysteresis state is kept");
        assert!(
            !s.counts_down(),
            "but it no longer counts toward the quorum"
        );
        s.observe(ProbeReason::Refused);
        assert!(s.counts_down());
    }

    #[test]
    fn evidence_split() {
        use crate::model::Evidence::*;
        for r in ProbeReason::ALL {
            let expected = match r {
                ProbeReason::Ok => Pass,
                ProbeReason::Unauthorized
                | ProbeReason::Forbidden
                | ProbeReason::Tls
                | ProbeReason::NotFound
                | ProbeReason::Decode
                | ProbeReason::Error
                | ProbeReason::Throttled => Unknown,
                _ => Down,
            };
            assert_eq!(r.evidence(), expected, "{r:?}");
        }
    }

    #[test]
    fn forget_streak_keeps_state_but_drops_evidence() {
        let mut s = Signal::new(SignalId::Api, 3, 1);
        s.observe(ProbeReason::Timeout);
        s.observe(ProbeReason::Timeout);
        s.forget_streak();
        s.observe(ProbeReason::Timeout);
        assert!(s.is_up(), "two failures before the forget must not count");
        assert_eq!(s.snapshot().last_reason, Some(ProbeReason::Timeout));
    }
}

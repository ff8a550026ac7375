//! Per-signal hysteresis with Kubernetes probe semantics: a signal goes down after
//! `failure_threshold` consecutive failures and up again after `success_threshold`
//! consecutive passes.

use crate::model::ProbeReason;
use serde::Serialize;

/// One signal's hysteresis state.
#[derive(Debug, Clone)]
pub struct Signal {
    name: String,
    up: bool,
    consecutive_failures: u32,
    consecutive_successes: u32,
    last_reason: Option<ProbeReason>,
    failure_threshold: u32,
    success_threshold: u32,
}

/// What `/status` and the metrics show of a signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignalSnapshot {
    pub name: String,
    pub up: bool,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    /// `None` until the first observation.
    pub last_reason: Option<ProbeReason>,
}

impl Signal {
    /// A new signal starts up: a restarted daemon has no evidence of failure.
    pub fn new(name: impl Into<String>, failure_threshold: u32, success_threshold: u32) -> Self {
        Signal {
            name: name.into(),
            up: true,
            consecutive_failures: 0,
            consecutive_successes: 0,
            last_reason: None,
            failure_threshold: failure_threshold.max(1),
            success_threshold: success_threshold.max(1),
        }
    }

    /// Feeds one probe result; returns true when the signal changed between up and down.
    pub fn observe(&mut self, reason: ProbeReason) -> bool {
        self.last_reason = Some(reason);
        let was_up = self.up;
        if reason == ProbeReason::Ok {
            self.consecutive_failures = 0;
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            if !self.up && self.consecutive_successes >= self.success_threshold {
                self.up = true;
            }
        } else {
            self.consecutive_successes = 0;
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            if self.up && self.consecutive_failures >= self.failure_threshold {
                self.up = false;
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

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// True when the last probe failed (whether or not the signal is down yet).
    pub fn is_failing(&self) -> bool {
        self.consecutive_failures > 0
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn snapshot(&self) -> SignalSnapshot {
        SignalSnapshot {
            name: self.name.clone(),
            up: self.up,
            consecutive_failures: self.consecutive_failures,
            consecutive_successes: self.consecutive_successes,
            last_reason: self.last_reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_down_only_after_failure_threshold_consecutive_failures() {
        let mut s = Signal::new("api", 3, 1);
        assert!(!s.observe(ProbeReason::Timeout));
        assert!(!s.observe(ProbeReason::Timeout));
        assert!(s.is_up());
        assert!(s.observe(ProbeReason::Timeout));
        assert!(!s.is_up());
    }

    #[test]
    fn a_pass_resets_the_failure_run() {
        let mut s = Signal::new("api", 3, 1);
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
        let mut s = Signal::new("api", 1, 2);
        s.observe(ProbeReason::Unready);
        assert!(!s.is_up());
        assert!(!s.observe(ProbeReason::Ok));
        assert!(!s.is_up());
        assert!(s.observe(ProbeReason::Ok));
        assert!(s.is_up());
    }

    #[test]
    fn forget_streak_keeps_state_but_drops_evidence() {
        let mut s = Signal::new("api", 3, 1);
        s.observe(ProbeReason::Timeout);
        s.observe(ProbeReason::Timeout);
        s.forget_streak();
        s.observe(ProbeReason::Timeout);
        assert!(s.is_up(), "two failures before the forget must not count");
        assert_eq!(s.snapshot().last_reason, Some(ProbeReason::Timeout));
    }
}

//! Per-signal hysteresis with Kubernetes probe semantics: a signal goes down after
//! `failure_threshold` consecutive answers that are down evidence and up again after
//! `success_threshold` consecutive passes. An answer that is *unknown* (the watcher
//! cannot tell: credentials, permissions, certificates, a selection matching nothing)
//! is neither: it breaks both runs, and a signal whose latest answer is unknown never
//! counts as down (safety invariant 1).
//!
//! Runs are counted in time, not in ticks: the daemon ticks at once on an event (a watch
//! broken, a Pod turning unready) besides its schedule, so two answers may come closer
//! than one interval. A failure that comes less than [`min_spacing`] after the previous
//! counted failure of the same run is not counted: it neither advances nor resets the
//! run. So `failure_threshold` counted failures always span at least
//! `(failure_threshold − 1) × min_spacing`, however many ticks the events add, and a
//! blip shorter than that never takes a signal down. The same holds for runs of unknown
//! answers (`primary_unobservable`). A pass always counts, and a failure that starts a
//! run (after a pass or an unknown answer) always counts: detection starts at the event.

use crate::model::{Evidence, ProbeReason, SignalId};
use serde::Serialize;
use std::time::{Duration, Instant};

/// The shortest time between two counted failures (or unknown answers) of one run: the
/// interval less 5 %.
///
/// Why not the whole interval: the daemon's ticks of one schedule are one interval apart
/// by their deadlines, but a tick starts when the runtime gets to it, at or after its
/// deadline, never before. A tick that starts a few milliseconds late (a busy runtime,
/// two shared cores) followed by one on time are less than one interval apart; a strict
/// bound would drop the second failure and delay a promotion by a whole interval. 5 %
/// (50 ms at 1 s) is far above the scheduling delays of a healthy daemon (its ticks take
/// a few milliseconds) and costs at most 5 % of the blip tolerance, and only where
/// ticks of separate events fall that close; the daemon's own schedule after an event
/// keeps its observations one interval apart.
pub fn min_spacing(interval: Duration) -> Duration {
    interval.saturating_sub(interval / 20)
}

/// One signal's hysteresis state.
#[derive(Debug, Clone)]
pub struct Signal {
    id: SignalId,
    up: bool,
    consecutive_failures: u32,
    consecutive_successes: u32,
    consecutive_unknown: u32,
    /// Unknown answers of the current run that no down evidence of the API explains
    /// (see [`Signal::excuse_unknown`]): only these make the watcher blind.
    blind_unknown: u32,
    last_reason: Option<ProbeReason>,
    failure_threshold: u32,
    success_threshold: u32,
    /// See [`min_spacing`].
    spacing: Duration,
    /// When the last counted failure of the current run was observed.
    last_failure_at: Option<Instant>,
    /// When the last counted unknown answer of the current run was observed.
    last_unknown_at: Option<Instant>,
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
    /// A new signal starts up: a restarted daemon has no evidence of failure. Two counted
    /// failures of a run are at least `spacing` apart (see [`min_spacing`]).
    pub fn new(
        id: SignalId,
        failure_threshold: u32,
        success_threshold: u32,
        spacing: Duration,
    ) -> Self {
        Signal {
            id,
            up: true,
            consecutive_failures: 0,
            consecutive_successes: 0,
            consecutive_unknown: 0,
            blind_unknown: 0,
            last_reason: None,
            failure_threshold: failure_threshold.max(1),
            success_threshold: success_threshold.max(1),
            spacing,
            last_failure_at: None,
            last_unknown_at: None,
        }
    }

    /// Feeds one probe result observed at `now`; returns true when the signal changed
    /// between up and down.
    pub fn observe(&mut self, now: Instant, reason: ProbeReason) -> bool {
        self.last_reason = Some(reason);
        let was_up = self.up;
        let spaced = |last: Option<Instant>| {
            last.is_none_or(|at| now.saturating_duration_since(at) >= self.spacing)
        };
        match reason.evidence() {
            Evidence::Pass => {
                self.consecutive_failures = 0;
                self.consecutive_unknown = 0;
                self.blind_unknown = 0;
                self.consecutive_successes = self.consecutive_successes.saturating_add(1);
                if !self.up && self.consecutive_successes >= self.success_threshold {
                    self.up = true;
                }
            }
            Evidence::Down => {
                if self.consecutive_failures > 0 && !spaced(self.last_failure_at) {
                    // Too soon after the run's last counted failure: not counted.
                    return false;
                }
                self.consecutive_successes = 0;
                self.consecutive_unknown = 0;
                self.blind_unknown = 0;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.last_failure_at = Some(now);
                if self.up && self.consecutive_failures >= self.failure_threshold {
                    self.up = false;
                }
            }
            Evidence::Unknown => {
                // Neither a pass nor a failure: both runs are broken, so evidence on
                // either side of a blind spot is never added up (whenever it comes: a
                // broken run only delays a promotion). Only the run of unknown answers
                // is spaced.
                self.consecutive_successes = 0;
                self.consecutive_failures = 0;
                if self.consecutive_unknown == 0 || spaced(self.last_unknown_at) {
                    self.consecutive_unknown = self.consecutive_unknown.saturating_add(1);
                    self.blind_unknown = self.blind_unknown.saturating_add(1);
                    self.last_unknown_at = Some(now);
                }
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

    /// Starts afresh, as a new signal does, keeping only the latest answer for
    /// display: used after the loop stalled, when nothing observed before the gap may
    /// be added to what comes after it (a signal that was down must fail
    /// `failure_threshold` times again before it counts).
    pub fn restart(&mut self) {
        let last_reason = self.last_reason;
        *self = Signal::new(
            self.id.clone(),
            self.failure_threshold,
            self.success_threshold,
            self.spacing,
        );
        self.last_reason = last_reason;
    }

    /// The latest answer, unknown, follows from down evidence of another signal (the
    /// primary's API refused or timed out in the same tick, so a watch it feeds could
    /// not be read): it is part of the primary's outage, not a blind spot of the
    /// watcher. The run of unknown answers that makes the watcher blind starts again
    /// after it. Nothing else changes: the answer is still unknown, never down.
    pub fn excuse_unknown(&mut self) {
        if self
            .last_reason
            .is_some_and(|r| r.evidence() == Evidence::Unknown)
        {
            self.blind_unknown = 0;
        }
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
    /// row that no down evidence of the API explains (see [`Signal::excuse_unknown`]);
    /// the reason is the latest answer's.
    pub fn unobservable(&self) -> Option<ProbeReason> {
        (self.blind_unknown >= self.failure_threshold)
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

    const INTERVAL: Duration = Duration::from_secs(1);

    /// A signal fed once per interval unless told otherwise.
    struct Ticked {
        signal: Signal,
        now: Instant,
    }

    impl Ticked {
        fn new(id: SignalId, failure_threshold: u32, success_threshold: u32) -> Self {
            let spacing = min_spacing(INTERVAL);
            Ticked {
                signal: Signal::new(id, failure_threshold, success_threshold, spacing),
                now: Instant::now(),
            }
        }

        fn tick(&mut self, reason: ProbeReason) -> bool {
            self.after(INTERVAL, reason)
        }

        fn after(&mut self, gap: Duration, reason: ProbeReason) -> bool {
            self.now += gap;
            self.signal.observe(self.now, reason)
        }
    }

    impl std::ops::Deref for Ticked {
        type Target = Signal;
        fn deref(&self) -> &Signal {
            &self.signal
        }
    }

    impl std::ops::DerefMut for Ticked {
        fn deref_mut(&mut self) -> &mut Signal {
            &mut self.signal
        }
    }

    #[test]
    fn goes_down_only_after_failure_threshold_consecutive_failures() {
        let mut s = Ticked::new(SignalId::Api, 3, 1);
        assert!(!s.tick(ProbeReason::Timeout));
        assert!(!s.tick(ProbeReason::Timeout));
        assert!(s.is_up());
        assert!(s.tick(ProbeReason::Timeout));
        assert!(!s.is_up());
    }

    #[test]
    fn a_pass_resets_the_failure_run() {
        let mut s = Ticked::new(SignalId::Api, 3, 1);
        for _ in 0..1000 {
            s.tick(ProbeReason::Connect);
            s.tick(ProbeReason::Connect);
            s.tick(ProbeReason::Ok);
        }
        assert!(s.is_up());
        assert_eq!(s.snapshot().consecutive_failures, 0);
    }

    #[test]
    fn comes_back_up_after_success_threshold_passes() {
        let mut s = Ticked::new(SignalId::Api, 1, 2);
        s.tick(ProbeReason::Unready);
        assert!(!s.is_up());
        assert!(!s.tick(ProbeReason::Ok));
        assert!(!s.is_up());
        assert!(s.tick(ProbeReason::Ok));
        assert!(s.is_up());
    }

    #[test]
    fn unknown_never_counts_as_down_and_breaks_the_failure_run() {
        let mut s = Ticked::new(SignalId::Workload("x".into()), 3, 1);
        for _ in 0..100 {
            s.tick(ProbeReason::Forbidden);
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
            s.tick(r);
        }
        assert!(s.is_up(), "a blind tick in between must break the run");
        assert_eq!(s.unobservable(), None);
    }

    #[test]
    fn a_down_signal_whose_answer_turns_unknown_stops_counting() {
        let mut s = Ticked::new(SignalId::Api, 1, 1);
        s.tick(ProbeReason::Refused);
        assert!(s.counts_down());
        s.tick(ProbeReason::Tls);
        assert!(!s.is_up(), "hysteresis state is kept");
        assert!(
            !s.counts_down(),
            "but it no longer counts toward the quorum"
        );
        s.tick(ProbeReason::Refused);
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
        let mut s = Ticked::new(SignalId::Api, 3, 1);
        s.tick(ProbeReason::Timeout);
        s.tick(ProbeReason::Timeout);
        s.forget_streak();
        s.tick(ProbeReason::Timeout);
        assert!(s.is_up(), "two failures before the forget must not count");
        assert_eq!(s.snapshot().last_reason, Some(ProbeReason::Timeout));
    }

    #[test]
    fn failures_closer_than_the_spacing_are_not_counted() {
        let ms = Duration::from_millis;
        let mut s = Ticked::new(SignalId::Api, 3, 1);
        s.tick(ProbeReason::Ok);
        // The first failure counts at once, whenever it comes.
        s.after(ms(100), ProbeReason::Refused);
        assert_eq!(s.snapshot().consecutive_failures, 1);
        // Event ticks within the interval add nothing, and reset nothing.
        for _ in 0..9 {
            assert!(!s.after(ms(90), ProbeReason::Refused));
        }
        assert_eq!(s.snapshot().consecutive_failures, 1);
        assert_eq!(s.snapshot().last_reason, Some(ProbeReason::Refused));
        // 950 ms after the last counted one (the 5 % tolerance): counted.
        s.after(ms(140), ProbeReason::Refused);
        assert_eq!(s.snapshot().consecutive_failures, 2);
        // 940 ms: not yet; 1 s after the second counted failure: down.
        assert!(!s.after(ms(940), ProbeReason::Refused));
        assert!(s.is_up());
        assert!(s.after(ms(60), ProbeReason::Refused));
        assert!(!s.is_up() && s.counts_down());
    }

    #[test]
    fn a_pass_always_counts_and_a_failure_after_it_starts_a_new_run_at_once() {
        let ms = Duration::from_millis;
        let mut s = Ticked::new(SignalId::Api, 3, 1);
        s.tick(ProbeReason::Refused);
        s.tick(ProbeReason::Refused);
        s.after(ms(10), ProbeReason::Ok);
        assert_eq!(s.snapshot().consecutive_failures, 0);
        assert_eq!(s.snapshot().consecutive_successes, 1);
        s.after(ms(10), ProbeReason::Refused);
        assert_eq!(s.snapshot().consecutive_failures, 1, "a new run, counted");
        s.after(ms(10), ProbeReason::Ok);
        s.after(ms(10), ProbeReason::Ok);
        assert_eq!(
            s.snapshot().consecutive_successes,
            2,
            "passes are never spaced"
        );
    }

    #[test]
    fn unknown_answers_break_runs_at_once_but_their_own_run_is_spaced() {
        let ms = Duration::from_millis;
        let mut s = Ticked::new(SignalId::Api, 3, 1);
        s.tick(ProbeReason::Refused);
        s.tick(ProbeReason::Refused);
        // A blind answer between two failures breaks the run, even right away.
        s.after(ms(10), ProbeReason::Forbidden);
        assert_eq!(s.snapshot().consecutive_failures, 0);
        s.after(ms(10), ProbeReason::Refused);
        assert_eq!(s.snapshot().consecutive_failures, 1);
        // Unknown answers every 100 ms for 2 s count as the answers of one per interval:
        // at 0.1 s and 1.1 s.
        for _ in 0..20 {
            s.after(ms(100), ProbeReason::Forbidden);
        }
        assert_eq!(s.snapshot().consecutive_unknown, 2);
        assert!(s.unobservable().is_none(), "{:?}", s.snapshot());
        s.after(ms(950), ProbeReason::Forbidden);
        assert_eq!(s.unobservable(), Some(ProbeReason::Forbidden));
    }
}

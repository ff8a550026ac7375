//! Leader election on one Lease per group, `kube-failover-<group>-leader`, decided tick by
//! tick. Pure bookkeeping: the caller reads and writes the Leases and reports back.
//!
//! The leader Lease names its holder and is written when a term starts or ends. The
//! holder's sign of life is its observer Lease in the same namespace (named on the
//! leader Lease, the *heartbeat*), which the holder renews for all its groups at once
//! (see [`super::presence`]): every renewal changes a resourceVersion the others watch.
//!
//! Safety does not depend on clocks agreeing between hosts:
//! - a non-holder takes the Lease over only after it has seen the Lease *and* its
//!   holder's heartbeat unchanged (same resourceVersions) for a whole lease duration on
//!   its own monotonic clock, the heartbeat read fresh from the API just before (never
//!   from a cache alone); a view it could not keep current (a watch not established)
//!   restarts that clock;
//! - the holder writes only until `renew_deadline` after it *sent* its last successful
//!   renewal, and `renew_deadline < lease_duration`, so it has stopped before anyone may
//!   take over. A renewal counts only when its answer came while the term still ran
//!   ([`Election::renewed`]): a heartbeat that landed after a take-over (possible, as it
//!   does not write the leader Lease) never extends a term.
//!
//! The record's epoch and resourceVersion stay the fencing token: a write from a deposed
//! leader that was in flight still fails on the record's precondition.

use std::time::{Duration, Instant};

/// How long a Lease is held and when its holder stops writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderTiming {
    /// A Lease not renewed for this long may be taken over.
    pub lease_duration: Duration,
    /// The holder stops writing this long after its last successful renewal was sent.
    pub renew_deadline: Duration,
}

/// The leader Lease as read, reduced to what the election needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// `metadata.resourceVersion`.
    pub resource_version: String,
    /// `spec.holderIdentity`, `None` when empty (released).
    pub holder: Option<String>,
    /// The holder's per-process instance id (annotation).
    pub instance: Option<String>,
    /// `spec.leaseTransitions`.
    pub transitions: i32,
    /// The holder's heartbeat: the resourceVersion of its observer Lease, `None` when
    /// it has none, the Lease names none, or another process writes it (then it is no
    /// sign of life of this holder).
    pub heartbeat: Option<String>,
}

/// How readily a free Lease is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Below its fair share: a missing, released or expired Lease is taken at once.
    Eager,
    /// At its share: such a Lease is left to the others for one more lease duration,
    /// and taken only when nobody did meanwhile.
    Patient,
    /// Not yet (just started, the other instances are not known yet): nothing is
    /// taken, and how long a missing or released Lease has been free is counted only
    /// afterwards.
    Hold,
}

/// What to write this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Someone else holds a live Lease: nothing to write.
    Follow,
    /// This instance holds the Lease and its term runs: the renewals of its observer
    /// Lease keep it ([`Election::renewed`]), nothing to write here.
    Keep,
    /// No Lease exists: create it, held by this instance.
    Create,
    /// Write the Lease at `resource_version` with no holder: this instance hands the
    /// group over (it stopped writing before).
    Release {
        /// The precondition.
        resource_version: String,
    },
    /// Replace the Lease at `resource_version`: a renewal (the holder's term ran out),
    /// or a take-over (`acquire`) of a free or expired Lease.
    Replace {
        /// The precondition.
        resource_version: String,
        /// A new term starts (acquire time and transition count change).
        acquire: bool,
        /// `spec.leaseTransitions` to write.
        transitions: i32,
    },
}

/// How a planned write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteResult {
    /// Stored.
    Ok,
    /// Someone else wrote first (409, or the Lease is gone): not the leader.
    Conflict,
    /// Any other failure (timeout, 5xx, 403): the term runs out at its deadline.
    Failed,
}

/// What a non-holder watches for change: the leader Lease's resourceVersion (`""`
/// while it is missing) and its holder's heartbeat.
type Observed = (String, Option<String>);

/// One group's election state in this instance.
#[derive(Debug)]
pub struct Election {
    identity: String,
    instance: String,
    timing: LeaderTiming,
    /// This instance may write until then.
    leading_until: Option<Instant>,
    /// The leader Lease's last resourceVersion and heartbeat seen, and since when (local
    /// clock).
    observed: Option<(Observed, Instant)>,
    /// The holder last seen (for `/status`).
    holder: Option<String>,
    /// `spec.leaseTransitions` last seen.
    transitions: i32,
}

impl Election {
    /// A follower until it wins a Lease.
    pub fn new(identity: String, instance: String, timing: LeaderTiming) -> Self {
        Election {
            identity,
            instance,
            timing,
            leading_until: None,
            observed: None,
            holder: None,
            transitions: 0,
        }
    }

    fn is_ours(&self, lease: &LeaseView) -> bool {
        lease.holder.as_deref() == Some(self.identity.as_str())
            && lease.instance.as_deref() == Some(self.instance.as_str())
    }

    /// Decides what to write, given the Lease read at `now` (`None`: it does not exist).
    ///
    /// `take` says how readily this instance takes a missing, released or expired
    /// Lease ([`Take`], from [`crate::coord::spread`]).
    pub fn plan(&mut self, now: Instant, lease: Option<&LeaseView>, take: Take) -> Plan {
        // A missing Lease is tracked as the resourceVersion "", so that how long it has
        // been missing is known too. While holding back, the clock of a missing or
        // released Lease does not run (that of a held one does: it expires anyway).
        let seen_now: Observed = lease.map_or((String::new(), None), |l| {
            (l.resource_version.clone(), l.heartbeat.clone())
        });
        let free = lease.is_none_or(|l| l.holder.is_none());
        match &self.observed {
            Some((seen, _)) if *seen == seen_now && !(take == Take::Hold && free) => {}
            _ => self.observed = Some((seen_now, now)),
        }
        let unchanged_for = self.observed.as_ref().map_or(Duration::ZERO, |(_, since)| {
            now.saturating_duration_since(*since)
        });
        let patience = match take {
            Take::Eager => Duration::ZERO,
            Take::Patient => self.timing.lease_duration,
            Take::Hold => Duration::MAX,
        };
        let Some(lease) = lease else {
            self.holder = None;
            return if unchanged_for >= patience {
                Plan::Create
            } else {
                Plan::Follow
            };
        };
        self.holder = lease.holder.clone();
        self.transitions = lease.transitions;
        if self.is_ours(lease) {
            return if self.may_write(now) {
                Plan::Keep
            } else {
                Plan::Replace {
                    resource_version: lease.resource_version.clone(),
                    acquire: false,
                    transitions: lease.transitions,
                }
            };
        }
        // Another holder (or this identity in another process): never write beside it.
        self.leading_until = None;
        // How long the Lease has been free: since it was seen released, or since it
        // expired (a whole lease duration seen unchanged).
        let free_for = if lease.holder.is_none() {
            Some(unchanged_for)
        } else {
            unchanged_for.checked_sub(self.timing.lease_duration)
        };
        if free_for.is_some_and(|f| f >= patience) {
            Plan::Replace {
                resource_version: lease.resource_version.clone(),
                acquire: true,
                transitions: lease.transitions.saturating_add(1),
            }
        } else {
            Plan::Follow
        }
    }

    /// The planned write, sent at `sent_at`, ended with `result`.
    pub fn written(&mut self, sent_at: Instant, result: WriteResult) {
        match result {
            WriteResult::Ok => {
                self.leading_until = sent_at.checked_add(self.timing.renew_deadline);
                self.holder = Some(self.identity.clone());
                // Our own write changed the resourceVersion: not a sign of life of
                // anyone else, but the clock restarts anyway (the next read sets it).
                self.observed = None;
            }
            WriteResult::Conflict => self.leading_until = None,
            WriteResult::Failed => {}
        }
    }

    /// A renewal of this instance's heartbeat (its observer Lease), sent at `sent_at`,
    /// succeeded with its answer at `answered_at`: the term runs on until `sent_at +
    /// renew_deadline`, but only if it still ran when the answer came. A term that ran
    /// out is never revived by a heartbeat (someone may have taken the Lease over
    /// meanwhile): it starts again only with a write of the leader Lease itself.
    pub fn renewed(&mut self, sent_at: Instant, answered_at: Instant) {
        if let Some(until) = self.leading_until
            && answered_at < until
            && let Some(extended) = sent_at.checked_add(self.timing.renew_deadline)
        {
            self.leading_until = Some(until.max(extended));
        }
    }

    /// The Lease could not be seen current (its watch is not established): how long it
    /// has been unchanged is not known, so the clock of a take-over starts again from
    /// the next view.
    pub fn unseen(&mut self) {
        self.observed = None;
    }

    /// This instance may write now: it holds the Lease and its renew deadline has not
    /// passed.
    pub fn may_write(&self, now: Instant) -> bool {
        self.leading_until.is_some_and(|until| now < until)
    }

    /// This instance won the Lease and its deadline has not passed yet, or it did and
    /// the deadline passed without a renewal (`Some(false)`); `None` when it does not
    /// hold it.
    pub fn term(&self, now: Instant) -> Option<bool> {
        self.leading_until.map(|until| now < until)
    }

    /// Forgets the term (the deadline passed and was reported).
    pub fn step_down(&mut self) {
        self.leading_until = None;
    }

    /// Whether the group has a live leader as far as this instance knows: itself within
    /// its term, or a holder whose Lease or heartbeat changed within a lease duration
    /// (a view this instance could not keep current knows of none).
    pub fn led(&self, now: Instant) -> bool {
        self.may_write(now)
            || (self.holder.is_some()
                && self.observed.as_ref().is_some_and(|(_, since)| {
                    now.saturating_duration_since(*since) < self.timing.lease_duration
                }))
    }

    /// `spec.leaseTransitions` as last seen.
    pub fn transitions(&self) -> i32 {
        self.transitions
    }

    /// The holder last seen, this instance included.
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: LeaderTiming = LeaderTiming {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
    };

    fn lease(rv: &str, holder: Option<&str>, instance: &str) -> LeaseView {
        LeaseView {
            resource_version: rv.into(),
            holder: holder.map(str::to_string),
            instance: Some(instance.into()),
            transitions: 0,
            heartbeat: None,
        }
    }

    fn beating(rv: &str, holder: &str, instance: &str, heartbeat: &str) -> LeaseView {
        LeaseView {
            heartbeat: Some(heartbeat.into()),
            ..lease(rv, Some(holder), instance)
        }
    }

    #[test]
    fn creates_a_missing_lease_and_leads_until_the_deadline() {
        let t0 = Instant::now();
        let mut e = Election::new("a".into(), "i1".into(), TIMING);
        assert_eq!(e.plan(t0, None, Take::Eager), Plan::Create);
        assert!(!e.may_write(t0));
        e.written(t0, WriteResult::Ok);
        assert!(e.may_write(t0 + Duration::from_millis(1999)));
        assert!(
            !e.may_write(t0 + Duration::from_secs(2)),
            "the deadline is hard"
        );
        // While the term runs, the heartbeat keeps it: nothing to write.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            e.plan(t1, Some(&lease("2", Some("a"), "i1")), Take::Eager),
            Plan::Keep
        );
        // A failed renewal does not extend the term.
        e.written(t1, WriteResult::Failed);
        assert!(!e.may_write(t0 + Duration::from_secs(2)));
        assert_eq!(e.term(t0 + Duration::from_secs(2)), Some(false));
        // Run out: the Lease is written again to start a new term.
        assert!(matches!(
            e.plan(
                t0 + Duration::from_secs(2),
                Some(&lease("2", Some("a"), "i1")),
                Take::Eager
            ),
            Plan::Replace { acquire: false, .. }
        ));
    }

    #[test]
    fn heartbeats_extend_a_running_term_from_their_send_time_and_never_revive_one() {
        let s = Duration::from_millis;
        let t0 = Instant::now();
        let mut e = Election::new("a".into(), "i1".into(), TIMING);
        // Not leading: a heartbeat makes no term.
        e.renewed(t0, t0 + s(10));
        assert!(!e.may_write(t0 + s(20)));
        assert_eq!(e.plan(t0, None, Take::Eager), Plan::Create);
        e.written(t0, WriteResult::Ok);
        // Sent at 1 s, answered at 1.2 s: the term runs to 3 s.
        e.renewed(t0 + s(1000), t0 + s(1200));
        assert!(e.may_write(t0 + s(2999)));
        assert!(!e.may_write(t0 + s(3000)));
        // An older renewal answered late never shortens it.
        e.renewed(t0 + s(500), t0 + s(1300));
        assert!(e.may_write(t0 + s(2999)));
        // Answered after the term ran out (3 s): not counted, though sent before.
        e.renewed(t0 + s(2900), t0 + s(3100));
        assert!(!e.may_write(t0 + s(3100)));
        assert_eq!(e.term(t0 + s(3100)), Some(false));
    }

    #[test]
    fn a_beating_holder_keeps_its_lease_and_a_silent_one_loses_it() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let mut e = Election::new("b".into(), "i2".into(), TIMING);
        // The Lease itself never changes; the holder's heartbeat does.
        assert_eq!(
            e.plan(t0, Some(&beating("7", "a", "i1", "100")), Take::Eager),
            Plan::Follow
        );
        assert_eq!(
            e.plan(
                t0 + s(2),
                Some(&beating("7", "a", "i1", "101")),
                Take::Eager
            ),
            Plan::Follow
        );
        assert_eq!(
            e.plan(
                t0 + s(4),
                Some(&beating("7", "a", "i1", "102")),
                Take::Eager
            ),
            Plan::Follow
        );
        // Silent since 4 s: taken over a lease duration later, not before.
        assert_eq!(
            e.plan(
                t0 + Duration::from_millis(6900),
                Some(&beating("7", "a", "i1", "102")),
                Take::Eager
            ),
            Plan::Follow
        );
        assert!(matches!(
            e.plan(
                t0 + s(7),
                Some(&beating("7", "a", "i1", "102")),
                Take::Eager
            ),
            Plan::Replace { acquire: true, .. }
        ));
    }

    #[test]
    fn an_unseen_lease_restarts_the_take_over_clock() {
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let mut e = Election::new("b".into(), "i2".into(), TIMING);
        let held = beating("7", "a", "i1", "100");
        assert_eq!(e.plan(t0, Some(&held), Take::Eager), Plan::Follow);
        // The watch was lost at 2 s: whatever happened meanwhile was not seen.
        e.unseen();
        assert_eq!(e.plan(t0 + s(3), Some(&held), Take::Eager), Plan::Follow);
        assert_eq!(
            e.plan(t0 + Duration::from_millis(5900), Some(&held), Take::Eager),
            Plan::Follow
        );
        assert!(matches!(
            e.plan(t0 + s(6), Some(&held), Take::Eager),
            Plan::Replace { acquire: true, .. }
        ));
    }

    #[test]
    fn takes_over_only_after_a_whole_lease_duration_unchanged() {
        let t0 = Instant::now();
        let mut e = Election::new("b".into(), "i2".into(), TIMING);
        let held = lease("7", Some("a"), "i1");
        assert_eq!(e.plan(t0, Some(&held), Take::Eager), Plan::Follow);
        assert_eq!(
            e.plan(t0 + Duration::from_millis(2900), Some(&held), Take::Eager),
            Plan::Follow
        );
        // Renewed by its holder: the clock restarts.
        let renewed = lease("8", Some("a"), "i1");
        assert_eq!(
            e.plan(t0 + Duration::from_secs(4), Some(&renewed), Take::Eager),
            Plan::Follow
        );
        assert_eq!(
            e.plan(t0 + Duration::from_secs(6), Some(&renewed), Take::Eager),
            Plan::Follow
        );
        assert_eq!(
            e.plan(t0 + Duration::from_secs(7), Some(&renewed), Take::Eager),
            Plan::Replace {
                resource_version: "8".into(),
                acquire: true,
                transitions: 1
            }
        );
        assert_eq!(e.holder(), Some("a"));
    }

    #[test]
    fn the_same_identity_in_another_process_is_someone_else() {
        let t0 = Instant::now();
        let mut e = Election::new("a".into(), "mine".into(), TIMING);
        assert_eq!(
            e.plan(t0, Some(&lease("1", Some("a"), "theirs")), Take::Eager),
            Plan::Follow
        );
        assert!(!e.may_write(t0));
    }

    #[test]
    fn a_released_lease_is_taken_at_once_and_a_lost_race_is_not_leading() {
        let t0 = Instant::now();
        let mut e = Election::new("b".into(), "i2".into(), TIMING);
        assert!(matches!(
            e.plan(t0, Some(&lease("3", None, "")), Take::Eager),
            Plan::Replace { acquire: true, .. }
        ));
        e.written(t0, WriteResult::Conflict);
        assert!(!e.may_write(t0));
        // A leader that sees another holder stops at once.
        e.written(t0, WriteResult::Ok);
        assert!(e.may_write(t0));
        assert_eq!(
            e.plan(t0, Some(&lease("4", Some("c"), "i3")), Take::Eager),
            Plan::Follow
        );
        assert!(!e.may_write(t0));
    }

    #[test]
    fn an_instance_at_its_share_waits_one_more_lease_duration() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut e = Election::new("b".into(), "i2".into(), TIMING);
        // Missing: left to the others for a lease duration, then created.
        assert_eq!(e.plan(t0, None, Take::Patient), Plan::Follow);
        assert_eq!(
            e.plan(t0 + Duration::from_millis(2900), None, Take::Patient),
            Plan::Follow
        );
        assert_eq!(e.plan(t0 + s(3), None, Take::Patient), Plan::Create);
        // Released: taken at once when eager, after a lease duration otherwise.
        let free = lease("3", None, "");
        assert_eq!(e.plan(t0 + s(4), Some(&free), Take::Patient), Plan::Follow);
        assert!(matches!(
            e.plan(t0 + s(4), Some(&free), Take::Eager),
            Plan::Replace { acquire: true, .. }
        ));
        assert!(matches!(
            e.plan(t0 + s(7), Some(&free), Take::Patient),
            Plan::Replace { acquire: true, .. }
        ));
        // Expired (held, unchanged for a lease duration): eager at 3 s, else at 6 s.
        let held = lease("4", Some("a"), "i1");
        assert_eq!(e.plan(t0 + s(10), Some(&held), Take::Patient), Plan::Follow);
        assert_eq!(e.plan(t0 + s(13), Some(&held), Take::Patient), Plan::Follow);
        assert!(matches!(
            e.plan(t0 + s(13), Some(&held), Take::Eager),
            Plan::Replace { acquire: true, .. }
        ));
        assert_eq!(
            e.plan(
                t0 + Duration::from_millis(15_900),
                Some(&held),
                Take::Patient
            ),
            Plan::Follow
        );
        assert!(matches!(
            e.plan(t0 + s(16), Some(&held), Take::Patient),
            Plan::Replace { acquire: true, .. }
        ));
        // Renewed meanwhile: the wait starts again.
        let renewed = lease("5", Some("a"), "i1");
        assert_eq!(
            e.plan(t0 + s(17), Some(&renewed), Take::Patient),
            Plan::Follow
        );
        assert_eq!(
            e.plan(t0 + s(22), Some(&renewed), Take::Patient),
            Plan::Follow
        );
        // Holding back: nothing taken; a released Lease's wait starts only afterwards.
        let free = lease("6", None, "");
        assert_eq!(e.plan(t0 + s(30), Some(&free), Take::Hold), Plan::Follow);
        assert_eq!(e.plan(t0 + s(32), Some(&free), Take::Hold), Plan::Follow);
        assert_eq!(e.plan(t0 + s(34), Some(&free), Take::Patient), Plan::Follow);
        assert!(matches!(
            e.plan(t0 + s(35), Some(&free), Take::Patient),
            Plan::Replace { acquire: true, .. }
        ));
        // A held Lease expires while holding back: taken as soon as eager.
        let held = lease("7", Some("a"), "i1");
        assert_eq!(e.plan(t0 + s(40), Some(&held), Take::Hold), Plan::Follow);
        assert_eq!(e.plan(t0 + s(43), Some(&held), Take::Hold), Plan::Follow);
        assert!(matches!(
            e.plan(t0 + s(43), Some(&held), Take::Eager),
            Plan::Replace { acquire: true, .. }
        ));
    }
}

//! A group's coordination as `/status` shows it: role, leader, observers and how long
//! the group has had no leader.

use super::RoleNow;
use super::group::{GroupCoord, State};
use crate::status::{CoordStatus, Named, ObserverStatus};
use std::time::{Duration, Instant};

impl GroupCoord {
    /// The `/status` part. Its role and leader are as of `now`; the admin server reads
    /// them again when asked (see [`super::Roles`]).
    pub fn status(&self, now: Instant) -> CoordStatus {
        let st = self.lock();
        let RoleNow { role, leader } = st.role_now(now);
        let own = ObserverStatus {
            identity: self.identity.clone(),
            verdict: Named::Known(st.own.0),
            age_seconds: Some(0.0),
            fresh: true,
            this_instance: true,
            down_signals: st.own.2.clone(),
            down_since_unix: st.own.1,
        };
        let others = st.reports.iter().map(|r| ObserverStatus {
            identity: r.identity.clone(),
            verdict: Named::Known(r.verdict),
            age_seconds: r.age.map(|a| a.as_secs_f64()),
            fresh: r.age.is_some_and(|a| a <= self.ttl),
            this_instance: false,
            down_signals: r.down_signals.clone(),
            down_since_unix: r.down_since_unix,
        });
        CoordStatus {
            no_leader_seconds: no_leader_for(&st, now, self.timing.lease_duration)
                .map(|d| d.as_secs_f64()),
            leader,
            role: role.as_str().to_string(),
            quorum: self.quorum,
            expected: self.expected,
            observers: std::iter::once(own).chain(others).collect(),
        }
    }
}

/// How long the group has had no live leader in this instance's view, once that is
/// longer than a lease duration (the time a take-over may legitimately need).
fn no_leader_for(st: &State, now: Instant, lease_duration: Duration) -> Option<Duration> {
    st.leaderless_since
        .map(|since| now.saturating_duration_since(since))
        .filter(|d| *d > lease_duration)
}

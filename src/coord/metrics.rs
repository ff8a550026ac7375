//! The coordination metrics, registered with the daemon's other metrics, and this
//! instance's role in each group as it is at the moment it is asked ([`Roles`]).
//! `kube_failover_leader` is read from the coordination state when it is gathered, not
//! set at the end of a tick: a leader whose tick waits on an unreachable standby shows 0
//! from the instant its renew deadline passes (and a warning in the log).

use super::group::State;
use super::{Clock, Role};
use crate::metric_registry::IntGaugeFamily;
use crate::model::Verdict;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Opts, Registry};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Instant;

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace("kube_failover")
}

/// This instance's role in each of its groups, read from the groups' coordination state
/// when asked: `/status` and `kube_failover_leader` say what [`super::GroupCoord::may_write`]
/// says at that instant.
#[derive(Clone, Default)]
pub struct Roles {
    groups: Arc<RwLock<Vec<Joined>>>,
}

/// A group, its coordination state (gone with the group) and its clock.
type Joined = (String, Weak<Mutex<State>>, Clock);

/// One group's role at an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleNow {
    /// This instance's role.
    pub role: Role,
    /// The leader Lease's holder as last read (this instance while it leads).
    pub leader: Option<String>,
}

impl Roles {
    /// `group`'s coordination state is `state` from now on (a group joined again
    /// replaces its previous entry).
    pub(super) fn join(&self, group: &str, state: &Arc<Mutex<State>>, clock: Clock) {
        let mut groups = self.groups.write().unwrap_or_else(|p| p.into_inner());
        groups.retain(|(g, s, _)| g != group && s.strong_count() > 0);
        groups.push((group.to_string(), Arc::downgrade(state), clock));
    }

    /// The role of `group` at `now` (`None`: no such group in this process).
    pub fn of(&self, group: &str, now: Instant) -> Option<RoleNow> {
        let groups = self.groups.read().unwrap_or_else(|p| p.into_inner());
        let state = groups.iter().find(|(g, _, _)| g == group)?.1.upgrade()?;
        drop(groups);
        let st = state.lock().unwrap_or_else(|p| p.into_inner());
        Some(st.role_now(now))
    }

    /// Each group's role at `now`, in the order the groups joined: cheap (nothing is
    /// copied), for a reader that only needs to know whether anything changed.
    pub fn roles(&self, now: Instant) -> Vec<Role> {
        let groups = self.groups.read().unwrap_or_else(|p| p.into_inner());
        groups
            .iter()
            .map(|(_, s, _)| {
                s.upgrade().map_or(Role::Follower, |state| {
                    state.lock().unwrap_or_else(|p| p.into_inner()).role_at(now)
                })
            })
            .collect()
    }

    /// Every group's role at `now`, in the order the groups joined.
    pub fn all(&self, now: Instant) -> Vec<(String, RoleNow)> {
        self.each(|_| now)
    }

    /// Every group's role as of its own clock's now.
    fn all_now(&self) -> Vec<(String, RoleNow)> {
        self.each(Clock::now)
    }

    fn each(&self, now: impl Fn(&Clock) -> Instant) -> Vec<(String, RoleNow)> {
        let groups = self.groups.read().unwrap_or_else(|p| p.into_inner());
        groups
            .iter()
            .filter_map(|(g, s, clock)| {
                let state = s.upgrade()?;
                let st = state.lock().unwrap_or_else(|p| p.into_inner());
                Some((g.clone(), st.role_now(now(clock))))
            })
            .collect()
    }
}

/// `kube_failover_leader`, set from [`Roles`] each time it is gathered.
struct LeaderGauge {
    gauge: IntGaugeFamily,
    roles: Roles,
}

impl Collector for LeaderGauge {
    fn desc(&self) -> Vec<&Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for (group, now) in self.roles.all_now() {
            self.gauge
                .with_label_values(&[&group])
                .set(i64::from(now.role == Role::Leader));
        }
        self.gauge.collect()
    }
}

/// Leader, observers and identity clashes, per group.
#[derive(Clone)]
pub struct CoordMetrics {
    leader: IntGaugeFamily,
    /// Every group's role, read when asked (the leader gauge is derived from it).
    pub roles: Roles,
    observers: IntGaugeFamily,
    expected: IntGaugeFamily,
    identity_clash: IntGaugeFamily,
}

impl CoordMetrics {
    /// Creates and registers them: `kube_failover_leader` with `live` (a registry
    /// gathered at every request, never from a cached encoding), the others with
    /// `registry`.
    pub fn new(
        registry: &crate::metric_registry::MetricRegistry,
        live: &Registry,
    ) -> Result<Self, prometheus::Error> {
        let m = CoordMetrics {
            roles: Roles::default(),
            leader: IntGaugeFamily::new(
                opts(
                    "leader",
                    "1 while this instance leads the group (holds its leader Lease within the renew deadline), else 0.",
                ),
                &["group"],
            )?,
            observers: IntGaugeFamily::new(
                opts(
                    "observers",
                    "Fresh observers of the group (this instance included) by their verdict on the primary.",
                ),
                &["group", "verdict"],
            )?,
            expected: IntGaugeFamily::new(
                opts(
                    "observers_expected",
                    "policy.observers.expected of the group (0 when not set).",
                ),
                &["group"],
            )?,
            identity_clash: IntGaugeFamily::new(
                opts(
                    "identity_clash",
                    "1 while another process publishes under this instance's daemon.identity.",
                ),
                &["group"],
            )?,
        };
        live.register(Box::new(LeaderGauge {
            gauge: m.leader.clone(),
            roles: m.roles.clone(),
        }))?;
        registry.register(m.observers.clone())?;
        registry.register(m.expected.clone())?;
        registry.register(m.identity_clash.clone())?;
        Ok(m)
    }

    /// Every series of a group at 0 from the start.
    pub fn init_group(&self, group: &str, expected: Option<u32>) {
        self.leader.with_label_values(&[group]).set(0);
        for v in Verdict::ALL {
            self.observers
                .with_label_values(&[group, v.as_str()])
                .set(0);
        }
        self.expected
            .with_label_values(&[group])
            .set(i64::from(expected.unwrap_or(0)));
        self.identity_clash.with_label_values(&[group]).set(0);
    }

    /// The fresh observers' verdicts.
    pub fn set_observers(&self, group: &str, verdicts: &[Verdict]) {
        for v in Verdict::ALL {
            let n = verdicts.iter().filter(|x| **x == v).count();
            self.observers
                .with_label_values(&[group, v.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Another process publishes under this identity (or stopped).
    pub fn identity_clash(&self, group: &str, clash: bool) {
        self.identity_clash
            .with_label_values(&[group])
            .set(i64::from(clash));
    }
}

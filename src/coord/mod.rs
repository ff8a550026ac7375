//! Several daemon instances on the same groups, coordinated on Leases in one namespace
//! of each standby cluster (`coordination.namespace`, by default the groups' standby
//! namespace), so no other coordination service is needed:
//!
//! - one leader per group, on the Lease `kube-failover-<group>-leader`: only the leader
//!   carries out the engine's actions (record, scaling, Events);
//! - every instance publishes its verdict on the primary for each group in its
//!   observer Lease, one per standby cluster, `kube-failover.observer.<identity>`
//!   ([`presence`]); the leader promotes only when `policy.observers.quorum` fresh
//!   observers say `down` (decided by the engine). That Lease is also the heartbeat of
//!   the leader Leases the instance holds there, so one renewal keeps all of them, and
//!   the writes of an instance to a standby cluster do not grow with its groups or their
//!   namespaces;
//! - leadership spreads over the instances: each takes about its fair share of the
//!   groups (see `spread`);
//! - on shutdown a leader releases its Leases, so another instance takes over at once.
//!
//! The Leases are read from one watch of the coordination namespace's Leases, shared by
//! every group of the cluster ([`crate::kube::watch_cache`]): a tick reads memory. A
//! cache whose watch is not established makes the view unknown in the safe direction:
//! no other observer counts, and no Lease is taken over (the clock of a take-over
//! starts again from the next view); the leader keeps its term only while its own
//! renewals succeed. Leases are written with plain create/replace against a
//! resourceVersion (verbs get, list, watch, create, update); the cache is never trusted
//! for a take-over without a fresh read of the holder's heartbeat, nor after a 409
//! without a fresh read of the Lease. Writes of the leader Lease shed under load rather
//! than pile up: a few in flight per cluster at most, and none for a while after one
//! failed for another reason than a lost race
//! ([`presence::Presence::leader_write_permit`]).
//!
//! Files: [`group`] (one group's state machine), [`leader`] (the election, pure),
//! [`observer`] (verdicts in Leases), [`presence`] (the observer Lease), [`spread`]
//! (leadership shared out), [`lease`] (names, labels, annotations, parsing), `status`
//! (the `/status` part), [`clock`]. What one process's groups share is a
//! [`Coordination`], made once by the daemon: no process-wide state.

pub mod clock;
pub mod group;
pub mod leader;
pub mod lease;
mod metrics;
pub mod observer;
pub mod presence;
pub mod spread;
mod status;
#[cfg(test)]
mod tests;

pub use clock::Clock;
pub use group::GroupCoord;
pub use lease::{
    HEARTBEAT_ANNOTATION, INSTANCE_ANNOTATION, LEADING_ANNOTATION, ROLE_LABEL, VERDICTS_ANNOTATION,
    leader_lease_name,
};
pub use metrics::{CoordMetrics, RoleNow, Roles};

use crate::config::{Config, DaemonConfig};
use crate::kube::call::CallError;
use crate::kube::watch_cache::WatchStore;
use k8s_openapi::api::coordination::v1::Lease;
use leader::LeaderTiming;
use presence::Presence;
use spread::Spread;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// What the groups of one daemon process share: the process's instance id (written
/// with every Lease, so that two processes with the same `daemon.identity` are told
/// apart), the clock, the spread of its leadership over its groups, and one observer
/// Lease ([`Presence`]) per standby cluster and coordination namespace. The daemon makes
/// one; each test instance makes its own, as a separate process would.
pub struct Coordination {
    instance: String,
    clock: Clock,
    spread: Arc<Mutex<Spread>>,
    /// By Lease cache (one per cluster and namespace, living as long as its Presence).
    presences: Mutex<HashMap<usize, Weak<Presence>>>,
}

impl Coordination {
    /// For `config`'s groups, on the system clock; the spread's warm-up is the first
    /// group's observer ttl.
    pub fn new(config: &Config) -> Arc<Self> {
        let warm_up = config.groups.first().map_or(Duration::ZERO, |g| {
            g.policy
                .observers
                .ttl_or_default(config.daemon.probe_interval)
        });
        Self::with_clock(config, Clock::system(), warm_up)
    }

    /// For `config`'s groups, on `clock`, the spread warming up for `warm_up`.
    pub fn with_clock(config: &Config, clock: Clock, warm_up: Duration) -> Arc<Self> {
        Arc::new(Coordination {
            instance: random_instance_id(clock),
            clock,
            spread: Arc::new(Mutex::new(Spread::new(
                config.groups.len(),
                clock.now(),
                warm_up,
                config.daemon.lease_duration(),
            ))),
            presences: Mutex::new(HashMap::new()),
        })
    }

    /// This process's instance id.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// The spread of this process's leadership.
    pub fn spread(&self) -> &Arc<Mutex<Spread>> {
        &self.spread
    }

    /// This process's observer Lease for `store`'s namespace: made with the first group
    /// there, shared by the others.
    pub fn presence(
        self: &Arc<Self>,
        client: kube::Client,
        store: &Arc<WatchStore<Lease>>,
        namespace: &str,
        identity: &str,
        timeout: Duration,
        timing: LeaderTiming,
    ) -> Arc<Presence> {
        let mut all = self.presences.lock().unwrap_or_else(|p| p.into_inner());
        let key = Arc::as_ptr(store) as usize;
        if let Some(p) = all.get(&key).and_then(Weak::upgrade) {
            return p;
        }
        let p = Presence::new(
            client,
            store.clone(),
            namespace,
            identity,
            (timeout, timing),
            self.clone(),
        );
        all.insert(key, Arc::downgrade(&p));
        p
    }
}

/// A random id for a process.
fn random_instance_id(clock: Clock) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        clock
            .wall()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

/// The leader timing, defaults applied: lease duration `max(3 × probe_interval, 3 s)`,
/// renew deadline two thirds of it (see [`DaemonConfig::lease_duration`]).
pub fn leader_timing(daemon: &DaemonConfig) -> LeaderTiming {
    LeaderTiming {
        lease_duration: daemon.lease_duration(),
        renew_deadline: daemon.renew_deadline(),
    }
}

/// A write lost to another writer (409), or to a Lease gone meanwhile (404).
pub(crate) fn conflict(e: &CallError) -> bool {
    matches!(e.status_code(), Some(409 | 404))
}

/// Starting refused: another live process publishes under this identity.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "daemon.identity {identity:?} is already in use: another kube-failover process renews the \
     Lease {namespace}/{lease} (group {group}); give every instance its own daemon.identity"
)]
pub struct IdentityClash {
    /// The clashing identity.
    pub identity: String,
    /// The (first) group of the standby cluster that showed it.
    pub group: String,
    /// The coordination namespace.
    pub namespace: String,
    /// The Lease name.
    pub lease: String,
}

/// This instance's role for one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds the leader Lease within its renew deadline: may write.
    Leader,
    /// Does not hold it: decides and reports, never writes.
    Follower,
    /// Another process publishes under this identity: never writes.
    IdentityClash,
}

impl Role {
    /// The `/status` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::IdentityClash => "identity_clash",
        }
    }
}

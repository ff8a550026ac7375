//! When a group ticks: on its schedule, and at once on an event on its primary.
//!
//! The schedule is a stable phase of the interval per group, so groups spread their
//! work. A group whose primary was quiet at its last tick (every signal passed) also
//! ticks at once when:
//! - a watch it reads on the primary is lost ([`Cause::WatchBroken`]): an API server that
//!   stops ends its watches within milliseconds. The tick asks for a `/readyz` answer
//!   sent after the loss: one request, shared by every group the loss woke;
//! - a Pod or Deployment of the primary namespace changed and one of the group's
//!   workloads fails now in the caches ([`Cause::PodReadiness`],
//!   [`Cause::DeploymentReadiness`]): a Pod turning unready, crash-looping or deleted, a
//!   Deployment losing available replicas or scaled down.
//!
//! A group that says `down` itself also ticks at once when another instance's verdict on
//! it turns `down` in the Lease watch ([`Cause::PeerVerdict`]): the observer quorum is
//! decided when the second `down` arrives, not at the next turn. That tick does not
//! move the schedule, and asks for no `/readyz` answer of its own.
//!
//! So the first failure is seen at the event instead of at the next turn. The schedule
//! then starts again from the event: the next ticks come one interval after it, each
//! with its own `/readyz` answer, so the failures of a run are one interval apart and a
//! blip is tolerated for `(failure_threshold − 1) × interval`, as without events (the
//! engine does not count failures closer than that either). While a signal is failing,
//! events make no tick: the run under way already ticks every interval, and an extra
//! tick would only shift it. The first tick where every primary signal passes again
//! returns the group to its phase.

use crate::kube::cluster::ClusterHandle;
use crate::kube::watch_cache::Wakes as StoreWakes;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Why a group ticked before its turn: the `cause` label of
/// `kube_failover_event_ticks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// A watch of the primary was lost.
    WatchBroken,
    /// A Pod of the primary changed and a workload fails now.
    PodReadiness,
    /// A Deployment of the primary changed and a workload fails now.
    DeploymentReadiness,
    /// Another instance's verdict on the group turned `down` while this one says `down`.
    PeerVerdict,
}

impl Cause {
    /// Every cause, for the metric's series.
    pub(super) const ALL: [Cause; 4] = [
        Cause::WatchBroken,
        Cause::PodReadiness,
        Cause::DeploymentReadiness,
        Cause::PeerVerdict,
    ];

    /// The label value.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Cause::WatchBroken => "watch_broken",
            Cause::PodReadiness => "pod_readiness",
            Cause::DeploymentReadiness => "deployment_readiness",
            Cause::PeerVerdict => "peer_verdict",
        }
    }
}

/// What woke a group: the latest loss of a watch it reads, and which stores changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Woken {
    /// When a watch was lost, if one was.
    pub(super) lost_at: Option<Instant>,
    /// A Pod changed.
    pub(super) pods: bool,
    /// A Deployment changed.
    pub(super) deployments: bool,
}

/// The primary's stores a group reads, followed for events.
pub(super) struct Wakes {
    deployments: watch::Receiver<StoreWakes>,
    pods: watch::Receiver<StoreWakes>,
    seen_deployments: StoreWakes,
    seen_pods: StoreWakes,
}

impl Wakes {
    /// Follows the Deployments and Pods of `namespace` on `primary`.
    pub(super) fn new(primary: &ClusterHandle, namespace: &str) -> Self {
        Wakes::following(
            primary.deployments(namespace).wakes(),
            primary.pods(namespace).wakes(),
        )
    }

    fn following(
        deployments: watch::Receiver<StoreWakes>,
        pods: watch::Receiver<StoreWakes>,
    ) -> Self {
        let (seen_deployments, seen_pods) = (*deployments.borrow(), *pods.borrow());
        Wakes {
            deployments,
            pods,
            seen_deployments,
            seen_pods,
        }
    }

    /// Marks everything so far as seen: called as a tick starts, whose reads of the
    /// caches come after it.
    pub(super) fn seen(&mut self) {
        self.seen_deployments = *self.deployments.borrow_and_update();
        self.seen_pods = *self.pods.borrow_and_update();
    }

    /// Waits until a store wakes its readers; what happened since last seen.
    pub(super) async fn changed(&mut self) -> Woken {
        let open = tokio::select! {
            r = self.deployments.changed() => r.is_ok(),
            r = self.pods.changed() => r.is_ok(),
        };
        if !open {
            // A store lives as long as its cluster: never, but never a busy loop either.
            std::future::pending::<()>().await;
        }
        let (d, p) = (
            *self.deployments.borrow_and_update(),
            *self.pods.borrow_and_update(),
        );
        let lost_at = [
            (d.lost > self.seen_deployments.lost).then_some(d.lost_at),
            (p.lost > self.seen_pods.lost).then_some(p.lost_at),
        ]
        .into_iter()
        .flatten()
        .flatten()
        .max();
        let woken = Woken {
            lost_at,
            pods: p.changed > self.seen_pods.changed,
            deployments: d.changed > self.seen_deployments.changed,
        };
        (self.seen_deployments, self.seen_pods) = (d, p);
        woken
    }
}

/// A group's tick deadlines: its phase grid, or a grid anchored at its last event.
#[derive(Debug, Clone)]
pub(super) struct Schedule {
    interval: Duration,
    /// The phase grid: `phase + k × interval`.
    phase: Instant,
    /// After an event tick, until the primary is quiet again: `anchor + k × interval`.
    anchor: Option<Instant>,
    next: Instant,
}

impl Schedule {
    /// The first tick at `first`, then every `interval`.
    pub(super) fn new(first: Instant, interval: Duration) -> Self {
        Schedule {
            interval,
            phase: first,
            anchor: None,
            next: first,
        }
    }

    /// When the next scheduled tick is due.
    pub(super) fn next(&self) -> Instant {
        self.next
    }

    /// Whether the schedule follows an event rather than the phase.
    #[cfg(test)]
    fn anchored(&self) -> bool {
        self.anchor.is_some()
    }

    /// A tick ended at `now`. `event` is the instant an event tick observed (the later
    /// of its start and its `/readyz` answer's sending): the grid starts again there.
    /// `quiet`: every primary signal passed, so the group returns to its phase.
    pub(super) fn tick_done(&mut self, event: Option<Instant>, quiet: bool, now: Instant) {
        if let Some(at) = event {
            self.anchor = Some(at);
        }
        if quiet {
            self.anchor = None;
        }
        let grid = self.anchor.unwrap_or(self.phase);
        self.next = first_after(grid, self.interval, now);
    }
}

/// The first `grid + k × interval` (k ≥ 0) strictly after `now`.
fn first_after(grid: Instant, interval: Duration, now: Instant) -> Instant {
    if now < grid {
        return grid;
    }
    let step = interval.as_nanos().max(1);
    let k = now.duration_since(grid).as_nanos() / step + 1;
    let offset = u64::try_from(k.saturating_mul(step)).unwrap_or(u64::MAX);
    grid + Duration::from_nanos(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_secs(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_quiet_group_keeps_its_phase() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0 + ms(370), I);
        assert_eq!(s.next(), t0 + ms(370));
        s.tick_done(None, true, t0 + ms(375));
        assert_eq!(s.next(), t0 + ms(1_370));
        // A tick that overran skips to the next point of its grid.
        s.tick_done(None, true, t0 + ms(2_500));
        assert_eq!(s.next(), t0 + ms(3_370));
        assert!(!s.anchored());
    }

    #[test]
    fn an_event_anchors_the_schedule_until_the_primary_is_quiet_again() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0 + ms(370), I);
        s.tick_done(None, true, t0 + ms(375));
        // The API server stops at 0.9 s: the event tick sees it at 0.902 s.
        s.tick_done(Some(t0 + ms(902)), false, t0 + ms(910));
        assert!(s.anchored());
        assert_eq!(s.next(), t0 + ms(1_902), "one interval after the event");
        s.tick_done(None, false, t0 + ms(1_905));
        assert_eq!(s.next(), t0 + ms(2_902));
        // A long tick (actions) skips a point of the grid, never ticks sooner.
        s.tick_done(None, false, t0 + ms(4_000));
        assert_eq!(s.next(), t0 + ms(4_902));
        // Quiet again: back to the phase.
        s.tick_done(None, true, t0 + ms(4_910));
        assert!(!s.anchored());
        assert_eq!(s.next(), t0 + ms(5_370));
    }

    #[tokio::test]
    async fn a_group_is_told_what_changed_since_it_last_looked() {
        use crate::kube::kept::{KeptDeployment, KeptPod};
        use crate::kube::watch_cache::WatchStore;
        use kube::runtime::watcher::Event;

        let deployments = WatchStore::<KeptDeployment>::new("Deployments in ns");
        let pods = WatchStore::<KeptPod>::new("Pods in ns");
        let mut pod = KeptPod::default();
        pod.metadata.name = Some("trigger-1".into());
        pods.apply(Event::Init);
        pods.apply(Event::InitDone);
        deployments.apply(Event::Init);
        deployments.apply(Event::InitDone);
        let mut wakes = Wakes::following(deployments.wakes(), pods.wakes());

        pods.apply(Event::Apply(pod.clone()));
        let woken = wakes.changed().await;
        assert_eq!(
            woken,
            Woken {
                lost_at: None,
                pods: true,
                deployments: false
            }
        );
        // A tick started: what came before it is seen by its reads.
        pods.apply(Event::Delete(pod));
        wakes.seen();
        let refused = kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        )));
        deployments.fail(&kube::runtime::watcher::Error::WatchFailed(refused));
        let woken = wakes.changed().await;
        assert!(
            woken.lost_at.is_some() && !woken.pods && !woken.deployments,
            "{woken:?}"
        );
        // Nothing new: no wake.
        let quiet = tokio::time::timeout(Duration::from_millis(50), wakes.changed()).await;
        assert!(quiet.is_err(), "{quiet:?}");
    }

    #[test]
    fn the_grid_point_after_now() {
        let g = Instant::now();
        assert_eq!(first_after(g + I, I, g), g + I);
        assert_eq!(first_after(g, I, g), g + I);
        assert_eq!(first_after(g, I, g + ms(999)), g + I);
        assert_eq!(first_after(g, I, g + I), g + 2 * I);
    }
}

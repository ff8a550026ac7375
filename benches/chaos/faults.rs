//! The fault scheduler: bursts of random, overlapping faults drawn with the plan's seed,
//! each undone at its end, and quiet periods in between in which the system settles
//! (and, when the standby was left active, an operator fails back).

use crate::support::{GROUP, daemon_bin};
use crate::world::{FaultRecord, Side, World};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube_failover_testbed::{Cluster, ProxyMode};
use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// The kinds of fault the campaign draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    PrimaryApiKill,
    PrimaryApiStop,
    StandbyApiDown,
    PartitionPrimary,
    PartitionStandby,
    PartitionBoth,
    Latency,
    Resets,
    DaemonKill,
    LeaderStop,
    RbacRevoke,
    Relabel,
    RecordDelete,
    RecordEdit,
    Pause,
    Failback,
    PodsUnready,
    CredentialsRotate,
    GuardKill,
    GuardPartition,
    ClockRate,
    /// Not a fault: `kube-failover promote --force` with no outage, which the checker
    /// must report as an unjustified promotion (the control that proves it can).
    ControlPromote,
}

impl Kind {
    pub const ALL: [Kind; 21] = [
        Kind::PrimaryApiKill,
        Kind::PrimaryApiStop,
        Kind::StandbyApiDown,
        Kind::PartitionPrimary,
        Kind::PartitionStandby,
        Kind::PartitionBoth,
        Kind::Latency,
        Kind::Resets,
        Kind::DaemonKill,
        Kind::LeaderStop,
        Kind::RbacRevoke,
        Kind::Relabel,
        Kind::RecordDelete,
        Kind::RecordEdit,
        Kind::Pause,
        Kind::Failback,
        Kind::PodsUnready,
        Kind::CredentialsRotate,
        Kind::GuardKill,
        Kind::GuardPartition,
        Kind::ClockRate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::PrimaryApiKill => "primary-api-kill",
            Kind::PrimaryApiStop => "primary-api-stop",
            Kind::StandbyApiDown => "standby-api-down",
            Kind::PartitionPrimary => "partition-primary",
            Kind::PartitionStandby => "partition-standby",
            Kind::PartitionBoth => "partition-both",
            Kind::Latency => "latency",
            Kind::Resets => "resets",
            Kind::DaemonKill => "daemon-kill",
            Kind::LeaderStop => "leader-stop",
            Kind::RbacRevoke => "rbac-revoke",
            Kind::Relabel => "relabel",
            Kind::RecordDelete => "record-delete",
            Kind::RecordEdit => "record-edit",
            Kind::Pause => "pause",
            Kind::Failback => "failback",
            Kind::PodsUnready => "pods-unready",
            Kind::CredentialsRotate => "credentials-rotate",
            Kind::GuardKill => "guard-kill",
            Kind::GuardPartition => "guard-partition",
            Kind::ClockRate => "clock-rate",
            Kind::ControlPromote => "control-promote",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .chain([Kind::ControlPromote])
            .find(|k| k.name() == name)
    }

    /// How long a fault of this kind lasts, drawn in seconds (instantaneous ones: 0).
    fn duration(self, rng: &mut fastrand::Rng) -> Duration {
        let secs = match self {
            Kind::PrimaryApiKill | Kind::PrimaryApiStop => rng.u64(3..=25),
            Kind::StandbyApiDown => rng.u64(3..=20),
            Kind::PartitionPrimary | Kind::PartitionStandby | Kind::PartitionBoth => {
                rng.u64(2..=20)
            }
            Kind::Latency => rng.u64(5..=20),
            Kind::Resets => rng.u64(2..=10),
            Kind::DaemonKill => rng.u64(0..=8),
            Kind::LeaderStop => rng.u64(4..=10),
            Kind::RbacRevoke => rng.u64(5..=25),
            Kind::Relabel => rng.u64(5..=20),
            Kind::Pause => rng.u64(5..=30),
            Kind::PodsUnready => rng.u64(3..=20),
            // With the old token revoked first: how long until the new one is on disk.
            Kind::CredentialsRotate => rng.u64(0..=8),
            Kind::GuardKill => rng.u64(0..=8),
            Kind::GuardPartition => rng.u64(2..=20),
            Kind::ClockRate => rng.u64(20..=60),
            Kind::RecordDelete | Kind::RecordEdit | Kind::Failback | Kind::ControlPromote => 0,
        };
        Duration::from_millis(secs * 1000 + rng.u64(0..1000))
    }
}

/// What a fault does to the world while it is in force, as the checker reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    PrimaryApiDown,
    StandbyApiDown,
    /// Instance `i`'s path to the primary is cut, slowed or reset.
    PrimaryPath(usize),
    /// Instance `i`'s path to the standby is cut, slowed or reset.
    StandbyPath(usize),
    /// Instance `i`'s process is gone (killed, not restarted yet).
    DaemonDown(usize),
    /// Instance `i`'s process is stopped (SIGSTOP).
    DaemonStopped(usize),
    /// The daemon's RoleBindings in the primary are deleted.
    Rbac,
    /// The primary's trigger Deployment is relabelled.
    Relabel,
    /// An operator's pause holds.
    Paused,
    /// An operator's failback command runs.
    Failback,
    /// The primary's Pods are unready.
    PodsUnready,
    /// The record was deleted or edited by hand.
    RecordTouched,
    /// Instance `i`'s token for a side is being rotated on disk, until its first request
    /// with the new one is accepted: meanwhile its requests there may get 401 (unknown,
    /// never down).
    Credentials(usize, Side),
    /// Guard `g` (0 the primary's, 1 the standby's) and its agent are gone (killed, not
    /// restarted yet).
    GuardDown(usize),
    /// Guard `g`'s path to the standby is cut.
    GuardCut(usize),
    /// Instance `i` runs with its clocks (monotonic and wall) at another rate.
    ClockRate(usize),
}

/// What two faults cannot hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Resource {
    PrimaryApi,
    StandbyApi,
    Path(usize, Side),
    Daemon(usize),
    Rbac,
    Labels,
    Record,
    Pause,
    Failback,
    Pods,
    Guard(usize),
    Credentials(usize, Side),
}

/// What a fault draws beyond its targets and duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Knob {
    None,
    /// `primary-api-kill`, `primary-api-stop`: the shutdown delay of the API server the
    /// heal starts.
    NextShutdownDelay(Option<Duration>),
    /// `credentials-rotate`: the old token revoked before the new one is on disk (for the
    /// fault's duration), or the new one written first (as a careful tool does).
    RevokeFirst(bool),
}

/// A fault drawn, with its targets.
#[derive(Debug, Clone)]
struct Drawn {
    kind: Kind,
    duration: Duration,
    /// Instances it targets (partitions, path faults, kills).
    instances: Vec<usize>,
    sides: Vec<Side>,
    mode: ProxyMode,
    knob: Knob,
    /// A clock fault's rate.
    rate: f64,
}

impl Drawn {
    fn resources(&self) -> Vec<Resource> {
        match self.kind {
            Kind::PrimaryApiKill | Kind::PrimaryApiStop => vec![Resource::PrimaryApi],
            Kind::StandbyApiDown => vec![Resource::StandbyApi],
            Kind::PartitionPrimary
            | Kind::PartitionStandby
            | Kind::PartitionBoth
            | Kind::Latency
            | Kind::Resets => self
                .instances
                .iter()
                .flat_map(|i| self.sides.iter().map(move |s| Resource::Path(*i, *s)))
                .collect(),
            Kind::DaemonKill | Kind::LeaderStop | Kind::ClockRate => self
                .instances
                .iter()
                .map(|i| Resource::Daemon(*i))
                .collect(),
            Kind::RbacRevoke => vec![Resource::Rbac],
            Kind::Relabel => vec![Resource::Labels],
            Kind::RecordDelete | Kind::RecordEdit => vec![Resource::Record],
            Kind::Pause => vec![Resource::Pause],
            Kind::Failback | Kind::ControlPromote => vec![Resource::Failback],
            Kind::PodsUnready => vec![Resource::Pods],
            // A new primary token is bound to the Roles that `rbac-revoke` removes: the two
            // never at once.
            Kind::CredentialsRotate => self
                .instances
                .iter()
                .flat_map(|i| {
                    self.sides
                        .iter()
                        .map(move |s| Resource::Credentials(*i, *s))
                })
                .chain(
                    self.sides
                        .contains(&Side::Primary)
                        .then_some(Resource::Rbac),
                )
                .collect(),
            Kind::GuardKill | Kind::GuardPartition => {
                self.instances.iter().map(|g| Resource::Guard(*g)).collect()
            }
        }
    }

    fn effects(&self) -> Vec<Effect> {
        match self.kind {
            Kind::PrimaryApiKill | Kind::PrimaryApiStop => vec![Effect::PrimaryApiDown],
            Kind::StandbyApiDown => vec![Effect::StandbyApiDown],
            Kind::PartitionPrimary
            | Kind::PartitionStandby
            | Kind::PartitionBoth
            | Kind::Latency
            | Kind::Resets => self
                .instances
                .iter()
                .flat_map(|i| {
                    self.sides.iter().map(move |s| match s {
                        Side::Primary => Effect::PrimaryPath(*i),
                        Side::Standby => Effect::StandbyPath(*i),
                    })
                })
                .collect(),
            Kind::DaemonKill => self
                .instances
                .iter()
                .map(|i| Effect::DaemonDown(*i))
                .collect(),
            Kind::LeaderStop => self
                .instances
                .iter()
                .map(|i| Effect::DaemonStopped(*i))
                .collect(),
            Kind::RbacRevoke => vec![Effect::Rbac],
            Kind::Relabel => vec![Effect::Relabel],
            Kind::RecordDelete | Kind::RecordEdit => vec![Effect::RecordTouched],
            Kind::Pause => vec![Effect::Paused],
            Kind::Failback | Kind::ControlPromote => vec![Effect::Failback],
            Kind::PodsUnready => vec![Effect::PodsUnready],
            Kind::CredentialsRotate => self
                .instances
                .iter()
                .flat_map(|i| self.sides.iter().map(move |s| Effect::Credentials(*i, *s)))
                .collect(),
            Kind::GuardKill => self
                .instances
                .iter()
                .map(|g| Effect::GuardDown(*g))
                .collect(),
            Kind::GuardPartition => self
                .instances
                .iter()
                .map(|g| Effect::GuardCut(*g))
                .collect(),
            Kind::ClockRate => self
                .instances
                .iter()
                .map(|i| Effect::ClockRate(*i))
                .collect(),
        }
    }

    fn describe(&self, world: &World) -> String {
        let who = self
            .instances
            .iter()
            .map(|i| world.instances[*i].identity.as_str())
            .collect::<Vec<_>>()
            .join("+");
        let sides = self
            .sides
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join("+");
        let secs = self.duration.as_secs_f64();
        match self.kind {
            Kind::PartitionPrimary
            | Kind::PartitionStandby
            | Kind::PartitionBoth
            | Kind::Resets => {
                format!("{who} from {sides}, {secs:.1}s")
            }
            Kind::Latency => match self.mode {
                ProxyMode::Latency {
                    to_upstream,
                    to_client,
                } => format!(
                    "{who} to {sides}: +{}ms up, +{}ms down, {secs:.1}s",
                    to_upstream.as_millis(),
                    to_client.as_millis()
                ),
                _ => String::new(),
            },
            Kind::GuardKill => format!(
                "{}'s guard and agent SIGKILLed, restarted after {secs:.1}s",
                self.guard_side().name()
            ),
            Kind::GuardPartition => {
                format!(
                    "{}'s guard from the standby, {secs:.1}s",
                    self.guard_side().name()
                )
            }
            Kind::DaemonKill => format!("{who} SIGKILL, restarted after {secs:.1}s"),
            Kind::ClockRate => format!(
                "{who} restarted with its clocks at x{:.3} for {secs:.1}s, then on the real clock",
                self.rate
            ),
            Kind::LeaderStop => format!("leader {who} SIGSTOP for {secs:.1}s"),
            Kind::PrimaryApiKill | Kind::PrimaryApiStop => {
                let next = match self.knob {
                    Knob::NextShutdownDelay(Some(d)) => {
                        format!("shutdown delay {} s", d.as_secs())
                    }
                    _ => "no shutdown delay".to_string(),
                };
                format!("{secs:.1}s, started again with {next}")
            }
            Kind::CredentialsRotate => match self.knob {
                Knob::RevokeFirst(true) => format!(
                    "{who} for {sides}: the old token revoked first, the new one on disk {secs:.1}s after the 401"
                ),
                _ => format!("{who} for {sides}: a new token on disk, then the old one revoked"),
            },
            Kind::RecordDelete | Kind::RecordEdit | Kind::Failback | Kind::ControlPromote => {
                String::new()
            }
            _ => format!("{secs:.1}s"),
        }
    }
}

impl Drawn {
    /// The side of a guard fault's guard (its index in `instances`: 0 the primary's).
    fn guard_side(&self) -> Side {
        if self.instances.first() == Some(&0) {
            Side::Primary
        } else {
            Side::Standby
        }
    }
}

/// At most this many faults in force at once.
const MAX_ACTIVE: usize = 3;

/// Runs bursts of faults and quiet periods until `until` (campaign time), then ends every
/// fault still in force and returns once all are undone.
pub async fn campaign(world: Arc<World>, until: Duration) {
    let mut rng = fastrand::Rng::with_seed(world.plan.seed);
    let busy: Arc<Mutex<HashSet<Resource>>> = Arc::default();
    let (ending_tx, ending) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    while world.now() < until {
        let burst_end = world.now() + Duration::from_secs(rng.u64(40..=120));
        while world.now() < burst_end.min(until) {
            tokio::time::sleep(Duration::from_millis(rng.u64(500..=3000))).await;
            while tasks.try_join_next().is_some() {}
            if tasks.len() >= MAX_ACTIVE {
                continue;
            }
            let kind = world.plan.kinds[rng.usize(..world.plan.kinds.len())];
            let Some(drawn) = draw(&world, kind, &mut rng).await else {
                continue;
            };
            let resources = drawn.resources();
            {
                let mut held = busy.lock().unwrap_or_else(|p| p.into_inner());
                if resources.iter().any(|r| held.contains(r)) {
                    continue;
                }
                held.extend(resources.iter().copied());
            }
            tasks.spawn(run_fault(
                world.clone(),
                drawn,
                ending.clone(),
                busy.clone(),
                resources,
            ));
        }
        if world.now() >= until {
            break;
        }
        // A quiet period: the faults in force run out, nothing new starts.
        let quiet = Duration::from_secs(rng.u64(15..=40));
        let quiet_end = world.now() + quiet;
        while tasks.join_next().await.is_some() {}
        if rng.f32() < 0.7 && standby_left_active(&world).await {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let drawn = Drawn {
                kind: Kind::Failback,
                duration: Duration::ZERO,
                instances: Vec::new(),
                sides: Vec::new(),
                mode: ProxyMode::Pass,
                knob: Knob::None,
                rate: 1.0,
            };
            let resources = drawn.resources();
            busy.lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(resources.iter().copied());
            run_fault(
                world.clone(),
                drawn,
                ending.clone(),
                busy.clone(),
                resources,
            )
            .await;
        }
        let left = quiet_end.saturating_sub(world.now());
        tokio::time::sleep(left.min(until.saturating_sub(world.now()))).await;
    }
    let _ = ending_tx.send(true);
    while tasks.join_next().await.is_some() {}
}

/// Whether the record says the standby is active (promoted), so that a failback can
/// bring the primary back.
async fn standby_left_active(world: &World) -> bool {
    let api: Api<ConfigMap> =
        Api::namespaced(world.pair.standby.client(), world.pair.standby.namespace());
    let read = tokio::time::timeout(
        Duration::from_secs(2),
        api.get_opt(&format!("kube-failover-{GROUP}")),
    )
    .await;
    matches!(read, Ok(Ok(Some(cm))) if cm
        .data
        .as_ref()
        .and_then(|d| d.get("phase"))
        .is_some_and(|p| p == "promoted"))
}

/// Draws the targets of a fault of `kind`; `None` when it cannot apply now (no leader to
/// stop).
async fn draw(world: &World, kind: Kind, rng: &mut fastrand::Rng) -> Option<Drawn> {
    let duration = kind.duration(rng);
    let n = world.instances.len();
    let some_instances = |rng: &mut fastrand::Rng, count: usize| {
        let mut all: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut all);
        all.truncate(count);
        all.sort();
        all
    };
    let side = |rng: &mut fastrand::Rng| {
        if rng.bool() {
            Side::Primary
        } else {
            Side::Standby
        }
    };
    let mut drawn = Drawn {
        kind,
        duration,
        instances: Vec::new(),
        sides: Vec::new(),
        mode: ProxyMode::Pass,
        knob: Knob::None,
        rate: 1.0,
    };
    match kind {
        Kind::PartitionPrimary | Kind::PartitionStandby | Kind::PartitionBoth => {
            let count = rng.usize(1..=2);
            drawn.instances = some_instances(rng, count);
            drawn.sides = match kind {
                Kind::PartitionPrimary => vec![Side::Primary],
                Kind::PartitionStandby => vec![Side::Standby],
                _ => vec![Side::Primary, Side::Standby],
            };
            drawn.mode = ProxyMode::Blackhole;
        }
        Kind::Latency => {
            drawn.instances = some_instances(rng, 1);
            drawn.sides = vec![side(rng)];
            let delay = Duration::from_millis(rng.u64(50..=700));
            drawn.mode = match rng.u8(0..3) {
                0 => ProxyMode::Latency {
                    to_upstream: delay,
                    to_client: Duration::ZERO,
                },
                1 => ProxyMode::Latency {
                    to_upstream: Duration::ZERO,
                    to_client: delay,
                },
                _ => ProxyMode::Latency {
                    to_upstream: delay,
                    to_client: delay,
                },
            };
        }
        Kind::Resets => {
            drawn.instances = some_instances(rng, 1);
            drawn.sides = vec![side(rng)];
            drawn.mode = ProxyMode::Reset;
        }
        Kind::DaemonKill => drawn.instances = some_instances(rng, 1),
        // 3–10 % fast or slow: a broken clock source, far beyond what NTP lets through.
        Kind::ClockRate => {
            drawn.instances = some_instances(rng, 1);
            let off = 0.03 + rng.f64() * 0.07;
            drawn.rate = if rng.bool() { 1.0 + off } else { 1.0 - off };
        }
        // The guard's index: 0 the primary's, 1 the standby's.
        Kind::GuardKill | Kind::GuardPartition => drawn.instances = vec![rng.usize(0..2)],
        Kind::LeaderStop => {
            let mut leader = None;
            for (i, inst) in world.instances.iter().enumerate() {
                if inst.leads(&world.http).await {
                    leader = Some(i);
                }
            }
            drawn.instances = vec![leader?];
        }
        Kind::PrimaryApiKill | Kind::PrimaryApiStop => {
            // Half the restarts drain for 2-8 s at their next SIGTERM.
            drawn.knob =
                Knob::NextShutdownDelay(rng.bool().then(|| Duration::from_secs(rng.u64(2..=8))));
        }
        Kind::CredentialsRotate => {
            drawn.instances = some_instances(rng, 1);
            drawn.sides = match rng.u8(0..3) {
                0 => vec![Side::Primary],
                1 => vec![Side::Standby],
                _ => vec![Side::Primary, Side::Standby],
            };
            let revoke_first = rng.bool();
            drawn.knob = Knob::RevokeFirst(revoke_first);
            if !revoke_first {
                drawn.duration = Duration::ZERO;
            }
        }
        _ => {}
    }
    Some(drawn)
}

/// Injects one fault, records it, waits for its end (or the campaign's), undoes it.
async fn run_fault(
    world: Arc<World>,
    drawn: Drawn,
    mut ending: watch::Receiver<bool>,
    busy: Arc<Mutex<HashSet<Resource>>>,
    resources: Vec<Resource>,
) {
    let id = {
        let mut history = world.history.lock().unwrap_or_else(|p| p.into_inner());
        let now = world.now();
        let overlapping = history
            .iter()
            .filter(|f| f.in_force_at(now))
            .map(|f| f.kind)
            .collect();
        let id = history.len();
        history.push(FaultRecord {
            id,
            kind: drawn.kind,
            detail: drawn.describe(&world),
            start: now,
            end: None,
            injected: true,
            effects: drawn.effects(),
            overlapping,
        });
        history.len() - 1
    };
    let set = |end: bool, injected: Option<bool>, note: Option<String>| {
        let mut history = world.history.lock().unwrap_or_else(|p| p.into_inner());
        let f = &mut history[id];
        if end {
            f.end = Some(world.now());
        }
        if let Some(i) = injected {
            f.injected = i;
        }
        if let Some(n) = note {
            if f.detail.is_empty() {
                f.detail = n;
            } else {
                f.detail = format!("{}; {n}", f.detail);
            }
        }
    };
    match inject(&world, &drawn).await {
        Ok(note) => {
            if note.is_some() {
                set(false, None, note);
            }
            let wait = tokio::time::sleep(drawn.duration);
            tokio::pin!(wait);
            if !*ending.borrow() {
                tokio::select! {
                    _ = &mut wait => {}
                    _ = ending.changed() => {}
                }
            }
            let mut tries = 0;
            loop {
                match heal(&world, &drawn).await {
                    Ok(()) => break,
                    Err(e) if tries >= 120 => {
                        set(false, None, Some(format!("NOT UNDONE: {e}")));
                        break;
                    }
                    Err(_) => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            if let Some(note) = settled(&world, &drawn).await {
                set(false, None, Some(note));
            }
            set(true, None, None);
        }
        Err(e) => set(true, Some(false), Some(format!("not injected: {e}"))),
    }
    let mut held = busy.lock().unwrap_or_else(|p| p.into_inner());
    for r in &resources {
        held.remove(r);
    }
}

/// Runs an operator command with the operator's config; returns its exit code and the
/// last line it printed on stderr.
async fn operator(world: &World, args: &[&str]) -> (Option<i32>, String) {
    let run = tokio::process::Command::new(daemon_bin())
        .args(args)
        .arg("--config")
        .arg(&world.operator_config)
        .args(["--group", GROUP])
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(120), run).await {
        Ok(Ok(out)) => {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string();
            (out.status.code(), last)
        }
        Ok(Err(e)) => (None, format!("could not run: {e}")),
        Err(_) => (None, "timed out after 120 s".to_string()),
    }
}

fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .map_err(|e| format!("kill {sig}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill {sig} {pid}: {status}"))
    }
}

fn records(world: &World) -> Api<ConfigMap> {
    Api::namespaced(world.pair.standby.client(), world.pair.standby.namespace())
}

/// Puts the fault in force. `Ok(Some(note))` adds to its description.
async fn inject(world: &World, d: &Drawn) -> Result<Option<String>, String> {
    let pair = &world.pair;
    let e = |e: &dyn std::fmt::Display| e.to_string();
    match d.kind {
        Kind::PrimaryApiKill => pair.primary.kill_apiserver().await.map_err(|x| e(&x))?,
        Kind::PrimaryApiStop => return stop_observed(&pair.primary).await.map(Some),
        Kind::StandbyApiDown => {
            if d.duration.subsec_millis().is_multiple_of(2) {
                pair.standby.kill_apiserver().await.map_err(|x| e(&x))?;
                return Ok(Some("SIGKILL".into()));
            }
            pair.standby.stop_apiserver().await.map_err(|x| e(&x))?;
            return Ok(Some("SIGTERM".into()));
        }
        Kind::PartitionPrimary
        | Kind::PartitionStandby
        | Kind::PartitionBoth
        | Kind::Latency
        | Kind::Resets => {
            for i in &d.instances {
                for s in &d.sides {
                    world.instances[*i].proxy(*s).set_mode(d.mode);
                }
            }
        }
        Kind::DaemonKill => {
            let inst = &world.instances[d.instances[0]];
            *inst.exit_expected.lock().unwrap_or_else(|p| p.into_inner()) = true;
            if let Some(mut daemon) = inst.process.lock().await.take() {
                daemon.kill().await;
            }
            *inst.pid.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        Kind::LeaderStop => {
            let inst = &world.instances[d.instances[0]];
            let pid = (*inst.pid.lock().unwrap_or_else(|p| p.into_inner())).ok_or("no process")?;
            signal(pid, "-STOP")?;
        }
        Kind::RbacRevoke => {
            // The operator's user, and the token each instance uses on the primary.
            let took = pair
                .primary
                .delete_daemon_role_bindings()
                .await
                .map_err(|x| e(&x))?;
            let mut tokens = Vec::new();
            for inst in &world.instances {
                let token = inst.token(Side::Primary).lock().await;
                let took = token.creds.unbind().await.map_err(|x| e(&x))?;
                tokens.push(format!("{} {:.1}s", inst.identity, took.as_secs_f64()));
            }
            return Ok(Some(format!(
                "403 after {:.1}s for the operator's user; for the instances' tokens after {}",
                took.as_secs_f64(),
                tokens.join(", ")
            )));
        }
        Kind::CredentialsRotate => {
            let inst = &world.instances[d.instances[0]];
            let mut notes = Vec::new();
            let mut changed = false;
            for side in &d.sides {
                let mut token = inst.token(*side).lock().await;
                let done = if d.knob == Knob::RevokeFirst(true) {
                    token.creds.revoke().await.map(|took| {
                        notes.push(format!(
                            "{}: the old token answered 401 {:.1}s after its ServiceAccount was deleted",
                            side.name(),
                            took.as_secs_f64()
                        ))
                    })
                } else {
                    token.rotated_from = Some(audit_len(cluster(world, *side)));
                    token.creds.rotate().await
                };
                if done.is_err() {
                    // No first request with a new token to wait for.
                    token.rotated_from = None;
                }
                match done {
                    Ok(()) => changed = true,
                    // Partly in force: the heal puts a new token where one was revoked.
                    Err(x) if changed || token.creds.revoked() => {
                        notes.push(format!("{}: partly injected: {x}", side.name()));
                        break;
                    }
                    Err(x) => return Err(e(&x)),
                }
            }
            return Ok((!notes.is_empty()).then(|| notes.join("; ")));
        }
        Kind::Relabel => {
            pair.primary
                .set_deployment_label(
                    &pair.primary.trigger_deployment(),
                    "env0",
                    Some("agent-trigger-chaos"),
                )
                .await
                .map_err(|x| e(&x))?;
        }
        Kind::RecordDelete => {
            let existed = pair
                .standby
                .delete_configmap(&format!("kube-failover-{GROUP}"))
                .await
                .map_err(|x| e(&x))?;
            if !existed {
                return Err("no record".into());
            }
        }
        Kind::RecordEdit => {
            let patch = serde_json::json!({"data": {"reason": "edited_by_hand", "history": null}});
            records(world)
                .patch(
                    &format!("kube-failover-{GROUP}"),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(|x| e(&x))?;
            return Ok(Some("reason and history edited".into()));
        }
        Kind::Pause => {
            let (code, last) = operator(world, &["pause", "--reason", "chaos"]).await;
            if code != Some(0) {
                return Err(format!("pause exit {code:?}: {last}"));
            }
        }
        Kind::Failback => {
            let (code, last) = operator(world, &["failback", "--wait"]).await;
            return Ok(Some(match code {
                Some(0) => "done".to_string(),
                other => format!("exit {other:?}: {last}"),
            }));
        }
        Kind::ControlPromote => {
            let (code, last) = operator(world, &["promote", "--force"]).await;
            return Ok(Some(match code {
                Some(0) => "done".to_string(),
                other => format!("exit {other:?}: {last}"),
            }));
        }
        Kind::ClockRate => {
            let lib = crate::world::faketime_lib().ok_or("libfaketime not found")?;
            world.instances[d.instances[0]]
                .restart(
                    pair.primary.dir(),
                    &[
                        ("LD_PRELOAD", lib.display().to_string()),
                        ("FAKETIME", format!("+0 x{:.3}", d.rate)),
                    ],
                )
                .await;
        }
        Kind::GuardKill => world.guards[d.instances[0]].kill().await,
        Kind::GuardPartition => world.guards[d.instances[0]]
            .proxy
            .set_mode(ProxyMode::Blackhole),
        Kind::PodsUnready => {
            let mut changed = 0;
            for name in pair.primary.deployment_names() {
                changed += pair
                    .primary
                    .set_pods_ready(&name, false)
                    .await
                    .map_err(|x| e(&x))?;
            }
            return Ok(Some(format!("{changed} pods")));
        }
    }
    Ok(None)
}

/// Undoes the fault.
async fn heal(world: &World, d: &Drawn) -> Result<(), String> {
    let pair = &world.pair;
    let e = |e: &dyn std::fmt::Display| e.to_string();
    match d.kind {
        Kind::PrimaryApiKill | Kind::PrimaryApiStop => {
            if let Knob::NextShutdownDelay(delay) = d.knob {
                pair.primary.set_shutdown_delay(delay);
            }
            pair.primary.start_apiserver().await.map_err(|x| e(&x))
        }
        Kind::StandbyApiDown => pair.standby.start_apiserver().await.map_err(|x| e(&x)),
        Kind::PartitionPrimary
        | Kind::PartitionStandby
        | Kind::PartitionBoth
        | Kind::Latency
        | Kind::Resets => {
            for i in &d.instances {
                for s in &d.sides {
                    world.instances[*i].proxy(*s).set_mode(ProxyMode::Pass);
                }
            }
            Ok(())
        }
        Kind::DaemonKill => {
            let inst = &world.instances[d.instances[0]];
            inst.spawn(pair.primary.dir()).await;
            *inst.exit_expected.lock().unwrap_or_else(|p| p.into_inner()) = false;
            Ok(())
        }
        Kind::LeaderStop => {
            let inst = &world.instances[d.instances[0]];
            match *inst.pid.lock().unwrap_or_else(|p| p.into_inner()) {
                Some(pid) => signal(pid, "-CONT"),
                None => Ok(()),
            }
        }
        Kind::RbacRevoke => {
            for inst in &world.instances {
                let token = inst.token(Side::Primary).lock().await;
                token.creds.bind().await.map_err(|x| e(&x))?;
            }
            pair.primary
                .restore_daemon_role_bindings()
                .await
                .map(|_| ())
                .map_err(|x| e(&x))
        }
        Kind::CredentialsRotate => {
            let inst = &world.instances[d.instances[0]];
            for side in &d.sides {
                let mut token = inst.token(*side).lock().await;
                if token.creds.revoked() {
                    token.rotated_from = Some(audit_len(cluster(world, *side)));
                    token.creds.rotate().await.map_err(|x| e(&x))?;
                }
            }
            Ok(())
        }
        Kind::Relabel => pair
            .primary
            .set_deployment_label(
                &pair.primary.trigger_deployment(),
                "env0",
                Some("agent-trigger"),
            )
            .await
            .map(|_| ())
            .map_err(|x| e(&x)),
        Kind::Pause => {
            let (code, last) = operator(world, &["resume"]).await;
            if code == Some(0) {
                Ok(())
            } else {
                Err(format!("resume exit {code:?}: {last}"))
            }
        }
        Kind::PodsUnready => {
            for name in pair.primary.deployment_names() {
                pair.primary
                    .set_pods_ready(&name, true)
                    .await
                    .map_err(|x| e(&x))?;
            }
            Ok(())
        }
        Kind::ClockRate => {
            world.instances[d.instances[0]]
                .restart(pair.primary.dir(), &[])
                .await;
            Ok(())
        }
        Kind::GuardKill => {
            world.guards[d.instances[0]].spawn(pair).await;
            Ok(())
        }
        Kind::GuardPartition => {
            world.guards[d.instances[0]].proxy.set_mode(ProxyMode::Pass);
            Ok(())
        }
        Kind::RecordDelete | Kind::RecordEdit | Kind::Failback | Kind::ControlPromote => Ok(()),
    }
}

fn cluster(world: &World, side: Side) -> &Cluster {
    match side {
        Side::Primary => &world.pair.primary,
        Side::Standby => &world.pair.standby,
    }
}

/// SIGTERM to the primary's API server, which exits after the shutdown delay it was
/// started with; meanwhile the test bed's admin asks `/readyz` and LISTs Deployments
/// every 200 ms. Says which delay was in force and how long the API answered while
/// `/readyz` failed: the proof that the delay was in force.
async fn stop_observed(primary: &Cluster) -> Result<String, String> {
    let delay = primary.shutdown_delay_in_force();
    let client = primary.client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), primary.namespace());
    let one = ListParams::default().limit(1);
    let sigterm = Instant::now();
    let observe = async {
        let mut unready = false;
        let mut last_served: Option<Duration> = None;
        loop {
            let readyz = client.request_text(
                http::Request::get("/readyz")
                    .body(Vec::new())
                    .expect("static request"),
            );
            match tokio::time::timeout(Duration::from_secs(1), readyz).await {
                Ok(Err(kube::Error::Api(_))) => unready = true,
                Ok(Ok(_)) => {}
                _ => break,
            }
            let list = deployments.list_metadata(&one);
            match tokio::time::timeout(Duration::from_secs(1), list).await {
                Ok(Ok(_)) if unready => last_served = Some(sigterm.elapsed()),
                Ok(Ok(_)) => {}
                _ => break,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        last_served
    };
    let (stopped, served) = tokio::join!(primary.stop_apiserver(), observe);
    stopped.map_err(|x| x.to_string())?;
    let gone = sigterm.elapsed().as_secs_f64();
    Ok(match (delay, served) {
        (Some(d), Some(s)) => format!(
            "SIGTERM, shutdown delay {} s: served with /readyz failing for {:.1}s, gone after {gone:.1}s",
            d.as_secs(),
            s.as_secs_f64()
        ),
        (Some(d), None) => format!(
            "SIGTERM, shutdown delay {} s: nothing served with /readyz failing (!), gone after {gone:.1}s",
            d.as_secs()
        ),
        (None, _) => format!("SIGTERM, no shutdown delay: gone after {gone:.1}s"),
    })
}

/// How far a fault's effect reaches past its heal, said in its detail; `None` for most.
/// `credentials-rotate` lasts until the instance's first request with the new token is
/// accepted, read from the side's audit log (at most a minute).
async fn settled(world: &World, d: &Drawn) -> Option<String> {
    if d.kind != Kind::CredentialsRotate {
        return None;
    }
    let inst = &world.instances[d.instances[0]];
    let mut notes = Vec::new();
    for side in &d.sides {
        let (path, from, user, written) = {
            let mut token = inst.token(*side).lock().await;
            // Not rotated (the injection failed on this side).
            let Some(from) = token.rotated_from.take() else {
                continue;
            };
            (
                cluster(world, *side).audit_log_path(),
                from,
                token.creds.username(),
                token.creds.written_at(),
            )
        };
        let start = Instant::now();
        let accepted = loop {
            if let Some(at) = first_accepted(&path, from, &user, &inst.identity) {
                break Some(at);
            }
            if start.elapsed() > Duration::from_secs(60) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        notes.push(match (accepted, written) {
            (Some(at), Some(w)) => format!(
                "{}: the instance's first request with the new token accepted {:.1}s after it was written",
                side.name(),
                at.duration_since(w).unwrap_or_default().as_secs_f64()
            ),
            _ => format!(
                "{}: NO request with the new token accepted within 60 s",
                side.name()
            ),
        });
    }
    (!notes.is_empty()).then(|| notes.join("; "))
}

/// The size of a cluster's audit log now.
fn audit_len(cluster: &Cluster) -> u64 {
    std::fs::metadata(cluster.audit_log_path()).map_or(0, |m| m.len())
}

/// When the API server received the first request it accepted (2xx) from `user` with a
/// user agent naming `identity`, in its audit log from byte `from`.
fn first_accepted(path: &Path, from: u64, user: &str, identity: &str) -> Option<SystemTime> {
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let agent = format!("({identity})");
    text.lines()
        .filter(|l| l.contains(user))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| {
            e["user"]["username"] == user
                && e["userAgent"].as_str().is_some_and(|a| a.contains(&agent))
                && e["responseStatus"]["code"]
                    .as_u64()
                    .is_some_and(|c| (200..300).contains(&c))
        })
        .and_then(|e| humantime::parse_rfc3339(e["requestReceivedTimestamp"].as_str()?).ok())
}

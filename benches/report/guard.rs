//! Dual-active seconds per outage with and without the guard: one daemon and one cluster
//! pair per mode, the primary's API server stopped for a fixed time in each outage, then
//! started again, the old primary fenced and an operator's `kube-failover failback
//! --wait`, so that the next outage starts from `primary` again.
//!
//! Dual-active runs from the standby's agent Deployments wanting replicas (their Pods
//! can start no earlier) until the primary's agent stops. With a guard the agent is its
//! child (a process on this host writing a line every 100 ms: kwok Pods run no
//! containers), and it stops at its last line. Without one the primary's kubelets keep
//! the agent running until its Deployments are scaled to 0, which the daemon can do only
//! once the API server is back: the agent stops when they are seen at 0.

use crate::bed::{self, DeploymentsWatch};
use crate::outages::{restart_and_wait_fence, stop_and_time};
use crate::stats::{Meta, Rng, Summary};
use crate::support::guard::*;
use crate::support::*;
use kube_failover_testbed::ClusterPair;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The guards' interval here: their default.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// `isolation_ttl` of the stop-mode guard: its default.
pub const ISOLATION_TTL: Duration = Duration::from_secs(10);

/// What runs beside the primary's agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// No guard: the agent stops when its Deployments are scaled to 0.
    None,
    /// A guard with `on_isolation = "keep"` (the default).
    Keep,
    /// A guard with `on_isolation = "stop"`, asking the daemon when it cannot read the
    /// record; the daemon waits for it before scaling the standby up.
    Stop,
}

impl Mode {
    /// Parses `none,keep,stop`.
    pub fn parse_list(text: &str) -> Vec<Mode> {
        text.split(',')
            .filter(|m| !m.trim().is_empty())
            .map(|m| match m.trim() {
                "none" => Mode::None,
                "keep" => Mode::Keep,
                "stop" => Mode::Stop,
                other => panic!(
                    "KUBE_FAILOVER_REPORT_GUARD_MODES: {other:?} is not one of none, keep, stop"
                ),
            })
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::None => "without the guard",
            Mode::Keep => "guard, `on_isolation = \"keep\"`",
            Mode::Stop => "guard, `on_isolation = \"stop\"`",
        }
    }
}

/// One outage, seconds from SIGTERM to the primary's API server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuardOutage {
    /// The API server exited.
    pub exited: f64,
    /// Every standby Deployment scaled up (`None`: not within the limit).
    pub scaled: Option<f64>,
    /// All of them Ready.
    pub ready: Option<f64>,
    /// The primary's agent stopped: its last line (with a guard) or its Deployments seen
    /// at 0 (without); `None`: neither before the end of the wait.
    pub agent_stopped: Option<f64>,
    /// The API server's `/readyz` passed again.
    pub back: f64,
    /// The primary's Deployments seen at 0.
    pub fenced: Option<f64>,
    /// The record's `fenced_by` (`guard` or `scale`).
    pub fenced_by: Option<String>,
    /// From `scaled` to `agent_stopped`, 0 when the agent stopped first.
    pub dual_active: Option<f64>,
}

/// One mode's outages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModeResult {
    pub mode: Mode,
    pub outages: Vec<GuardOutage>,
    /// Outages after which the mode was set up again (a promotion or failback missed).
    pub restarts: usize,
}

impl ModeResult {
    pub fn summary(&self, f: impl Fn(&GuardOutage) -> Option<f64>) -> Option<Summary> {
        Summary::of(&self.outages.iter().filter_map(f).collect::<Vec<_>>())
    }
}

/// The whole part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuardReport {
    pub meta: Meta,
    /// `debug build`, `release build`, or the binary's file name.
    pub build: String,
    pub outages_per_mode: usize,
    /// How long the primary's API server stayed down in each outage (from SIGTERM).
    pub outage_s: f64,
    pub daemon_interval_s: f64,
    pub failure_threshold: u32,
    pub guard_interval_s: f64,
    pub isolation_ttl_s: f64,
    pub modes: Vec<ModeResult>,
}

/// A daemon leading the group (and, in a guard mode, the primary's guard), with the
/// pair reset to "primary active".
struct Setup {
    d: Daemon,
    guard: Option<Guard>,
}

async fn start(pair: &ClusterPair, standby: &DeploymentsWatch, mode: Mode) -> Setup {
    bed::reset(pair, standby).await;
    let opts = match mode {
        Mode::None => DaemonOpts {
            cooldown: Duration::from_secs(1),
            ..DaemonOpts::default()
        },
        Mode::Keep | Mode::Stop => guarded_daemon(1, 0),
    };
    let d = bed::start_daemon(pair, &opts).await;
    let toml = match mode {
        Mode::None => return Setup { d, guard: None },
        Mode::Keep => String::new(),
        Mode::Stop => stop_mode(ISOLATION_TTL, d.admin),
    };
    let guard = Guard::start_with(
        pair,
        "primary",
        pair.primary.dir(),
        &GuardOpts {
            interval: Some(INTERVAL),
            toml,
            ..GuardOpts::default()
        },
    );
    wait_running(&guard, true, Duration::from_secs(30)).await;
    if mode == Mode::Stop {
        wait_stop_mode_seen(&d).await;
    }
    Setup {
        d,
        guard: Some(guard),
    }
}

/// Waits until the group is back at `primary_active` with the standby at 0 and the
/// primary's agent running; `false` after a minute.
async fn back_to_primary(s: &Setup, standby: &DeploymentsWatch) -> bool {
    let timeout = Duration::from_secs(60);
    let primary = wait_for(timeout, Duration::from_millis(100), || async {
        s.d.group()
            .await
            .is_some_and(|g| g.state == "primary_active")
    })
    .await
    .is_some();
    let down = standby.wait(timeout, |x| x.all_down()).await.is_some();
    let agent = match &s.guard {
        Some(g) => wait_for(timeout, Duration::from_millis(50), || async {
            g.running(Duration::from_millis(400))
        })
        .await
        .is_some(),
        None => true,
    };
    primary && down && agent
}

/// One outage of `outage` from SIGTERM; `None` in the second place when the pair could
/// not be brought back to `primary` (the caller sets the mode up again).
async fn one_outage(
    pair: &ClusterPair,
    standby: &DeploymentsWatch,
    s: &Setup,
    outage: Duration,
    rng: &mut Rng,
) -> (GuardOutage, bool) {
    // A random phase within the daemon's interval: outages do not line up with ticks.
    tokio::time::sleep(Duration::from_secs(1) + rng.duration(Duration::ZERO, INTERVAL)).await;
    let t0 = Instant::now();
    let t0_unix = unix_now();
    let (exited, scaled, ready) = stop_and_time(pair, standby).await;
    let since = |t: Instant| t.duration_since(t0).as_secs_f64();
    // The guard stops its agent long before the API server returns, or not at all.
    let mut agent_stopped = None;
    if let Some(g) = &s.guard {
        let left = outage.saturating_sub(t0.elapsed());
        let stopped = wait_for(left, Duration::from_millis(50), || async {
            !g.running(Duration::from_millis(400))
        })
        .await;
        if stopped.is_some() {
            agent_stopped = g.lines().last().map(|t| t - t0_unix);
        }
    }
    tokio::time::sleep(outage.saturating_sub(t0.elapsed())).await;
    let (up, fenced) = restart_and_wait_fence(pair, Duration::from_secs(30)).await;
    let fenced_at = fenced.map(since);
    if s.guard.is_none() || agent_stopped.is_none() {
        // The kubelets stop the agent once its Deployments are at 0.
        agent_stopped = fenced_at;
    }
    let dual_active = match (scaled, agent_stopped) {
        (Some(sc), Some(st)) => Some((st - sc).max(0.0)),
        _ => None,
    };
    let fenced_by = wait_for(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { record_field(pair, "fenced_at").await.is_some() },
    )
    .await
    .and(record_field(pair, "fenced_by").await);
    let o = GuardOutage {
        exited,
        scaled,
        ready,
        agent_stopped,
        back: since(up),
        fenced: fenced_at,
        fenced_by,
        dual_active,
    };
    if scaled.is_none() || fenced.is_none() || o.fenced_by.is_none() {
        return (o, false);
    }
    let failback = operator(&s.d.config, &["failback", "--wait"]).await == Some(0);
    let ok = failback && back_to_primary(s, standby).await;
    (o, ok)
}

fn line(k: usize, o: &GuardOutage) -> String {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}s"));
    format!(
        "  #{k:<3} apiserver exited {:.2}s, standby scaled {}, Ready {}, old agent stopped {}, API back {:.2}s, fenced {} (by {}); dual-active {}",
        o.exited,
        opt(o.scaled),
        opt(o.ready),
        opt(o.agent_stopped),
        o.back,
        opt(o.fenced),
        o.fenced_by.as_deref().unwrap_or("-"),
        opt(o.dual_active),
    )
}

/// Runs `n` outages of `outage` in each mode, on one cluster pair.
pub async fn run(
    modes: &[Mode],
    n: usize,
    outage: Duration,
    build: String,
    meta: Meta,
    rng: &mut Rng,
) -> GuardReport {
    let pair = pair().await;
    grant_guard_role(&pair).await;
    let standby = DeploymentsWatch::start(&pair.standby).await;
    let defaults = DaemonOpts::default();
    let mut report = GuardReport {
        meta,
        build,
        outages_per_mode: n,
        outage_s: outage.as_secs_f64(),
        daemon_interval_s: defaults.interval.as_secs_f64(),
        failure_threshold: defaults.failure_threshold,
        guard_interval_s: INTERVAL.as_secs_f64(),
        isolation_ttl_s: ISOLATION_TTL.as_secs_f64(),
        modes: Vec::new(),
    };
    for &mode in modes {
        println!(
            "guard: {n} outages of {:.0} s, {}",
            outage.as_secs_f64(),
            mode.name()
        );
        let mut r = ModeResult {
            mode,
            outages: Vec::new(),
            restarts: 0,
        };
        let mut s = start(&pair, &standby, mode).await;
        for k in 1..=n {
            let (o, ok) = one_outage(&pair, &standby, &s, outage, rng).await;
            println!("{}", line(k, &o));
            r.outages.push(o);
            if !ok && k < n {
                println!("  not back at primary: the mode is set up again");
                r.restarts += 1;
                let Setup { mut d, guard } = s;
                drop(guard);
                d.terminate().await;
                s = start(&pair, &standby, mode).await;
            }
        }
        let Setup { mut d, guard } = s;
        drop(guard);
        d.terminate().await;
        report.modes.push(r);
    }
    report
}

//! Time-to-promote and time-to-fence over many outages per profile (probe interval ×
//! failure threshold), kube-failover and the kubectl watchdog taking turns on the same
//! cluster pair: stop the primary's API server (SIGTERM) → every standby Deployment
//! scaled up (seen by a watch on the standby) → all of them Ready; then start the API
//! server again → the primary's Deployments at 0 (kube-failover fences; the watchdog
//! does not, which is checked, not assumed).

use crate::bed::{self, DeploymentsWatch};
use crate::naive::{self, Kubectl, Watchdog};
use crate::stats::{Rng, Summary};
use crate::support::*;
use kube_failover_testbed::ClusterPair;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How long a promotion may take before the outage counts as missed.
const PROMOTE_LIMIT: Duration = Duration::from_secs(60);

/// Probe interval × failure threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub interval_s: f64,
    pub threshold: u32,
}

impl Profile {
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval_s)
    }

    /// Probe timeout of both watchers: 0.8 × interval, at most 2 s.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64((self.interval_s * 0.8).min(2.0))
    }

    /// The goal: (threshold − 1) × interval + 0.25 s.
    pub fn budget_s(&self) -> f64 {
        f64::from(self.threshold.saturating_sub(1)) * self.interval_s + 0.25
    }

    /// `1 s × 3`.
    pub fn name(&self) -> String {
        format!("{} s × {}", self.interval_s, self.threshold)
    }

    /// `1s-x3`, for file names.
    pub fn slug(&self) -> String {
        format!("{}s-x{}", self.interval_s, self.threshold)
    }

    /// Parses `1x3,2x3,5x3` (interval in seconds × threshold).
    pub fn parse_list(text: &str) -> Vec<Profile> {
        text.split(',')
            .map(|p| {
                let (i, t) = p.trim().split_once('x').unwrap_or_else(|| {
                    panic!("KUBE_FAILOVER_REPORT_PROFILES: {p:?} is not INTERVALxTHRESHOLD (1x3)")
                });
                Profile {
                    interval_s: i.trim().parse().expect("interval in seconds"),
                    threshold: t.trim().parse().expect("failure threshold"),
                }
            })
            .collect()
    }
}

/// One outage, seconds from SIGTERM to the primary's API server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outage {
    /// The API server exited.
    pub exited: f64,
    /// Every standby Deployment scaled up (`None`: not within the limit).
    pub scaled: Option<f64>,
    /// All of them Ready.
    pub ready: Option<f64>,
    /// From the primary's `/readyz` passing again to its Deployments at 0 (`None`: not
    /// fenced within the wait).
    pub fenced: Option<f64>,
    /// Both sides wanted replicas at the end of the wait after the primary returned.
    pub dual_active: bool,
    /// How long the watcher had run, healthy, before the outage (seconds).
    pub lead_in: f64,
}

/// Both watchers' outages for one profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileResult {
    pub profile: Profile,
    pub timeout_s: f64,
    pub daemon: Vec<Outage>,
    pub naive: Vec<Outage>,
}

impl ProfileResult {
    pub fn summary(samples: &[Outage], f: impl Fn(&Outage) -> Option<f64>) -> Option<Summary> {
        Summary::of(&samples.iter().filter_map(f).collect::<Vec<_>>())
    }
}

/// The whole part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutagesReport {
    pub meta: crate::stats::Meta,
    pub outages_per_profile: usize,
    /// The watchdog's kubectl: path and `version --client`; `None` when left out.
    pub kubectl: Option<(String, String)>,
    pub profiles: Vec<ProfileResult>,
}

/// Stops the primary's API server and times the standby: (exited, scaled, ready).
pub async fn stop_and_time(
    pair: &ClusterPair,
    standby: &DeploymentsWatch,
) -> (f64, Option<f64>, Option<f64>) {
    let stopped = Instant::now();
    let stopping = async {
        pair.primary
            .stop_apiserver()
            .await
            .expect("stop the primary's API server");
        stopped.elapsed().as_secs_f64()
    };
    let promoting = async {
        let Some(scaled) = standby.wait(PROMOTE_LIMIT, |s| s.all_scaled()).await else {
            return (None, None);
        };
        let ready = standby.wait(PROMOTE_LIMIT, |s| s.all_ready()).await;
        let since = |t: Instant| t.duration_since(stopped).as_secs_f64();
        (Some(since(scaled)), ready.map(since))
    };
    let (exited, (scaled, ready)) = tokio::join!(stopping, promoting);
    (exited, scaled, ready)
}

/// Starts the primary's API server again; returns the seconds from its `/readyz`
/// passing to its Deployments all at 0, or `None` if they are not within `wait`.
async fn restart_and_time_fence(pair: &ClusterPair, wait: Duration) -> Option<f64> {
    let (up, fenced) = restart_and_wait_fence(pair, wait).await;
    fenced.map(|t| t.duration_since(up).as_secs_f64())
}

/// Starts the primary's API server again; returns when its `/readyz` passed and when
/// its Deployments were all seen at 0 (`None` if not within `wait` of the first).
pub async fn restart_and_wait_fence(
    pair: &ClusterPair,
    wait: Duration,
) -> (Instant, Option<Instant>) {
    let starting = async {
        pair.primary
            .start_apiserver()
            .await
            .expect("start the primary's API server");
    };
    let timing = async {
        let client = pair.primary.client();
        let up = loop {
            let req = http::Request::get("/readyz").body(Vec::new()).unwrap();
            if client.request_text(req).await.is_ok() {
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut fenced = None;
        while up.elapsed() < wait {
            let mut total = 0;
            let mut ok = true;
            for name in pair.primary.deployment_names() {
                match pair.primary.replicas(&name).await {
                    Ok(n) => total += n,
                    Err(_) => ok = false,
                }
            }
            if ok && total == 0 {
                fenced = Some(Instant::now());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (up, fenced)
    };
    let ((), timed) = tokio::join!(starting, timing);
    timed
}

async fn primary_wants_replicas(pair: &ClusterPair) -> bool {
    let mut total = 0;
    for name in pair.primary.deployment_names() {
        total += pair.primary.replicas(&name).await.unwrap_or(0);
    }
    total > 0
}

async fn daemon_outage(
    pair: &ClusterPair,
    standby: &DeploymentsWatch,
    p: Profile,
    rng: &mut Rng,
) -> Outage {
    bed::reset(pair, standby).await;
    let opts = DaemonOpts {
        interval: p.interval(),
        timeout: p.timeout(),
        failure_threshold: p.threshold,
        startup_grace: Duration::from_secs(2),
        ..DaemonOpts::default()
    };
    let started = Instant::now();
    let mut d = bed::start_daemon(pair, &opts).await;
    // A random phase within the interval: outages do not line up with the ticks.
    tokio::time::sleep(Duration::from_secs(1) + rng.duration(Duration::ZERO, p.interval())).await;
    let lead_in = started.elapsed().as_secs_f64();
    let (exited, scaled, ready) = stop_and_time(pair, standby).await;
    let mut fenced = None;
    if scaled.is_some() {
        // The promotion is recorded before the primary comes back, as in a real outage.
        let _ = wait_for(
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async { d.group().await.is_some_and(|g| g.state == "promoted") },
        )
        .await;
        let wait = p.interval().saturating_mul(p.threshold + 5) + Duration::from_secs(10);
        fenced = restart_and_time_fence(pair, wait).await;
    }
    let dual_active = standby.now().any_scaled() && primary_wants_replicas(pair).await;
    d.terminate().await;
    Outage {
        exited,
        scaled,
        ready,
        fenced,
        dual_active,
        lead_in,
    }
}

async fn naive_outage(
    pair: &ClusterPair,
    standby: &DeploymentsWatch,
    p: Profile,
    kubectl: &Kubectl,
    rng: &mut Rng,
    log: &std::path::Path,
) -> Outage {
    bed::reset(pair, standby).await;
    let started = Instant::now();
    let dog = Watchdog::start(
        kubectl,
        pair,
        naive::Settings {
            interval: p.interval(),
            timeout: p.timeout(),
            threshold: p.threshold,
        },
        log,
    );
    // One probe at least, then the same random phase as the daemon's.
    tokio::time::sleep(
        p.interval() + Duration::from_secs(1) + rng.duration(Duration::ZERO, p.interval()),
    )
    .await;
    let lead_in = started.elapsed().as_secs_f64();
    let (exited, scaled, ready) = stop_and_time(pair, standby).await;
    let mut fenced = None;
    if scaled.is_some() {
        // It has nothing that fences: two intervals (the daemon needs one or two) show
        // that both sides stay active.
        let wait = p.interval().saturating_mul(2) + Duration::from_secs(1);
        fenced = restart_and_time_fence(pair, wait).await;
    }
    let dual_active = standby.now().any_scaled() && primary_wants_replicas(pair).await;
    dog.stop().await;
    Outage {
        exited,
        scaled,
        ready,
        fenced,
        dual_active,
        lead_in,
    }
}

fn line(who: &str, k: usize, o: &Outage) -> String {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}s"));
    format!(
        "  {who:<7} #{k:<3} apiserver exited {:.2}s, scaled {}, Ready {}, fenced {}{}",
        o.exited,
        opt(o.scaled),
        opt(o.ready),
        opt(o.fenced),
        if o.dual_active { ", BOTH ACTIVE" } else { "" }
    )
}

/// Runs `n` outages per profile for the daemon and, with `kubectl`, the watchdog.
pub async fn run(
    profiles: &[Profile],
    n: usize,
    kubectl: Option<&Kubectl>,
    rng: &mut Rng,
) -> Vec<ProfileResult> {
    let mut results = Vec::new();
    for &p in profiles {
        println!(
            "outages, profile {} (probe timeout {:.1} s, budget {:.2} s): {n} each",
            p.name(),
            p.timeout().as_secs_f64(),
            p.budget_s()
        );
        let pair = pair().await;
        let standby = DeploymentsWatch::start(&pair.standby).await;
        let log = pair.primary.dir().join("kubectl-watchdog.log");
        let mut r = ProfileResult {
            profile: p,
            timeout_s: p.timeout().as_secs_f64(),
            daemon: Vec::new(),
            naive: Vec::new(),
        };
        for k in 1..=n {
            let o = daemon_outage(&pair, &standby, p, rng).await;
            println!("{}", line("daemon", k, &o));
            r.daemon.push(o);
            if let Some(kubectl) = kubectl {
                let o = naive_outage(&pair, &standby, p, kubectl, rng, &log).await;
                println!("{}", line("kubectl", k, &o));
                r.naive.push(o);
            }
        }
        results.push(r);
    }
    results
}

//! The false-promotion soak on the test bed: the daemon (1 s × 3) reaches the primary
//! through two fault proxies (daemon → TCP proxy → HTTP proxy → API server), and for
//! the whole duration the primary flaps just under the blip tolerance ((threshold − 1)
//! × interval) and suffers latency spikes just under the probe timeout, with healthy
//! gaps of 2 to 6 intervals between faults:
//!
//! - `readyz_fails`: `/readyz` answers 500 (an API server whose etcd check fails);
//! - `connections_reset`: every connection to the API server is reset, watches included;
//! - `pods_unready`: the Pods of one agent Deployment turn unready, then Ready again;
//! - `latency_spike`: every request is held for the probe timeout − 150 ms before it is
//!   forwarded, for 1 to 10 s.
//!
//! A promotion (a standby Deployment scaled up) is a false one (goal 0); after one, the
//! pair is reset and the soak goes on.

use crate::bed::{self, DeploymentsWatch};
use crate::outages::Profile;
use crate::stats::{Meta, Rng};
use crate::support::*;
use kube_failover_testbed::{FaultProxy, HttpFaultProxy, HttpRule, ProxyMode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The kinds of fault, in the order the report lists them.
pub const KINDS: [&str; 4] = [
    "readyz_fails",
    "connections_reset",
    "pods_unready",
    "latency_spike",
];

/// One kind's tally.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FaultTally {
    pub count: u64,
    pub longest_s: f64,
    pub total_s: f64,
}

/// The part's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoakReport {
    pub meta: Meta,
    pub profile: Profile,
    pub timeout_s: f64,
    /// (threshold − 1) × interval.
    pub tolerance_s: f64,
    /// How long a latency spike holds each request.
    pub spike_delay_s: f64,
    pub planned_s: f64,
    pub ran_s: f64,
    /// Per kind (see [`KINDS`]).
    pub faults: BTreeMap<String, FaultTally>,
    /// Every fault's duration (seconds), per kind, for the plot.
    pub durations: BTreeMap<String, Vec<f64>>,
    /// Standby scale-ups seen (goal 0).
    pub promotions: u64,
    /// `kube_failover_promotions_total{result="started"}`, summed over daemons.
    pub promotions_metric: f64,
    /// What happened before each promotion.
    pub promotion_notes: Vec<String>,
    /// The daemon's state changes, by the state entered.
    pub state_changes: BTreeMap<String, u64>,
    /// Failed probes of the primary, by reason.
    pub probe_failures: BTreeMap<String, f64>,
}

/// What a daemon said before it was stopped.
fn harvest(d: &Daemon, metrics: &str, r: &mut SoakReport) {
    r.promotions_metric += metric_value(metrics, STARTED).unwrap_or(0.0);
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("kube_failover_probe_failures_total{"))
        .filter(|l| l.contains("cluster=\"primary\""))
    {
        let reason = line
            .split("reason=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?")
            .to_string();
        let v: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if v > 0.0 {
            *r.probe_failures.entry(reason).or_insert(0.0) += v;
        }
    }
    let log = std::fs::read_to_string(&d.log).unwrap_or_default();
    for line in log.lines().filter(|l| l.contains("state changed")) {
        if let Some(to) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("to="))
            .map(|v| v.trim_matches('"').to_string())
        {
            *r.state_changes.entry(to).or_insert(0) += 1;
        }
    }
}

/// Runs the soak for `duration`.
pub async fn run(duration: Duration, rng: &mut Rng, meta: Meta) -> SoakReport {
    let p = Profile {
        interval_s: 1.0,
        threshold: 3,
    };
    let interval = p.interval();
    let timeout = p.timeout();
    let tolerance = interval.saturating_mul(p.threshold - 1);
    let spike_delay = timeout.saturating_sub(Duration::from_millis(150));
    let pair = pair().await;
    let standby = DeploymentsWatch::start(&pair.standby).await;
    let http = HttpFaultProxy::start(&pair.primary)
        .await
        .expect("HTTP fault proxy");
    let tcp = FaultProxy::start(http.addr())
        .await
        .expect("TCP fault proxy");
    let opts = DaemonOpts {
        interval,
        timeout,
        failure_threshold: p.threshold,
        startup_grace: Duration::from_secs(2),
        primary_kubeconfig: Some(
            pair.primary
                .daemon_kubeconfig_via(tcp.addr())
                .expect("kubeconfig via the proxies"),
        ),
        ..DaemonOpts::default()
    };
    let mut r = SoakReport {
        meta,
        profile: p,
        timeout_s: timeout.as_secs_f64(),
        tolerance_s: tolerance.as_secs_f64(),
        spike_delay_s: spike_delay.as_secs_f64(),
        planned_s: duration.as_secs_f64(),
        ran_s: 0.0,
        faults: BTreeMap::new(),
        durations: BTreeMap::new(),
        promotions: 0,
        promotions_metric: 0.0,
        promotion_notes: Vec::new(),
        state_changes: BTreeMap::new(),
        probe_failures: BTreeMap::new(),
    };
    bed::reset(&pair, &standby).await;
    let mut d = bed::start_daemon(&pair, &opts).await;
    let names = pair.primary.deployment_names();
    let started = Instant::now();
    let mut last = String::from("none yet");
    let mut report_at = Instant::now() + Duration::from_secs(60);
    while started.elapsed() < duration {
        tokio::time::sleep(rng.duration(interval * 2, interval * 6)).await;
        if standby.now().any_scaled() {
            r.promotions += 1;
            r.promotion_notes.push(format!(
                "at {:.0} s, after {last}",
                started.elapsed().as_secs_f64()
            ));
            println!(
                "  soak: PROMOTION at {:.0} s, after {last}",
                started.elapsed().as_secs_f64()
            );
            let m = d.metrics().await;
            harvest(&d, &m, &mut r);
            d.terminate().await;
            bed::reset(&pair, &standby).await;
            d = bed::start_daemon(&pair, &opts).await;
            continue;
        }
        let kind = *rng.pick(&KINDS);
        let flap = |rng: &mut Rng, margin: f64| {
            rng.duration(
                interval.mul_f64(0.3),
                tolerance.saturating_sub(Duration::from_secs_f64(margin)),
            )
        };
        let t0 = Instant::now();
        match kind {
            "readyz_fails" => {
                let d = flap(rng, 0.25);
                http.add_rule(HttpRule::readyz_failing());
                tokio::time::sleep(d).await;
                http.remove_rules("/readyz");
            }
            "connections_reset" => {
                let d = flap(rng, 0.25);
                tcp.set_mode(ProxyMode::Reset);
                tokio::time::sleep(d).await;
                tcp.set_mode(ProxyMode::Pass);
            }
            "pods_unready" => {
                // The patches take time too: the fault lasts from the first one sent to
                // the last one answered.
                let d = flap(rng, 0.45);
                let name = rng.pick(&names).clone();
                pair.primary
                    .set_pods_ready(&name, false)
                    .await
                    .expect("make pods unready");
                tokio::time::sleep(d.saturating_sub(t0.elapsed())).await;
                pair.primary
                    .set_pods_ready(&name, true)
                    .await
                    .expect("make pods Ready");
            }
            _ => {
                let d = rng.duration(Duration::from_secs(1), Duration::from_secs(10));
                http.add_rule(HttpRule::delay("/", spike_delay));
                tokio::time::sleep(d).await;
                http.remove_rules("/");
            }
        }
        let took = t0.elapsed().as_secs_f64();
        last = format!("{kind} for {took:.2} s");
        let t = r.faults.entry(kind.to_string()).or_default();
        t.count += 1;
        t.total_s += took;
        t.longest_s = t.longest_s.max(took);
        r.durations.entry(kind.to_string()).or_default().push(took);
        if Instant::now() >= report_at {
            report_at += Duration::from_secs(60);
            let n: u64 = r.faults.values().map(|t| t.count).sum();
            println!(
                "  soak: {:.0} of {:.0} s, {n} faults, {} promotions",
                started.elapsed().as_secs_f64(),
                duration.as_secs_f64(),
                r.promotions
            );
        }
    }
    // The last fault's consequences have time to show.
    tokio::time::sleep(interval * (p.threshold + 2)).await;
    if standby.now().any_scaled() {
        r.promotions += 1;
        r.promotion_notes.push(format!("at the end, after {last}"));
    }
    let m = d.metrics().await;
    harvest(&d, &m, &mut r);
    d.terminate().await;
    r.ran_s = started.elapsed().as_secs_f64();
    r
}

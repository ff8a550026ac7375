//! Failover timing on the real test bed: from stopping the primary's API server (the
//! moment SIGTERM is sent) to the standby's Deployments being scaled up and to them
//! being Ready, and from the primary's API answering again to its workloads being
//! fenced. Reports min, median and max over several runs; asserts nothing about time.
//!
//! `cargo bench --bench failover` (runs: `KUBE_FAILOVER_BENCH_RUNS`, default 5).
//! `KUBE_FAILOVER_BENCH_INSTANCES` (default `1,3`): the shapes measured, one daemon
//! (quorum 1) and the three instances the manifests ship (observer quorum 2 of 3), each
//! in the same runs on the same test bed, so their times compare on equal terms.
//! `KUBE_FAILOVER_BENCH_CPU_HOGS=N` keeps N threads spinning at the daemon's priority
//! for the whole run (a busy host: N above the core count queues every process), and
//! reports the load average beside the timings.

#[path = "../tests/support/mod.rs"]
mod support;

use kube_failover_testbed::ClusterPair;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::*;

struct Sample {
    /// How long the API server took to exit after SIGTERM.
    stop: Duration,
    scaled: Duration,
    ready: Duration,
    fenced: Duration,
}

/// `instances` daemons on the pair: one deciding alone, or several with observer quorum
/// 2; returned once every one is `primary_active`, one of them leads, and each sees every
/// instance's verdict fresh (a promotion then waits for nothing but the evidence).
async fn start_daemons(pair: &ClusterPair, instances: usize) -> Vec<Daemon> {
    if instances <= 1 {
        let d = Daemon::start(pair, &DaemonOpts::default()).await;
        d.wait_state("primary_active", Duration::from_secs(20))
            .await;
        return vec![d];
    }
    let opts: Vec<DaemonOpts> = (0..instances)
        .map(|i| DaemonOpts {
            identity: Some(format!("bench-{i}")),
            observer_quorum: 2,
            observers_expected: Some(u32::try_from(instances).unwrap_or(u32::MAX)),
            ..DaemonOpts::default()
        })
        .collect();
    let daemons = futures::future::join_all(opts.iter().map(|o| Daemon::start(pair, o))).await;
    let settled = wait_for(
        Duration::from_secs(60),
        Duration::from_millis(200),
        || async {
            let mut leaders = 0;
            for d in &daemons {
                let Some(g) = d.group().await else {
                    return false;
                };
                let Some(c) = g.coordination else {
                    return false;
                };
                if g.state != "primary_active"
                    || c.observers.iter().filter(|o| o.fresh).count() < instances
                {
                    return false;
                }
                leaders += usize::from(c.role == "leader");
            }
            leaders == 1
        },
    )
    .await;
    assert!(
        settled.is_some(),
        "{instances} instances did not settle with one leader"
    );
    daemons
}

async fn one_run(instances: usize) -> Sample {
    let pair = pair().await;
    let daemons = start_daemons(&pair, instances).await;
    // The standby is watched while the API server is still shutting down, not after.
    let took = stop_primary_api_and_time_promotion(&pair, Duration::from_millis(20)).await;
    daemons[0]
        .wait_state("promoted", Duration::from_secs(10))
        .await;
    pair.primary.start_apiserver().await.expect("start primary");
    let t1 = Instant::now();
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { replicas(&pair.primary).await == 0 },
    )
    .await
    .expect("primary fenced");
    Sample {
        stop: took.exited,
        scaled: took.scaled,
        ready: took.ready,
        fenced: t1.elapsed(),
    }
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "{name}: min {:.2}s  median {:.2}s  max {:.2}s  (n={})",
        secs(v[0]),
        secs(v[v.len() / 2]),
        secs(v[v.len() - 1]),
        v.len()
    );
}

/// Threads that spin until `stop` is set: CPU load at the bench's (and the daemon's)
/// priority.
fn cpu_hogs(n: usize, stop: &'static AtomicBool) -> Vec<std::thread::JoinHandle<()>> {
    (0..n)
        .map(|_| {
            std::thread::spawn(move || {
                let mut x: u64 = 1;
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..100_000 {
                        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005));
                    }
                }
            })
        })
        .collect()
}

/// The 1-minute load average, as /proc/loadavg says.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn main() {
    let env = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
    };
    let runs = env("KUBE_FAILOVER_BENCH_RUNS").unwrap_or(5);
    let hogs = env("KUBE_FAILOVER_BENCH_CPU_HOGS").unwrap_or(0);
    static STOP: AtomicBool = AtomicBool::new(false);
    let spinning = cpu_hogs(hogs, &STOP);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let shapes: Vec<usize> = std::env::var("KUBE_FAILOVER_BENCH_INSTANCES")
        .unwrap_or_else(|_| "1,3".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("KUBE_FAILOVER_BENCH_INSTANCES: numbers separated by commas")
        })
        .collect();
    // Runs alternate between the shapes, so a busier minute of the host weighs on both.
    let mut samples: Vec<(usize, Sample)> = Vec::new();
    for i in 0..runs {
        for &instances in &shapes {
            let s = rt.block_on(one_run(instances));
            println!(
                "run {} ({instances} instance{}): apiserver exited {:.2}s, scaled {:.2}s, Ready {:.2}s, fenced {:.2}s, load average {:.1}",
                i + 1,
                if instances == 1 { "" } else { "s" },
                s.stop.as_secs_f64(),
                s.scaled.as_secs_f64(),
                s.ready.as_secs_f64(),
                s.fenced.as_secs_f64(),
                load_average().unwrap_or(f64::NAN)
            );
            samples.push((instances, s));
        }
    }
    STOP.store(true, Ordering::Relaxed);
    for h in spinning {
        let _ = h.join();
    }
    println!(
        "failover with probe_interval 1s, failure_threshold 3, {hogs} spinning threads on {} cores:",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    for &instances in &shapes {
        let of = |f: fn(&Sample) -> Duration| -> Vec<Duration> {
            samples
                .iter()
                .filter(|(n, _)| *n == instances)
                .map(|(_, s)| f(s))
                .collect()
        };
        let shape = if instances == 1 {
            "1 instance".to_string()
        } else {
            format!("{instances} instances, quorum 2")
        };
        summary(
            &format!("{shape}: primary apiserver stop -> standby scaled"),
            of(|s| s.scaled),
        );
        summary(
            &format!("{shape}: primary apiserver stop -> standby Ready"),
            of(|s| s.ready),
        );
        summary(
            &format!("{shape}: primary API back -> primary fenced"),
            of(|s| s.fenced),
        );
    }
}

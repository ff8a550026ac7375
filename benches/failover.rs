//! Failover timing on the real test bed: from stopping the primary's API server (the
//! moment SIGTERM is sent) to the standby's Deployments being scaled up and to them
//! being Ready, and from the primary's API answering again to its workloads being
//! fenced. Reports min, median and max over several runs; asserts nothing about time.
//!
//! `cargo bench --bench failover` (runs: `KUBE_FAILOVER_BENCH_RUNS`, default 5).
//! `KUBE_FAILOVER_BENCH_CPU_HOGS=N` keeps N threads spinning at the daemon's priority
//! for the whole run (a busy host: N above the core count queues every process), and
//! reports the load average beside the timings.

#[path = "../tests/support/mod.rs"]
mod support;

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

async fn one_run() -> Sample {
    let pair = pair().await;
    let d = Daemon::start(&pair, &DaemonOpts::default()).await;
    d.wait_state("primary_active", Duration::from_secs(20))
        .await;
    // The standby is watched while the API server is still shutting down, not after.
    let took = stop_primary_api_and_time_promotion(&pair, Duration::from_millis(20)).await;
    d.wait_state("promoted", Duration::from_secs(10)).await;
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
    let samples: Vec<Sample> = (0..runs)
        .map(|i| {
            let s = rt.block_on(one_run());
            println!(
                "run {}: apiserver exited {:.2}s, scaled {:.2}s, Ready {:.2}s, fenced {:.2}s, load average {:.1}",
                i + 1,
                s.stop.as_secs_f64(),
                s.scaled.as_secs_f64(),
                s.ready.as_secs_f64(),
                s.fenced.as_secs_f64(),
                load_average().unwrap_or(f64::NAN)
            );
            s
        })
        .collect();
    STOP.store(true, Ordering::Relaxed);
    for h in spinning {
        let _ = h.join();
    }
    println!(
        "failover with probe_interval 1s, failure_threshold 3, {hogs} spinning threads on {} cores:",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    summary(
        "primary apiserver stop -> standby scaled",
        samples.iter().map(|s| s.scaled).collect(),
    );
    summary(
        "primary apiserver stop -> standby Ready",
        samples.iter().map(|s| s.ready).collect(),
    );
    summary(
        "primary API back -> primary fenced",
        samples.iter().map(|s| s.fenced).collect(),
    );
}

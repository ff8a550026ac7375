//! Failover timing on the real test bed: from stopping the primary's API server (the
//! moment SIGTERM is sent) to the standby's Deployments being scaled up and to them
//! being Ready, and from the primary's API answering again to its workloads being
//! fenced. Reports min, median and max over several runs; asserts nothing about time.
//!
//! `cargo bench --bench failover` (runs: `KUBE_FAILOVER_BENCH_RUNS`, default 5).

#[path = "../tests/support/mod.rs"]
mod support;

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

fn main() {
    let runs: usize = std::env::var("KUBE_FAILOVER_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let samples: Vec<Sample> = (0..runs)
        .map(|i| {
            let s = rt.block_on(one_run());
            println!(
                "run {}: apiserver exited {:.2}s, scaled {:.2}s, Ready {:.2}s, fenced {:.2}s",
                i + 1,
                s.stop.as_secs_f64(),
                s.scaled.as_secs_f64(),
                s.ready.as_secs_f64(),
                s.fenced.as_secs_f64()
            );
            s
        })
        .collect();
    println!("failover with probe_interval 1s, failure_threshold 3:");
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

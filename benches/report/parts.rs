//! The footprint part of the report: the daemon at 1, 10, 50, 200 groups, one namespace
//! per group with one instance and with three, and all in one namespace with one
//! instance (the same measurement as `cargo bench --bench footprint`), then the kubectl
//! watchdog with one loop per group, on the same pair and baseline.

use crate::footprint::{self, Baseline, Row, Window};
use crate::naive::{Kubectl, Settings, Watchdog};
use crate::stats::Meta;
use crate::support::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The watchdog loops' footprint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NaiveRow {
    /// Loops running (one per group a user protects).
    pub loops: usize,
    /// Requests per tick: primary, standby.
    pub per_tick: [f64; 2],
    pub verbs: [BTreeMap<String, f64>; 2],
    /// The loops and every command they ran, % of one core.
    pub cpu: f64,
    /// API server CPU added, % of one core: primary, standby.
    pub apiserver_cpu: [f64; 2],
}

/// The part's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FootprintReport {
    pub meta: Meta,
    pub window_s: f64,
    pub baseline: Baseline,
    pub rows: Vec<Row>,
    pub naive: Vec<NaiveRow>,
    /// The watchdog's kubectl: path and `version --client`.
    pub kubectl: Option<(String, String)>,
}

/// How long the loops run before the window opens.
const NAIVE_WARM_UP: Duration = Duration::from_secs(5);

async fn measure_naive(
    pair: &kube_failover_testbed::ClusterPair,
    kubectl: &Kubectl,
    loops: usize,
    window: Duration,
    baseline: &Baseline,
) -> NaiveRow {
    let s = Settings {
        interval: footprint::INTERVAL,
        timeout: Duration::from_millis(800),
        threshold: 3,
    };
    let dogs: Vec<Watchdog> = (0..loops)
        .map(|i| {
            let log = pair.primary.dir().join(format!("watchdog-{i}.log"));
            Watchdog::start(kubectl, pair, s, &log)
        })
        .collect();
    tokio::time::sleep(NAIVE_WARM_UP).await;
    let w = Window::open(pair).await;
    let cpu0: f64 = dogs.iter().map(Watchdog::cpu_seconds).sum();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let cpu1: f64 = dogs.iter().map(Watchdog::cpu_seconds).sum();
    let cpu = (cpu1 - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    let load = w.close(pair, baseline, footprint::INTERVAL, 0.5).await;
    for d in dogs {
        d.stop().await;
    }
    NaiveRow {
        loops,
        per_tick: load.per_tick(),
        verbs: load.verbs,
        cpu,
        apiserver_cpu: load.apiserver_cpu,
    }
}

/// Runs the footprint part.
pub async fn footprint(
    groups: &[usize],
    loops: &[usize],
    window: Duration,
    kubectl: Option<&Kubectl>,
    meta: Meta,
) -> FootprintReport {
    let pair = pair().await;
    footprint::add_namespaces_and_settle(&pair, groups.iter().copied().max().unwrap_or(0)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let baseline = Baseline::measure(&pair, window).await;
    println!("footprint: {}", baseline.describe());
    println!("{}", footprint::TABLE_HEADER);
    let mut rows = Vec::new();
    // The shape users run (one namespace per group) with one instance and with three,
    // then every group in one namespace with one instance.
    let setups = [
        (footprint::Shape::Namespaces, 1),
        (footprint::Shape::Namespaces, 3),
        (footprint::Shape::Shared, 1),
    ];
    for (shape, instances) in setups {
        for &n in groups {
            let setup = footprint::Setup {
                groups: n,
                shape,
                instances,
                cluster_watch: false,
            };
            let r = footprint::measure(&pair, setup, window, &baseline).await;
            println!("{}", r.table_line());
            rows.push(r);
        }
    }
    let mut naive = Vec::new();
    if let Some(k) = kubectl {
        for &n in loops {
            let r = measure_naive(&pair, k, n, window, &baseline).await;
            println!(
                "kubectl watchdog, {n} loops: requests per tick {:.2} / {:.2}, CPU {:.2} %",
                r.per_tick[0], r.per_tick[1], r.cpu
            );
            naive.push(r);
        }
    }
    FootprintReport {
        meta,
        window_s: window.as_secs_f64(),
        baseline,
        rows,
        naive,
        kubectl: kubectl.map(|k| (k.path.display().to_string(), k.version.clone())),
    }
}

//! The daemon's footprint on the clusters it protects and on its host, on the real test
//! bed: one cluster pair, the release daemon binary with N groups (1, 10, 50, 200 by
//! default) that all watch the same Deployments under distinct group and record names,
//! probe interval 1 s, both clusters healthy.
//!
//! For each N, after a warm-up, over a window (default 30 s):
//! - API requests per cluster per tick: the increase of each API server's own
//!   `apiserver_request_total` (read from its `/metrics` with the admin credentials)
//!   minus the same window measured before any daemon ran (the test bed's controller
//!   manager and kwok, and these reads themselves), divided by the ticks of the window;
//!   watch requests count when they end (every 5 s per watch);
//! - daemon RSS (at the end) and CPU (share of one core over the window), API server CPU
//!   added over the baseline;
//! - tick duration p50 / p99 (from `kube_failover_tick_duration_seconds`, interpolated in
//!   its buckets as Prometheus does);
//! - groups that ever left `primary_active` after their first tick (frozen, suspect,
//!   down) and failed probes: on a healthy pair both should be 0.
//!
//! `cargo bench --bench footprint`; `KUBE_FAILOVER_BENCH_GROUPS=1,10` picks the group
//! counts, `KUBE_FAILOVER_BENCH_SECS` the window, `KUBE_FAILOVER_BENCH_BIN` another
//! daemon binary (an older release, for comparison). Prints a Markdown table; asserts
//! nothing. The report (`cargo bench --bench report`) runs the same measurement, writes
//! it into BENCHMARKS.md and plots it.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/footprint.rs"]
#[allow(dead_code)]
mod footprint;

use std::time::Duration;
use support::*;

fn main() {
    let groups: Vec<usize> = std::env::var("KUBE_FAILOVER_BENCH_GROUPS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 10, 50, 200]);
    let window = Duration::from_secs(
        std::env::var("KUBE_FAILOVER_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let pair = pair().await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let baseline = footprint::Baseline::measure(&pair, window).await;
        println!("{}", baseline.describe());
        println!();
        println!("{}", footprint::TABLE_HEADER);
        for n in groups {
            let r = footprint::measure(&pair, n, window, &baseline).await;
            println!("{}", r.table_line());
        }
    });
}

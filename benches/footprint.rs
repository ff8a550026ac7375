//! The daemon's footprint on the clusters it protects and on its host, on the real test
//! bed: one cluster pair, the release daemon binary with N groups (1, 10, 50, 200 by
//! default), probe interval 1 s, both clusters healthy, in two shapes:
//! - **namespace per group** (the headline, the shape users run: one Helm release of the
//!   agent per namespace): group i watches the Deployments of `agent-<i>` on both
//!   clusters, created before the baseline is measured;
//! - **one namespace**: every group watches the same Deployments under distinct group
//!   and record names;
//!
//! each with one instance and with three (observer quorum 2 of 3, the shipped shape).
//!
//! For each setup, after a warm-up, over a window (default 30 s):
//! - API requests per second per cluster: the increase of each API server's own
//!   `apiserver_request_total` (read from its `/metrics` with the admin credentials),
//!   by verb and resource, minus the same window measured before any daemon ran (the
//!   test bed's controller manager and kwok, and these reads themselves); a watch
//!   request counts when it ends; writes (POST, PUT, PATCH, DELETE) apart;
//! - each instance's RSS (at the end) and CPU (share of one core over the window), API
//!   server CPU added over the baseline;
//! - tick duration p50 / p99 of the first instance (from
//!   `kube_failover_tick_duration_seconds`, interpolated in its buckets as Prometheus
//!   does);
//! - groups led by some instance at the end, groups that ever left `primary_active`
//!   after their first tick in any instance, and failed probes: on a healthy pair all
//!   groups led, 0 and 0.
//!
//! `cargo bench --bench footprint`; `KUBE_FAILOVER_BENCH_GROUPS=1,10` picks the group
//! counts, `KUBE_FAILOVER_BENCH_SHAPES=namespaces,shared` the shapes,
//! `KUBE_FAILOVER_BENCH_INSTANCES=1,3` the instance counts,
//! `KUBE_FAILOVER_BENCH_SCOPES=namespaces,cluster` the watch scopes (`namespaces` by
//! default; `cluster` grants the daemon the ClusterRole of
//! `deploy/kubernetes/target-rbac/cluster-watch` first), `KUBE_FAILOVER_BENCH_SECS`
//! the window, `KUBE_FAILOVER_BENCH_BIN` another daemon binary (an older release, for
//! comparison). Prints a Markdown table; asserts nothing. The report (`cargo bench
//! --bench report`) runs the same measurement, writes it into BENCHMARKS.md and plots
//! it.

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/footprint.rs"]
#[allow(dead_code)]
mod footprint;

use std::time::Duration;
use support::*;

fn list<T: std::str::FromStr>(var: &str, default: &str) -> Vec<T> {
    std::env::var(var)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

fn main() {
    let groups: Vec<usize> = list("KUBE_FAILOVER_BENCH_GROUPS", "1,10,50,200");
    let instances: Vec<usize> = list("KUBE_FAILOVER_BENCH_INSTANCES", "1,3");
    let shapes: Vec<footprint::Shape> = std::env::var("KUBE_FAILOVER_BENCH_SHAPES")
        .unwrap_or_else(|_| "namespaces,shared".to_string())
        .split(',')
        .filter_map(|s| match s.trim() {
            "namespaces" => Some(footprint::Shape::Namespaces),
            "shared" => Some(footprint::Shape::Shared),
            _ => None,
        })
        .collect();
    let scopes: Vec<bool> = std::env::var("KUBE_FAILOVER_BENCH_SCOPES")
        .unwrap_or_else(|_| "namespaces".to_string())
        .split(',')
        .filter_map(|s| match s.trim() {
            "namespaces" => Some(false),
            "cluster" => Some(true),
            _ => None,
        })
        .collect();
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
        if shapes.contains(&footprint::Shape::Namespaces) {
            let most = groups.iter().copied().max().unwrap_or(0);
            footprint::add_namespaces_and_settle(&pair, most).await;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let baseline = footprint::Baseline::measure(&pair, window).await;
        println!("{}", baseline.describe());
        println!();
        println!("{}", footprint::TABLE_HEADER);
        if scopes.contains(&true) {
            for c in [&pair.primary, &pair.standby] {
                c.grant_daemon_cluster_role(std::path::Path::new("cluster-watch/clusterrole.yaml"))
                    .await
                    .expect("grant the cluster-watch ClusterRole");
            }
        }
        for &cluster_watch in &scopes {
            for &shape in &shapes {
                for &n in &instances {
                    for &g in &groups {
                        let setup = footprint::Setup {
                            groups: g,
                            shape,
                            instances: n,
                            cluster_watch,
                        };
                        let r = footprint::measure(&pair, setup, window, &baseline).await;
                        println!("{}", r.table_line());
                    }
                }
            }
        }
    });
}

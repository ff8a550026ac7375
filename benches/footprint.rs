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
//! nothing.

#[path = "../tests/support/mod.rs"]
mod support;

use kube_failover_testbed::{Cluster, ClusterPair};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::*;

const INTERVAL: Duration = Duration::from_secs(1);
const WARM_UP: Duration = Duration::from_secs(15);

/// `apiserver_request_total` summed by verb.
async fn requests_by_verb(c: &Cluster) -> BTreeMap<String, f64> {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = c.client().request_text(req).await.unwrap_or_default();
    let mut by_verb = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let verb = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix("verb=\""))
            .map(|v| v.trim_end_matches('"').to_string())
            .unwrap_or_default();
        *by_verb.entry(verb).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    by_verb
}

fn diff(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces), from its ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// The API server's process id (the second of the test bed's processes).
fn apiserver_pid(c: &Cluster) -> u32 {
    c.pids().get(1).copied().unwrap_or(0)
}

/// Cumulative bucket counts of the tick histogram, summed over its series (older
/// releases had one per group).
fn tick_buckets(metrics: &str) -> Vec<(f64, f64)> {
    let mut by_le: Vec<(f64, f64)> = Vec::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("kube_failover_tick_duration_seconds_bucket{"))
    {
        let Some((labels, value)) = line.rsplit_once("} ") else {
            continue;
        };
        let Some(le) = labels
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            match le.parse() {
                Ok(v) => v,
                Err(_) => continue,
            }
        };
        let v: f64 = value.parse().unwrap_or(0.0);
        match by_le.iter_mut().find(|(l, _)| *l == le) {
            Some(slot) => slot.1 += v,
            None => by_le.push((le, v)),
        }
    }
    by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
    by_le
}

/// A quantile of the observations between two snapshots, interpolated within buckets.
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let counts: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, v)| {
            let b = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, v)| *v);
            (*le, v - b)
        })
        .collect();
    let total = counts.last().map_or(0.0, |(_, v)| *v);
    if total == 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for (le, c) in counts {
        if c >= rank {
            if le.is_infinite() {
                return prev.0;
            }
            let span = c - prev.1;
            let frac = if span > 0.0 {
                (rank - prev.1) / span
            } else {
                1.0
            };
            return prev.0 + (le - prev.0) * frac;
        }
        prev = (le, c);
    }
    prev.0
}

fn config(pair: &ClusterPair, admin: SocketAddr, groups: usize) -> String {
    let opts = DaemonOpts {
        interval: INTERVAL,
        ..DaemonOpts::default()
    };
    let one = config_toml(pair, &opts, admin);
    let at = one.find("[[groups]]").expect("a group in the config");
    let (head, block) = one.split_at(at);
    let mut text = head.to_string();
    for i in 0..groups {
        text.push_str(&block.replacen(
            "name = \"env0\"",
            &format!("name = \"env0-{i:03}\"\nrecord_name = \"kube-failover-env0-{i:03}\""),
            1,
        ));
        text.push('\n');
    }
    text
}

struct Row {
    groups: usize,
    per_tick: [f64; 2],
    verbs: [BTreeMap<String, f64>; 2],
    rss: f64,
    cpu: f64,
    apiserver_cpu: [f64; 2],
    p50: f64,
    p99: f64,
    left_active: usize,
    failures: f64,
    metrics_bytes: usize,
    status_bytes: usize,
}

async fn get(http: &reqwest::Client, admin: SocketAddr, path: &str) -> String {
    match http.get(format!("http://{admin}{path}")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn measure(
    pair: &ClusterPair,
    groups: usize,
    window: Duration,
    baseline: &[BTreeMap<String, f64>; 2],
    baseline_cpu: [f64; 2],
) -> Row {
    let admin = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dir = pair.primary.dir().to_path_buf();
    let path = dir.join(format!("footprint-{groups}.toml"));
    std::fs::write(&path, config(pair, admin, groups)).unwrap();
    let log = dir.join(format!("footprint-{groups}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let bin = std::env::var_os("KUBE_FAILOVER_BENCH_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_kube-failover").into());
    let mut child = tokio::process::Command::new(bin)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn kube-failover");
    let pid = child.id().unwrap_or(0);
    let http = reqwest::Client::new();
    tokio::time::sleep(WARM_UP).await;

    let clusters = [&pair.primary, &pair.standby];
    let before = [
        requests_by_verb(clusters[0]).await,
        requests_by_verb(clusters[1]).await,
    ];
    let api_cpu0 = clusters.map(|c| cpu_seconds(apiserver_pid(c)));
    let cpu0 = cpu_seconds(pid);
    let m0 = get(&http, admin, "/metrics").await;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let m1 = get(&http, admin, "/metrics").await;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(pid) - cpu0) / elapsed * 100.0;
    let api_cpu1 = clusters.map(|c| cpu_seconds(apiserver_pid(c)));
    let after = [
        requests_by_verb(clusters[0]).await,
        requests_by_verb(clusters[1]).await,
    ];
    let rss = rss_mib(pid);
    let status = get(&http, admin, "/status").await;
    let ticks = elapsed / INTERVAL.as_secs_f64();
    let verbs = [0, 1].map(|i| {
        let mut d = diff(&after[i], &before[i]);
        for (verb, base) in &baseline[i] {
            if let Some(v) = d.get_mut(verb) {
                *v -= base * elapsed;
            }
        }
        d.retain(|_, v| *v > 0.5);
        d.values_mut().for_each(|v| *v /= ticks);
        d
    });
    let per_tick = [0, 1].map(|i| verbs[i].values().sum());
    let apiserver_cpu =
        [0, 1].map(|i| ((api_cpu1[i] - api_cpu0[i]) / elapsed * 100.0 - baseline_cpu[i]).max(0.0));
    let (b0, b1) = (tick_buckets(&m0), tick_buckets(&m1));
    let failures: f64 = m1
        .lines()
        .filter(|l| l.starts_with("kube_failover_probe_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let _ = child.start_kill();
    let _ = child.wait().await;
    // Every state change after a group's first tick (starting → primary_active).
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut left = std::collections::BTreeSet::new();
    for line in text.lines().filter(|l| l.contains("state changed")) {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(|v| v.trim_matches('"').to_string())
        };
        if field("to=").as_deref() != Some("primary_active") {
            left.insert(field("group=").unwrap_or_default());
        }
    }
    Row {
        groups,
        per_tick,
        verbs,
        rss,
        cpu,
        apiserver_cpu,
        p50: quantile(&b0, &b1, 0.5),
        p99: quantile(&b0, &b1, 0.99),
        left_active: left.len(),
        failures,
        metrics_bytes: m1.len(),
        status_bytes: status.len(),
    }
}

fn verbs_text(v: &BTreeMap<String, f64>) -> String {
    v.iter()
        .map(|(k, n)| format!("{k} {n:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

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
        // The test bed's own traffic, per second, without any daemon.
        let clusters = [&pair.primary, &pair.standby];
        let b0 = [
            requests_by_verb(clusters[0]).await,
            requests_by_verb(clusters[1]).await,
        ];
        let c0 = clusters.map(|c| cpu_seconds(apiserver_pid(c)));
        let t0 = Instant::now();
        tokio::time::sleep(window).await;
        let b1 = [
            requests_by_verb(clusters[0]).await,
            requests_by_verb(clusters[1]).await,
        ];
        let secs = t0.elapsed().as_secs_f64();
        let c1 = clusters.map(|c| cpu_seconds(apiserver_pid(c)));
        let baseline = [0, 1].map(|i| {
            let mut d = diff(&b1[i], &b0[i]);
            d.values_mut().for_each(|v| *v /= secs);
            d
        });
        let baseline_cpu = [0, 1].map(|i| (c1[i] - c0[i]) / secs * 100.0);
        println!(
            "baseline without the daemon: primary {:.1} req/s ({}), standby {:.1} req/s; API server CPU {:.1} % / {:.1} %",
            baseline[0].values().sum::<f64>(),
            verbs_text(&baseline[0]),
            baseline[1].values().sum::<f64>(),
            baseline_cpu[0],
            baseline_cpu[1],
        );
        println!();
        println!(
            "| groups | requests per tick: primary / standby | by verb (primary; standby) | daemon RSS | daemon CPU (one core) | API server CPU added (primary / standby) | tick p50 / p99 | groups that left primary_active | failed probes | /metrics | /status |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for n in groups {
            let r = measure(&pair, n, window, &baseline, baseline_cpu).await;
            println!(
                "| {} | {:.2} / {:.2} | {}; {} | {:.1} MiB | {:.2} % | {:.1} % / {:.1} % | {:.1} / {:.1} ms | {} | {:.0} | {:.0} kB | {:.0} kB |",
                r.groups,
                r.per_tick[0],
                r.per_tick[1],
                verbs_text(&r.verbs[0]),
                verbs_text(&r.verbs[1]),
                r.rss,
                r.cpu,
                r.apiserver_cpu[0],
                r.apiserver_cpu[1],
                r.p50 * 1000.0,
                r.p99 * 1000.0,
                r.left_active,
                r.failures,
                r.metrics_bytes as f64 / 1000.0,
                r.status_bytes as f64 / 1000.0,
            );
        }
    });
}

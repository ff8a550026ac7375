//! Measuring a watcher's footprint on a test-bed pair, shared by `benches/footprint.rs`
//! and the report (`benches/report`): requests per tick from the API servers' own
//! `apiserver_request_total`, API server CPU, and the daemon's RSS, CPU, tick duration
//! and judgement with N groups.

use crate::support::*;
use kube_failover_testbed::{Cluster, ClusterPair};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// The probe interval of every footprint measurement.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How long a daemon runs before the window opens.
pub const WARM_UP: Duration = Duration::from_secs(15);

/// `apiserver_request_total` summed by verb.
pub async fn requests_by_verb(c: &Cluster) -> BTreeMap<String, f64> {
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

/// Fields of `/proc/<pid>/stat` after the command name (which may contain spaces).
fn stat_fields(pid: u32) -> Vec<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    after
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(0.0))
        .collect()
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let f = stat_fields(pid);
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 after ')'.
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0);
    (at(11) + at(12)) / 100.0
}

/// utime + stime of a process and of its children it has waited for (cutime, cstime:
/// fields 16 and 17), in seconds: a shell loop's CPU with every command it ran.
pub fn cpu_seconds_with_children(pid: u32) -> f64 {
    let f = stat_fields(pid);
    let at = |i: usize| f.get(i).copied().unwrap_or(0.0);
    (at(11) + at(12) + at(13) + at(14)) / 100.0
}

/// Resident memory of a process, MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// The API server's process id (the second of the test bed's processes).
pub fn apiserver_pid(c: &Cluster) -> u32 {
    c.pids().get(1).copied().unwrap_or(0)
}

/// The test bed's own traffic and API server CPU, per second, with no watcher running.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    /// Requests per second by verb: primary, standby.
    pub per_sec: [BTreeMap<String, f64>; 2],
    /// API server CPU, % of one core: primary, standby.
    pub cpu: [f64; 2],
}

impl Baseline {
    /// Measures the pair over `window` (nothing else may talk to it meanwhile).
    pub async fn measure(pair: &ClusterPair, window: Duration) -> Baseline {
        let zero = Baseline {
            per_sec: [BTreeMap::new(), BTreeMap::new()],
            cpu: [0.0, 0.0],
        };
        let w = Window::open(pair).await;
        tokio::time::sleep(window).await;
        let load = w.close(pair, &zero, Duration::from_secs(1), 0.0).await;
        Baseline {
            per_sec: load.verbs,
            cpu: load.apiserver_cpu,
        }
    }

    /// One line for the console.
    pub fn describe(&self) -> String {
        format!(
            "baseline without the daemon: primary {:.1} req/s ({}), standby {:.1} req/s; API server CPU {:.1} % / {:.1} %",
            self.per_sec[0].values().sum::<f64>(),
            verbs_text(&self.per_sec[0]),
            self.per_sec[1].values().sum::<f64>(),
            self.cpu[0],
            self.cpu[1],
        )
    }
}

/// The API servers' counters when a measurement window opened.
pub struct Window {
    before: [BTreeMap<String, f64>; 2],
    api_cpu: [f64; 2],
    t0: Instant,
}

/// What a window saw on the API servers, the baseline taken out.
#[derive(Debug, Clone)]
pub struct ApiLoad {
    /// Seconds the window lasted.
    pub elapsed: f64,
    /// Requests per tick by verb (per second for the baseline): primary, standby.
    pub verbs: [BTreeMap<String, f64>; 2],
    /// API server CPU added, % of one core: primary, standby.
    pub apiserver_cpu: [f64; 2],
}

impl ApiLoad {
    /// Requests per tick: primary, standby.
    pub fn per_tick(&self) -> [f64; 2] {
        // An empty sum is -0.0.
        [0, 1].map(|i| self.verbs[i].values().sum::<f64>() + 0.0)
    }
}

impl Window {
    /// Reads the counters now.
    pub async fn open(pair: &ClusterPair) -> Window {
        let clusters = [&pair.primary, &pair.standby];
        Window {
            before: [
                requests_by_verb(clusters[0]).await,
                requests_by_verb(clusters[1]).await,
            ],
            api_cpu: clusters.map(|c| cpu_seconds(apiserver_pid(c))),
            t0: Instant::now(),
        }
    }

    /// Reads them again: the increase, minus the baseline, per `tick`. Counts below
    /// `min_count` over the window (the noise of the baseline's subtraction) are dropped.
    pub async fn close(
        self,
        pair: &ClusterPair,
        baseline: &Baseline,
        tick: Duration,
        min_count: f64,
    ) -> ApiLoad {
        let clusters = [&pair.primary, &pair.standby];
        let elapsed = self.t0.elapsed().as_secs_f64();
        let api_cpu1 = clusters.map(|c| cpu_seconds(apiserver_pid(c)));
        let after = [
            requests_by_verb(clusters[0]).await,
            requests_by_verb(clusters[1]).await,
        ];
        let ticks = elapsed / tick.as_secs_f64();
        let verbs = [0, 1].map(|i| {
            let mut d = diff(&after[i], &self.before[i]);
            for (verb, base) in &baseline.per_sec[i] {
                if let Some(v) = d.get_mut(verb) {
                    *v -= base * elapsed;
                }
            }
            d.retain(|_, v| *v > min_count);
            d.values_mut().for_each(|v| *v /= ticks);
            d
        });
        let apiserver_cpu = [0, 1].map(|i| {
            ((api_cpu1[i] - self.api_cpu[i]) / elapsed * 100.0 - baseline.cpu[i]).max(0.0)
        });
        ApiLoad {
            elapsed,
            verbs,
            apiserver_cpu,
        }
    }
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
fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
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
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for (le, c) in counts {
        if c >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let span = c - prev.1;
            let frac = if span > 0.0 {
                (rank - prev.1) / span
            } else {
                1.0
            };
            return Some(prev.0 + (le - prev.0) * frac);
        }
        prev = (le, c);
    }
    Some(prev.0)
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

/// The daemon's footprint with one number of groups.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub groups: usize,
    /// Requests per tick: primary, standby.
    pub per_tick: [f64; 2],
    pub verbs: [BTreeMap<String, f64>; 2],
    /// MiB.
    pub rss: f64,
    /// % of one core.
    pub cpu: f64,
    /// % of one core added: primary, standby.
    pub apiserver_cpu: [f64; 2],
    /// Tick duration quantiles, seconds (`None` without ticks in the window).
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub left_active: usize,
    pub failures: f64,
    pub metrics_bytes: usize,
    pub status_bytes: usize,
}

async fn get(http: &reqwest::Client, admin: SocketAddr, path: &str) -> String {
    match http.get(format!("http://{admin}{path}")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Runs the daemon with `groups` groups on `pair` and measures it over `window` after
/// the warm-up.
pub async fn measure(
    pair: &ClusterPair,
    groups: usize,
    window: Duration,
    baseline: &Baseline,
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
    let mut child = tokio::process::Command::new(daemon_bin())
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

    let w = Window::open(pair).await;
    let cpu0 = cpu_seconds(pid);
    let m0 = get(&http, admin, "/metrics").await;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let m1 = get(&http, admin, "/metrics").await;
    let cpu = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    let load = w.close(pair, baseline, INTERVAL, 0.5).await;
    let rss = rss_mib(pid);
    let status = get(&http, admin, "/status").await;
    let (b0, b1) = (tick_buckets(&m0), tick_buckets(&m1));
    let failures: f64 = m1
        .lines()
        .filter(|l| l.starts_with("kube_failover_probe_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let _ = child.start_kill();
    let _ = child.wait().await;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    Row {
        groups,
        per_tick: load.per_tick(),
        verbs: load.verbs,
        rss,
        cpu,
        apiserver_cpu: load.apiserver_cpu,
        p50: quantile(&b0, &b1, 0.5),
        p99: quantile(&b0, &b1, 0.99),
        left_active: groups_that_left(&text, "primary_active").len(),
        failures,
        metrics_bytes: m1.len(),
        status_bytes: status.len(),
    }
}

/// The groups whose state changed to anything but `state` in a daemon log (every state
/// change after a group's first tick, `starting` → `state`, is one).
pub fn groups_that_left(log: &str, state: &str) -> std::collections::BTreeSet<String> {
    let mut left = std::collections::BTreeSet::new();
    for line in log.lines().filter(|l| l.contains("state changed")) {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(|v| v.trim_matches('"').to_string())
        };
        if field("to=").as_deref() != Some(state) {
            left.insert(field("group=").unwrap_or_default());
        }
    }
    left
}

/// `GET 1.03, WATCH 0.40`.
pub fn verbs_text(v: &BTreeMap<String, f64>) -> String {
    v.iter()
        .map(|(k, n)| format!("{k} {n:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The header of the footprint table (Markdown).
pub const TABLE_HEADER: &str = "| groups | requests per tick: primary / standby | by verb (primary; standby) | daemon RSS | daemon CPU (one core) | API server CPU added (primary / standby) | tick p50 / p99 | groups that left primary_active | failed probes | /metrics | /status |\n|---|---|---|---|---|---|---|---|---|---|---|";

impl Row {
    /// One line of the footprint table (Markdown).
    pub fn table_line(&self) -> String {
        format!(
            "| {} | {:.2} / {:.2} | {}; {} | {:.1} MiB | {:.2} % | {:.1} % / {:.1} % | {:.1} / {:.1} ms | {} | {:.0} | {:.0} kB | {:.0} kB |",
            self.groups,
            self.per_tick[0],
            self.per_tick[1],
            verbs_text(&self.verbs[0]),
            verbs_text(&self.verbs[1]),
            self.rss,
            self.cpu,
            self.apiserver_cpu[0],
            self.apiserver_cpu[1],
            self.p50.map_or(f64::NAN, |s| s * 1000.0),
            self.p99.map_or(f64::NAN, |s| s * 1000.0),
            self.left_active,
            self.failures,
            self.metrics_bytes as f64 / 1000.0,
            self.status_bytes as f64 / 1000.0,
        )
    }
}

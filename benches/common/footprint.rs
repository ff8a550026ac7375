//! Measuring a watcher's footprint on a test-bed pair, shared by `benches/footprint.rs`
//! and the report (`benches/report`): requests per tick (per second: the interval is
//! 1 s) from the API servers' own `apiserver_request_total`, by verb and resource, API
//! server CPU, and each daemon instance's RSS, CPU, tick duration and judgement with N
//! groups, in one of two shapes (every group in one namespace, or one namespace per
//! group, as users run the agent) and with one or several instances.

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

/// `apiserver_request_total` summed by verb and resource: keys like `WATCH pods`
/// (`GET` alone for requests outside a resource, such as `/readyz`).
pub async fn requests_by_verb(c: &Cluster) -> BTreeMap<String, f64> {
    let mut by_key = BTreeMap::new();
    for ((verb, resource), value) in apiserver_requests(c).await.unwrap_or_default() {
        let key = if resource.is_empty() {
            verb
        } else {
            format!("{verb} {resource}")
        };
        *by_key.entry(key).or_insert(0.0) += value;
    }
    by_key
}

/// Watches the API server holds open now (`apiserver_longrunning_requests`, verb
/// `WATCH`): a watch request counts in `apiserver_request_total` only when it ends, so a
/// window shorter than the watches' lifetime sees this instead.
pub async fn watches_held(c: &Cluster) -> f64 {
    let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
    let text = c.client().request_text(req).await.unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("apiserver_longrunning_requests{"))
        .filter(|rest| rest.contains("verb=\"WATCH\""))
        .filter_map(|rest| rest.rsplit_once("} ")?.1.parse::<f64>().ok())
        .sum()
}

/// Sums `by_key` (keys `VERB resource`) by verb.
pub fn by_verb(by_key: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let mut verbs = BTreeMap::new();
    for (key, v) in by_key {
        let verb = key.split(' ').next().unwrap_or_default().to_string();
        *verbs.entry(verb).or_insert(0.0) += v;
    }
    verbs
}

/// The writes among `by_key`: creations, updates, patches and deletions.
pub fn writes(by_key: &BTreeMap<String, f64>) -> f64 {
    by_verb(by_key)
        .iter()
        .filter(|(verb, _)| {
            [
                "POST",
                "PUT",
                "PATCH",
                "APPLY",
                "DELETE",
                "DELETECOLLECTION",
            ]
            .contains(&verb.as_str())
        })
        .map(|(_, v)| v)
        .sum::<f64>()
        + 0.0
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
    /// Requests per second by verb and resource: primary, standby.
    pub per_sec: [BTreeMap<String, f64>; 2],
    /// API server CPU, % of one core: primary, standby.
    pub cpu: [f64; 2],
    /// Watches held open: primary, standby.
    #[serde(default)]
    pub watches: [f64; 2],
}

impl Baseline {
    /// Measures the pair over `window` (nothing else may talk to it meanwhile).
    pub async fn measure(pair: &ClusterPair, window: Duration) -> Baseline {
        let zero = Baseline {
            per_sec: [BTreeMap::new(), BTreeMap::new()],
            cpu: [0.0, 0.0],
            watches: [0.0, 0.0],
        };
        let w = Window::open(pair).await;
        tokio::time::sleep(window).await;
        let load = w.close(pair, &zero, Duration::from_secs(1), 0.0).await;
        Baseline {
            per_sec: load.by_resource,
            cpu: load.apiserver_cpu,
            watches: load.watches_held,
        }
    }

    /// One line for the console.
    pub fn describe(&self) -> String {
        format!(
            "baseline without the daemon: primary {:.1} req/s ({}), standby {:.1} req/s; API server CPU {:.1} % / {:.1} %",
            self.per_sec[0].values().sum::<f64>(),
            verbs_text(&by_verb(&self.per_sec[0])),
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
    /// The same by verb and resource (`WATCH pods`).
    pub by_resource: [BTreeMap<String, f64>; 2],
    /// API server CPU added, % of one core: primary, standby.
    pub apiserver_cpu: [f64; 2],
    /// Watches held open at the end, above the baseline's: primary, standby.
    pub watches_held: [f64; 2],
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
        let by_resource = [0, 1].map(|i| {
            let mut d = diff(&after[i], &self.before[i]);
            for (key, base) in &baseline.per_sec[i] {
                if let Some(v) = d.get_mut(key) {
                    *v -= base * elapsed;
                }
            }
            d.retain(|_, v| *v > min_count);
            d.values_mut().for_each(|v| *v /= ticks);
            d
        });
        let verbs = [0, 1].map(|i| by_verb(&by_resource[i]));
        let held = [
            watches_held(clusters[0]).await,
            watches_held(clusters[1]).await,
        ];
        let watches_held = [0, 1].map(|i| (held[i] - baseline.watches[i]).max(0.0));
        let apiserver_cpu = [0, 1].map(|i| {
            ((api_cpu1[i] - self.api_cpu[i]) / elapsed * 100.0 - baseline.cpu[i]).max(0.0)
        });
        ApiLoad {
            elapsed,
            verbs,
            by_resource,
            apiserver_cpu,
            watches_held,
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

/// Where the groups' workloads live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Shape {
    /// Every group in the pair's one namespace, watching the same Deployments.
    #[default]
    Shared,
    /// One namespace per group (`agent-000`, …): one Helm release of the agent each, the
    /// shape users run.
    Namespaces,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Shared => "one namespace",
            Shape::Namespaces => "namespace per group",
        }
    }
}

/// What one measurement runs.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub groups: usize,
    pub shape: Shape,
    /// Daemon instances watching the same groups (observer quorum 2 with three).
    pub instances: usize,
    /// `daemon.watch_scope = "cluster"`: one watch per kind and cluster (the daemon's
    /// user granted the ClusterRole of `target-rbac/cluster-watch` first).
    pub cluster_watch: bool,
}

fn config(pair: &ClusterPair, admin: SocketAddr, setup: Setup, identity: String) -> String {
    let mut opts = DaemonOpts {
        interval: INTERVAL,
        identity: Some(identity),
        watch_scope: setup.cluster_watch.then_some("cluster"),
        ..DaemonOpts::default()
    };
    if setup.instances > 1 {
        opts.observer_quorum = (setup.instances as u32).div_ceil(2).max(2);
        opts.observers_expected = Some(setup.instances as u32);
    }
    match setup.shape {
        Shape::Namespaces => {
            let namespaces: Vec<String> = (0..setup.groups).map(namespace).collect();
            config_in_namespaces(pair, &opts, admin, &namespaces)
        }
        Shape::Shared => {
            let one = config_toml(pair, &opts, admin);
            let at = one.find("[[groups]]").expect("a group in the config");
            let (head, block) = one.split_at(at);
            let mut text = head.to_string();
            for i in 0..setup.groups {
                text.push_str(&block.replacen(
                    "name = \"env0\"",
                    &format!("name = \"env0-{i:03}\"\nrecord_name = \"kube-failover-env0-{i:03}\""),
                    1,
                ));
                text.push('\n');
            }
            text
        }
    }
}

/// Creates `count` agent namespaces on both clusters ([`add_agent_namespaces`]) and
/// waits until the test bed has settled: every Pod on the primary Ready (the controller
/// manager and kwok create them, with their Events), then 10 s more, so that the
/// baseline measured next is the test bed at rest.
pub async fn add_namespaces_and_settle(pair: &ClusterPair, count: usize) {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};
    if count == 0 {
        return;
    }
    add_agent_namespaces(pair, count).await;
    let pods: Api<Pod> = Api::all(pair.primary.client());
    let want = 2 * (count + 1);
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let settled = wait_for(Duration::from_secs(300), Duration::from_secs(2), || async {
        pods.list(&ListParams::default())
            .await
            .is_ok_and(|l| l.items.iter().filter(|p| ready(p)).count() >= want)
    })
    .await;
    if settled.is_none() {
        eprintln!("footprint: not every agent Pod Ready after 300 s; measuring anyway");
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
}

/// The name of the `i`th agent namespace ([`add_agent_namespaces`] creates them).
pub fn namespace(i: usize) -> String {
    format!("agent-{i:03}")
}

/// The daemon's footprint with one setup.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub groups: usize,
    #[serde(default)]
    pub shape: Shape,
    #[serde(default = "one")]
    pub instances: usize,
    /// Watched with `watch_scope = "cluster"`.
    #[serde(default)]
    pub cluster_watch: bool,
    /// Requests per tick (per second): primary, standby.
    pub per_tick: [f64; 2],
    pub verbs: [BTreeMap<String, f64>; 2],
    /// Requests per tick by verb and resource: primary, standby.
    #[serde(default)]
    pub by_resource: [BTreeMap<String, f64>; 2],
    /// Writes per tick: primary, standby.
    #[serde(default)]
    pub writes: [f64; 2],
    /// Watches held open at the end, above the baseline: primary, standby. Each is
    /// resumed once per watch timeout (264 s on average at the default 4 minutes), which
    /// a window shorter than that does not see in `per_tick`.
    #[serde(default)]
    pub watches_held: [f64; 2],
    /// MiB, the largest instance.
    pub rss: f64,
    /// % of one core, the busiest instance.
    pub cpu: f64,
    /// Each instance's RSS (MiB) and CPU (% of one core).
    #[serde(default)]
    pub each: Vec<(f64, f64)>,
    /// % of one core added: primary, standby.
    pub apiserver_cpu: [f64; 2],
    /// Tick duration quantiles, seconds (`None` without ticks in the window).
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    /// Groups some instance leads at the window's end.
    #[serde(default)]
    pub led: usize,
    /// Seconds from the instances' start until every group had a leader (polled every
    /// 250 ms during the warm-up; `None` if not within it).
    #[serde(default)]
    pub all_led_secs: Option<f64>,
    pub left_active: usize,
    /// The states they went to, with how many state changes went there.
    #[serde(default)]
    pub left_to: BTreeMap<String, usize>,
    pub failures: f64,
    pub metrics_bytes: usize,
    pub status_bytes: usize,
}

fn one() -> usize {
    1
}

async fn get(http: &reqwest::Client, admin: SocketAddr, path: &str) -> String {
    match http.get(format!("http://{admin}{path}")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The groups an instance leads (`kube_failover_leader{group} 1`).
fn led_groups(metrics: &str) -> std::collections::BTreeSet<String> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("kube_failover_leader{group=\""))
        .filter(|rest| rest.ends_with("} 1"))
        .filter_map(|rest| rest.split('"').next().map(str::to_string))
        .collect()
}

/// One running instance.
struct Instance {
    child: tokio::process::Child,
    pid: u32,
    admin: SocketAddr,
    log: std::path::PathBuf,
}

/// Runs `setup` on `pair` and measures it over `window` after the warm-up. The shape
/// [`Shape::Namespaces`] needs its namespaces created first ([`add_agent_namespaces`]).
pub async fn measure(
    pair: &ClusterPair,
    setup: Setup,
    window: Duration,
    baseline: &Baseline,
) -> Row {
    let dir = pair.primary.dir().to_path_buf();
    let tag = format!(
        "{}{}-{}x{}",
        match setup.shape {
            Shape::Shared => "shared",
            Shape::Namespaces => "ns",
        },
        if setup.cluster_watch { "-cw" } else { "" },
        setup.groups,
        setup.instances
    );
    let mut instances = Vec::new();
    for k in 0..setup.instances {
        let admin = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let path = dir.join(format!("footprint-{tag}-{k}.toml"));
        // An identity per setup: the previous setup's Leases may still look alive.
        let identity = format!("footprint-{tag}-{k}");
        std::fs::write(&path, config(pair, admin, setup, identity)).unwrap();
        let log = dir.join(format!("footprint-{tag}-{k}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(daemon_bin())
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
        instances.push(Instance {
            child,
            pid,
            admin,
            log,
        });
    }
    let http = reqwest::Client::new();
    // During the warm-up: when every group first had a leader, from the start of the
    // instances (a process start takes a few milliseconds of that).
    let spawned = Instant::now();
    let mut all_led = None;
    while spawned.elapsed() < WARM_UP {
        if all_led.is_none() {
            let mut led = std::collections::BTreeSet::new();
            for i in &instances {
                led.extend(led_groups(&get(&http, i.admin, "/metrics").await));
            }
            if led.len() >= setup.groups {
                all_led = Some(spawned.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let w = Window::open(pair).await;
    let cpu0: Vec<f64> = instances.iter().map(|i| cpu_seconds(i.pid)).collect();
    let m0 = get(&http, instances[0].admin, "/metrics").await;
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let m1 = get(&http, instances[0].admin, "/metrics").await;
    let secs = t0.elapsed().as_secs_f64();
    let cpu: Vec<f64> = instances
        .iter()
        .zip(&cpu0)
        .map(|(i, c0)| (cpu_seconds(i.pid) - c0) / secs * 100.0)
        .collect();
    let load = w.close(pair, baseline, INTERVAL, 0.5).await;
    let rss: Vec<f64> = instances.iter().map(|i| rss_mib(i.pid)).collect();
    let status = get(&http, instances[0].admin, "/status").await;
    let mut led = std::collections::BTreeSet::new();
    for i in &instances {
        led.extend(led_groups(&get(&http, i.admin, "/metrics").await));
    }
    let (b0, b1) = (tick_buckets(&m0), tick_buckets(&m1));
    let mut by_reason: BTreeMap<String, f64> = BTreeMap::new();
    for line in m1
        .lines()
        .filter(|l| l.starts_with("kube_failover_probe_failures_total{"))
    {
        let (Some(n), Some(labels)) = (
            line.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()),
            line.split_once('{').and_then(|(_, l)| l.split_once('}')),
        ) else {
            continue;
        };
        // By cluster, signal and reason: the group's name left out.
        let key: Vec<&str> = labels
            .0
            .split(',')
            .filter(|l| !l.starts_with("group="))
            .collect();
        *by_reason.entry(key.join(",")).or_default() += n;
    }
    let failures: f64 = by_reason.values().sum();
    if failures > 0.0 {
        eprintln!("failed probes of the first instance, by cluster, signal and reason:");
        for (key, n) in by_reason.iter().filter(|(_, n)| **n > 0.0) {
            eprintln!("  {key}: {n}");
        }
    }
    let mut left = std::collections::BTreeSet::new();
    let mut left_to = BTreeMap::new();
    // Stopped as a service manager stops them (SIGTERM: each leader releases its
    // Leases), so the next setup's instances start on released Leases, not on Leases
    // of dead holders they must wait out.
    for i in &instances {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &i.pid.to_string()])
            .status();
    }
    for mut i in instances {
        if tokio::time::timeout(Duration::from_secs(20), i.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "footprint: instance {} still running 20 s after SIGTERM; killed",
                i.pid
            );
            let _ = i.child.start_kill();
            let _ = i.child.wait().await;
        }
        let text = std::fs::read_to_string(&i.log).unwrap_or_default();
        left.extend(groups_that_left(&text, "primary_active"));
        for (state, n) in states_left_to(&text, "primary_active") {
            *left_to.entry(state).or_insert(0) += n;
        }
    }
    Row {
        groups: setup.groups,
        shape: setup.shape,
        instances: setup.instances,
        cluster_watch: setup.cluster_watch,
        per_tick: load.per_tick(),
        writes: [writes(&load.by_resource[0]), writes(&load.by_resource[1])],
        watches_held: load.watches_held,
        verbs: load.verbs,
        by_resource: load.by_resource,
        rss: rss.iter().copied().fold(0.0, f64::max),
        cpu: cpu.iter().copied().fold(0.0, f64::max),
        each: rss.into_iter().zip(cpu).collect(),
        apiserver_cpu: load.apiserver_cpu,
        p50: quantile(&b0, &b1, 0.5),
        p99: quantile(&b0, &b1, 0.99),
        led: led.len(),
        all_led_secs: all_led,
        left_active: left.len(),
        left_to,
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

/// The states other than `state` that groups changed to in a daemon log, with how
/// many changes went to each.
pub fn states_left_to(log: &str, state: &str) -> BTreeMap<String, usize> {
    let mut to = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("state changed")) {
        let target = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("to="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default();
        if target != state {
            *to.entry(target).or_insert(0) += 1;
        }
    }
    to
}

/// `GET 1.03, WATCH 0.40`.
pub fn verbs_text(v: &BTreeMap<String, f64>) -> String {
    v.iter()
        .map(|(k, n)| format!("{k} {n:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The header of the footprint table (Markdown).
pub const TABLE_HEADER: &str = "| shape | instances | groups | requests per second: primary / standby | writes per second: primary / standby | watches held: primary / standby | by verb and resource, primary | by verb and resource, standby | each instance: RSS, CPU (one core) | API server CPU added (primary / standby) | tick p50 / p99 | groups led | groups that left primary_active | failed probes |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

impl Row {
    /// One line of the footprint table (Markdown).
    pub fn table_line(&self) -> String {
        let each = if self.each.is_empty() {
            format!("{:.1} MiB, {:.2} %", self.rss, self.cpu)
        } else {
            self.each
                .iter()
                .map(|(rss, cpu)| format!("{rss:.1} MiB, {cpu:.2} %"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let resources = |i: usize| {
            if self.by_resource[i].is_empty() {
                verbs_text(&self.verbs[i])
            } else {
                verbs_text(&self.by_resource[i])
            }
        };
        format!(
            "| {} | {} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.0} / {:.0} | {} | {} | {} | {:.1} % / {:.1} % | {:.1} / {:.1} ms | {} | {} | {:.0} |",
            if self.cluster_watch {
                format!("{}, cluster-wide watches", self.shape.name())
            } else {
                self.shape.name().to_string()
            },
            self.instances,
            self.groups,
            self.per_tick[0],
            self.per_tick[1],
            self.writes[0],
            self.writes[1],
            self.watches_held[0],
            self.watches_held[1],
            resources(0),
            resources(1),
            each,
            self.apiserver_cpu[0],
            self.apiserver_cpu[1],
            self.p50.map_or(f64::NAN, |s| s * 1000.0),
            self.p99.map_or(f64::NAN, |s| s * 1000.0),
            match self.all_led_secs {
                Some(t) => format!("{} (all by {t:.1} s)", self.led),
                None => self.led.to_string(),
            },
            if self.left_to.is_empty() {
                self.left_active.to_string()
            } else {
                format!(
                    "{} (to {})",
                    self.left_active,
                    self.left_to
                        .iter()
                        .map(|(s, n)| format!("{s} ×{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            self.failures,
        )
    }
}

//! The admin port under hostile clients, on loopback: the real daemon binary watches a
//! test-bed cluster pair (probe interval 1 s) while each attack runs for a while:
//!
//! - `idle`: 1,000 connections that send nothing (reopened when the server closes them);
//! - `slowloris`: 200 connections sending one request-header byte every 2 s;
//! - `pipelined`: 200 connections each sending 1,000 pipelined `GET /metrics` and never
//!   reading an answer (reopened when dropped);
//! - `metrics flood`: 1,000 clients doing `GET /metrics` back to back.
//!
//! Meanwhile a prober asks `/healthz` every 100 ms on a new connection (as a kubelet
//! does), with a 2 s timeout, and a watcher follows the ticks in `/status`. Printed per
//! attack: `/healthz` latency p50/p99/max and failed probes, ticks finished against
//! those expected, and the longest time between two finished ticks (on time: about
//! one interval). Asserts nothing.
//!
//! `cargo bench --bench admin_attack` (seconds per attack: `KUBE_FAILOVER_ATTACK_SECS`,
//! default 20).

#[path = "../tests/support/mod.rs"]
mod support;

use kube_failover_testbed::ClusterPair;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One request on a new connection; the answer's body if the status was 200.
async fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        if !buf.starts_with(b"HTTP/1.1 200") {
            let line = String::from_utf8_lossy(&buf);
            return Err(format!("answer {:?}", line.lines().next().unwrap_or("")));
        }
        let at = buf
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no end of head")?;
        Ok(buf.split_off(at + 4))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

#[derive(Default)]
struct Probes {
    latencies: Vec<Duration>,
    failures: Vec<String>,
}

async fn probe_healthz(addr: SocketAddr, until: Instant) -> Probes {
    let mut p = Probes::default();
    while Instant::now() < until {
        let t = Instant::now();
        match get(addr, "/healthz", PROBE_TIMEOUT).await {
            Ok(_) => p.latencies.push(t.elapsed()),
            Err(e) => p.failures.push(e),
        }
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(t.elapsed())).await;
    }
    p
}

/// The longest time between two changes of `/status`'s `last_tick_unix`, seen by
/// polling every 100 ms.
async fn watch_ticks(addr: SocketAddr, until: Instant) -> Duration {
    let mut last = None;
    let mut changed = Instant::now();
    let mut longest = Duration::ZERO;
    while Instant::now() < until {
        if let Ok(body) = get(addr, "/status", PROBE_TIMEOUT).await
            && let Ok(report) = serde_json::from_slice::<serde_json::Value>(&body)
        {
            let tick = report["last_tick_unix"].as_f64();
            if tick != last {
                longest = longest.max(changed.elapsed());
                last = tick;
                changed = Instant::now();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    longest.max(changed.elapsed())
}

/// Until the server closes the connection (or `until`): reads and discards.
async fn hold(s: &mut TcpStream, until: Instant) {
    let mut buf = [0u8; 4096];
    let left = until.saturating_duration_since(Instant::now());
    let _ = tokio::time::timeout(left, async {
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    })
    .await;
}

async fn connect(addr: SocketAddr, until: Instant) -> Option<TcpStream> {
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => return Some(s),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    None
}

#[derive(Clone, Copy, Debug)]
enum Attack {
    None,
    Idle,
    Slowloris,
    Pipelined,
    MetricsFlood,
}

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Attack::None => "none (baseline)",
            Attack::Idle => "1000 idle",
            Attack::Slowloris => "200 slowloris",
            Attack::Pipelined => "200 pipelined, never read",
            Attack::MetricsFlood => "1000 GET /metrics flood",
        }
    }

    fn spawn(self, addr: SocketAddr, until: Instant, set: &mut JoinSet<u64>) {
        let clients = match self {
            Attack::None => 0,
            Attack::Idle | Attack::MetricsFlood => 1000,
            Attack::Slowloris | Attack::Pipelined => 200,
        };
        for _ in 0..clients {
            set.spawn(async move {
                let mut done = 0u64;
                while Instant::now() < until {
                    match self {
                        Attack::None => return 0,
                        Attack::Idle => {
                            let Some(mut s) = connect(addr, until).await else {
                                break;
                            };
                            hold(&mut s, until).await;
                        }
                        Attack::Slowloris => {
                            let Some(mut s) = connect(addr, until).await else {
                                break;
                            };
                            let head = b"GET /status HTTP/1.1\r\nHost: bench\r\nX-Slow: 1\r\n\r\n";
                            for byte in head {
                                if s.write_all(&[*byte]).await.is_err() || Instant::now() >= until {
                                    break;
                                }
                                let mut one = [0u8; 1];
                                if let Ok(Ok(0) | Err(_)) =
                                    tokio::time::timeout(Duration::from_secs(2), s.read(&mut one))
                                        .await
                                {
                                    break;
                                }
                            }
                        }
                        Attack::Pipelined => {
                            let Some(mut s) = connect(addr, until).await else {
                                break;
                            };
                            let burst =
                                b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n".repeat(1000);
                            let _ =
                                tokio::time::timeout(Duration::from_secs(1), s.write_all(&burst))
                                    .await;
                            // Never reads; notices the drop when a write fails.
                            while Instant::now() < until {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                                let more = tokio::time::timeout(
                                    Duration::from_millis(500),
                                    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n"),
                                )
                                .await;
                                if matches!(more, Ok(Err(_))) {
                                    break;
                                }
                            }
                        }
                        Attack::MetricsFlood => {
                            if get(addr, "/metrics", Duration::from_secs(5)).await.is_ok() {
                                done += 1;
                            }
                        }
                    }
                }
                done
            });
        }
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn tick_count(addr: SocketAddr) -> f64 {
    let body = get(addr, "/metrics", Duration::from_secs(10))
        .await
        .expect("metrics between attacks");
    metric_value(
        &String::from_utf8_lossy(&body),
        r#"kube_failover_tick_duration_seconds_count{group="env0"}"#,
    )
    .expect("tick count")
}

async fn run(attack: Attack, addr: SocketAddr, secs: u64, interval: Duration) {
    // A pause between attacks: connections of the last one are closed by now.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let ticks_before = tick_count(addr).await;
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let mut attackers = JoinSet::new();
    attack.spawn(addr, until, &mut attackers);
    let (probes, longest_gap) = tokio::join!(probe_healthz(addr, until), watch_ticks(addr, until));
    let elapsed = start.elapsed();
    let mut flood_answers = 0;
    while let Some(r) = attackers.join_next().await {
        flood_answers += r.unwrap_or(0);
    }
    let ticks = tick_count(addr).await - ticks_before;
    let mut l = probes.latencies.clone();
    l.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{:<26} /healthz {:>3} probes, {:>3} failed, p50 {:>6.1} ms, p99 {:>7.1} ms, max {:>7.1} ms | ticks {:>3.0} of {:>3.0} expected, longest gap {:.2} s{}",
        attack.name(),
        probes.latencies.len() + probes.failures.len(),
        probes.failures.len(),
        ms(pct(&l, 0.5)),
        ms(pct(&l, 0.99)),
        ms(l.last().copied().unwrap_or_default()),
        ticks,
        elapsed.as_secs_f64() / interval.as_secs_f64(),
        longest_gap.as_secs_f64(),
        if matches!(attack, Attack::MetricsFlood) {
            format!(" | {flood_answers} /metrics answers")
        } else {
            String::new()
        }
    );
    if let Some(first) = probes.failures.first() {
        println!("    first failure: {first}");
    }
}

fn main() {
    let secs: u64 = std::env::var("KUBE_FAILOVER_ATTACK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let pair = ClusterPair::start().await.expect("start the test bed");
        let opts = DaemonOpts::default();
        let d = Daemon::start(&pair, &opts).await;
        d.wait_state("primary_active", Duration::from_secs(20))
            .await;
        println!(
            "admin port {} under attack, {secs} s each; probe interval {:?}:",
            d.admin, opts.interval
        );
        for attack in [
            Attack::None,
            Attack::Idle,
            Attack::Slowloris,
            Attack::Pipelined,
            Attack::MetricsFlood,
        ] {
            run(attack, d.admin, secs, opts.interval).await;
        }
    });
}

//! Small helpers of the report: a seeded random number generator, order statistics,
//! the machine's facts and the settings read from the environment.

use serde::{Deserialize, Serialize};
use std::process::Command;
use std::time::Duration;

/// SplitMix64: a small, well-known seeded generator, so a run can be repeated.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in lo..=hi.
    pub fn int(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next_u64() as usize % items.len()]
    }

    /// A uniform duration in [lo, hi).
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        Duration::from_secs_f64(self.range(lo.as_secs_f64(), hi.as_secs_f64()))
    }
}

/// Order statistics of a sample: nearest-rank quantiles (with 20 samples, p99 is the
/// largest and p90 the 18th).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p90: f64,
    /// Nearest rank: with 20 samples, the 19th.
    #[serde(default)]
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        let median = if v.len() % 2 == 1 {
            v[v.len() / 2]
        } else {
            (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
        };
        Some(Summary {
            n: v.len(),
            min: v[0],
            median,
            p90: rank(0.90),
            p95: rank(0.95),
            p99: rank(0.99),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        })
    }
}

/// Where and when a part ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// UTC, `2026-01-31 12:34`.
    pub date: String,
    pub machine: Machine,
    /// `kube-failover --version` of the binary measured.
    pub daemon: String,
    /// `git describe` of the tree the bench was built from.
    pub commit: String,
    /// How long the part took, seconds.
    pub elapsed_secs: f64,
    /// A smoke run (few samples): never the report's numbers.
    pub smoke: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub ram_gib: f64,
    pub kernel: String,
    pub rustc: String,
}

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Machine {
    pub fn now() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown".to_string(), |(_, v)| v.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let ram_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            ram_gib: ram_kib / 1024.0 / 1024.0,
            kernel: output("uname", &["-sr"]).unwrap_or_else(|| "unknown".into()),
            rustc: output("rustc", &["--version"]).unwrap_or_else(|| "unknown".into()),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{} cores ({}), {:.0} GiB RAM, {}, {}",
            self.nproc, self.cpu, self.ram_gib, self.kernel, self.rustc
        )
    }
}

impl Meta {
    /// The facts of now; `elapsed_secs` is set by the caller when the part ends.
    pub fn now(smoke: bool) -> Meta {
        let bin = crate::support::daemon_bin();
        let daemon =
            output(&bin.display().to_string(), &["--version"]).unwrap_or_else(|| "unknown".into());
        let commit = output(
            "git",
            &[
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "describe",
                "--always",
                "--dirty",
            ],
        )
        .unwrap_or_else(|| "unknown".into());
        Meta {
            date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
            machine: Machine::now(),
            daemon,
            commit,
            elapsed_secs: 0.0,
            smoke,
        }
    }
}

/// An environment variable parsed, or `default`; a value that does not parse stops the
/// run with the variable's name.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={v:?}: {e}")),
        _ => default,
    }
}

/// A duration from the environment (`30m`, `90s`), or `default`.
pub fn env_duration(name: &str, default: Duration) -> Duration {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => humantime::parse_duration(v.trim())
            .unwrap_or_else(|e| panic!("{name}={v:?}: {e} (write e.g. 30m or 90s)")),
        _ => default,
    }
}

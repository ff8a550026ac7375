//! The benchmark report: `cargo bench --bench report` measures, on the test bed, with the
//! release daemon this tree builds,
//!
//! - **outages**: time to promote (primary API server stopped → standby scaled, →
//!   standby Ready) over 20 outages for each profile 1 s × 3, 2 s × 3, 5 s × 3
//!   (interval × failure threshold), and time to fence once the primary returns, with
//!   the kubectl watchdog (`kubectl-watchdog.sh`) taking turns on the same outages;
//! - **footprint**: the daemon at 1, 10, 50, 200 groups and the watchdog at 1 and 10
//!   loops (requests per tick from the API servers' own counters, RSS, CPU);
//! - **soak**: 30 minutes of flapping just under the blip tolerance and latency spikes
//!   just under the probe timeout, counting promotions (goal 0);
//! - **engine**: 10,000 random fault schedules under the blip tolerance through the pure
//!   engine (goal: no promotion), and as many with a real outage (goal: all promote);
//! - **guard**: dual-active seconds per outage (the primary's API server down 10 s) over
//!   20 outages without the guard, with it in `keep` mode and in `stop` mode, each
//!   followed by a failback;
//!
//! then writes each part's results (JSON) and PNG plots into `docs/bench/` and its
//! sections into BENCHMARKS.md. It asserts nothing.
//!
//! Settings (environment):
//! - `KUBE_FAILOVER_REPORT_PARTS`: the parts to run, comma-separated, of `outages`,
//!   `footprint`, `soak`, `engine`, `guard` (default all); `render` alone only rewrites the report
//!   from the results already saved. Parts run separately (even at the same time, in two
//!   processes: they share CPU, which shows in the timings) and the report takes each
//!   part's latest results.
//! - `KUBE_FAILOVER_REPORT_SMOKE=1`: a quick check of the machinery (3 outages per
//!   profile, 2-minute soak, 1,000 engine cycles, footprint at 1 and 10 groups with a
//!   10 s window), written to a temporary folder, never over the report.
//! - `KUBE_FAILOVER_REPORT_OUTAGES` (20), `KUBE_FAILOVER_REPORT_PROFILES` (`1x3,2x3,5x3`),
//!   `KUBE_FAILOVER_REPORT_NAIVE` (`1`; `0` leaves the watchdog out), `KUBECTL` (default:
//!   `kubectl` on PATH), `KUBE_FAILOVER_REPORT_SOAK` (`30m`),
//!   `KUBE_FAILOVER_REPORT_CYCLES` (10000), `KUBE_FAILOVER_REPORT_GROUPS` (`1,10,50,200`),
//!   `KUBE_FAILOVER_REPORT_LOOPS` (`1,10`), `KUBE_FAILOVER_REPORT_WINDOW` (`30s`),
//!   `KUBE_FAILOVER_REPORT_GUARD_OUTAGES` (20; smoke 3), `KUBE_FAILOVER_REPORT_GUARD_OUTAGE`
//!   (`10s`), `KUBE_FAILOVER_REPORT_GUARD_MODES` (`none,keep,stop`),
//!   `KUBE_FAILOVER_REPORT_SEED` (1), `KUBE_FAILOVER_REPORT_OUT` (the folder for results
//!   and plots), `KUBE_FAILOVER_REPORT_MD` (the Markdown file), `KUBE_FAILOVER_BENCH_BIN`
//!   (another daemon binary; by default the report builds and measures the release
//!   binary, in `target/report-release`).

#[path = "../../tests/support/mod.rs"]
mod support;

#[path = "../common/footprint.rs"]
#[allow(dead_code)]
mod footprint;

mod bed;
mod engine_cycles;
mod guard;
mod naive;
mod outages;
mod parts;
mod plots;
mod render;
mod soak;
mod stats;

use stats::{Meta, Rng, env_duration, env_or};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const PARTS: [&str; 5] = ["engine", "footprint", "guard", "outages", "soak"];

fn list<T: std::str::FromStr>(name: &str, default: &str) -> Vec<T>
where
    T::Err: std::fmt::Display,
{
    let text = std::env::var(name).unwrap_or_else(|_| default.to_string());
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{name}: {s:?}: {e}"))
        })
        .collect()
}

/// Builds the binary users install (`cargo build --release --locked`: link-time
/// optimised, without the test builds' second TLS library) and returns its path: the
/// daemon this report measures unless `KUBE_FAILOVER_BENCH_BIN` names another. It is
/// built in a target directory of its own (`<target>/report-release`), because the
/// `cargo bench` running this holds the lock of the usual one.
fn release_binary(root: &std::path::Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("report-release");
    println!(
        "building the release binary (cargo build --release --locked --bin kube-failover --target-dir {})",
        target.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "--locked", "--bin", "kube-failover"])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(root)
        .status()
        .expect("run cargo build --release");
    assert!(status.success(), "cargo build --release failed: {status}");
    target.join("release/kube-failover")
}

/// Which build `bin` is, for the report: `release build` or `debug build` by the
/// target folder it lies in, else its file name.
fn build_of(bin: &std::path::Path) -> String {
    let parent = bin
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str());
    match parent {
        Some("release") => "release build".into(),
        Some("debug") => "debug build".into(),
        _ => bin
            .file_name()
            .map_or("unknown build".into(), |n| n.to_string_lossy().into_owned()),
    }
}

fn main() {
    let smoke = env_or("KUBE_FAILOVER_REPORT_SMOKE", 0u8) == 1;
    let parts: BTreeSet<String> = list::<String>("KUBE_FAILOVER_REPORT_PARTS", &PARTS.join(","))
        .into_iter()
        .map(|p| p.to_lowercase())
        .collect();
    for p in &parts {
        assert!(
            PARTS.contains(&p.as_str()) || p == "render",
            "KUBE_FAILOVER_REPORT_PARTS: {p:?} is not one of {}, render",
            PARTS.join(", ")
        );
    }
    let n_outages = env_or("KUBE_FAILOVER_REPORT_OUTAGES", if smoke { 3 } else { 20 });
    let profiles = outages::Profile::parse_list(
        &std::env::var("KUBE_FAILOVER_REPORT_PROFILES").unwrap_or_else(|_| "1x3,2x3,5x3".into()),
    );
    let with_naive = env_or("KUBE_FAILOVER_REPORT_NAIVE", 1u8) == 1;
    let soak_for = env_duration(
        "KUBE_FAILOVER_REPORT_SOAK",
        Duration::from_secs(if smoke { 120 } else { 1800 }),
    );
    let cycles = env_or(
        "KUBE_FAILOVER_REPORT_CYCLES",
        if smoke { 1000 } else { 10_000 },
    );
    let groups: Vec<usize> = list(
        "KUBE_FAILOVER_REPORT_GROUPS",
        if smoke { "1,10" } else { "1,10,50,200" },
    );
    let loops: Vec<usize> = list("KUBE_FAILOVER_REPORT_LOOPS", "1,10");
    let window = env_duration(
        "KUBE_FAILOVER_REPORT_WINDOW",
        Duration::from_secs(if smoke { 10 } else { 30 }),
    );
    let seed = env_or("KUBE_FAILOVER_REPORT_SEED", 1u64);
    let guard_outages = env_or(
        "KUBE_FAILOVER_REPORT_GUARD_OUTAGES",
        if smoke { 3 } else { 20 },
    );
    let guard_modes = guard::Mode::parse_list(
        &std::env::var("KUBE_FAILOVER_REPORT_GUARD_MODES")
            .unwrap_or_else(|_| "none,keep,stop".into()),
    );
    let guard_outage = env_duration("KUBE_FAILOVER_REPORT_GUARD_OUTAGE", Duration::from_secs(10));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let default_dir = if smoke {
        std::env::temp_dir().join("kube-failover-report-smoke")
    } else {
        root.join("docs/bench")
    };
    let dir = std::env::var_os("KUBE_FAILOVER_REPORT_OUT").map_or(default_dir, PathBuf::from);
    let markdown = match std::env::var_os("KUBE_FAILOVER_REPORT_MD") {
        Some(p) => PathBuf::from(p),
        None if smoke => {
            // A copy of the report, so a smoke run never writes over it.
            std::fs::create_dir_all(&dir).expect("create the smoke run's folder");
            let copy = dir.join("BENCHMARKS.md");
            if !copy.exists() {
                std::fs::copy(root.join("BENCHMARKS.md"), &copy).expect("copy BENCHMARKS.md");
            }
            copy
        }
        None => root.join("BENCHMARKS.md"),
    };
    let out = render::Output { dir, markdown };

    let runs_daemon = ["outages", "footprint", "soak", "guard"]
        .iter()
        .any(|p| parts.contains(*p));
    if runs_daemon && std::env::var_os("KUBE_FAILOVER_BENCH_BIN").is_none() {
        support::use_daemon_bin(release_binary(&root));
    }

    let needs_kubectl = with_naive && (parts.contains("outages") || parts.contains("footprint"));
    let kubectl = if needs_kubectl {
        match naive::Kubectl::find() {
            Ok(k) => {
                println!("kubectl watchdog: {} ({})", k.path.display(), k.version);
                Some(k)
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let kubectl_id = kubectl
        .as_ref()
        .map(|k| (k.path.display().to_string(), k.version.clone()));

    if parts.contains("engine") {
        let t0 = Instant::now();
        println!("engine: {cycles} blip cycles and {cycles} outage cycles, seed {seed}");
        let mut r = engine_cycles::run(cycles, seed, Meta::now(smoke));
        r.meta.elapsed_secs = t0.elapsed().as_secs_f64();
        println!(
            "engine: {} false promotions in {} blip cycles; {} of {} outage cycles promoted ({:.0} s)",
            r.false_promotions,
            r.blip_cycles,
            r.outages_promoted,
            r.outage_cycles,
            r.meta.elapsed_secs
        );
        out.save("engine", &r);
    }
    if parts.contains("footprint") {
        let t0 = Instant::now();
        let mut r = rt.block_on(parts::footprint(
            &groups,
            &loops,
            window,
            kubectl.as_ref(),
            Meta::now(smoke),
        ));
        r.meta.elapsed_secs = t0.elapsed().as_secs_f64();
        println!("footprint: {:.0} s", r.meta.elapsed_secs);
        out.save("footprint", &r);
    }
    if parts.contains("outages") {
        let t0 = Instant::now();
        let meta = Meta::now(smoke);
        let mut rng = Rng::new(seed);
        let results = rt.block_on(outages::run(
            &profiles,
            n_outages,
            kubectl.as_ref(),
            &mut rng,
        ));
        let mut meta = meta;
        meta.elapsed_secs = t0.elapsed().as_secs_f64();
        println!("outages: {:.0} s", meta.elapsed_secs);
        out.save(
            "outages",
            &outages::OutagesReport {
                meta,
                outages_per_profile: n_outages,
                kubectl: kubectl_id.clone(),
                profiles: results,
            },
        );
    }
    if parts.contains("guard") {
        let t0 = Instant::now();
        let mut rng = Rng::new(seed.wrapping_add(0x6a4d));
        let mut r = rt.block_on(guard::run(
            &guard_modes,
            guard_outages,
            guard_outage,
            build_of(&support::daemon_bin()),
            Meta::now(smoke),
            &mut rng,
        ));
        r.meta.elapsed_secs = t0.elapsed().as_secs_f64();
        println!("guard: {:.0} s", r.meta.elapsed_secs);
        out.save("guard", &r);
    }
    if parts.contains("soak") {
        let t0 = Instant::now();
        let mut rng = Rng::new(seed.wrapping_add(0x5eed));
        println!(
            "soak: {} on the test bed",
            humantime::format_duration(soak_for)
        );
        let mut r = rt.block_on(soak::run(soak_for, &mut rng, Meta::now(smoke)));
        r.meta.elapsed_secs = t0.elapsed().as_secs_f64();
        println!(
            "soak: {} promotions, {} faults ({:.0} s)",
            r.promotions,
            r.faults.values().map(|t| t.count).sum::<u64>(),
            r.meta.elapsed_secs
        );
        out.save("soak", &r);
    }
    render::render(&out);
}

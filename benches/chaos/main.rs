//! The fault campaign: random, overlapping faults on the real test bed for a while, with
//! three daemon instances (observer quorum 2 of 3), and the safety invariants checked
//! from outside the whole time.
//!
//! `cargo bench --bench chaos -- --seed 7 --duration 10m --faults partition-primary,leader-stop`
//! or the same through `KUBE_FAILOVER_CHAOS_SEED`, `KUBE_FAILOVER_CHAOS_DURATION` and
//! `KUBE_FAILOVER_CHAOS_FAULTS` (the command line wins). The daemon is the binary this
//! tree builds, or `KUBE_FAILOVER_BENCH_BIN`. `cargo bench --profile dev --bench chaos`
//! builds the runner and the daemon without optimisation, in a fraction of the time.
//!
//! The seed fixes the fault schedule (which fault, on whom, when, for how long); the
//! interleaving with the daemons' own timers is the machine's. Each instance reaches each
//! cluster through a TCP fault proxy of its own, so a partition can cut one instance from
//! one side. The checker reads both API servers (the agent's Deployments, the failover
//! record) every 100 ms with the test bed's admin identity, each instance's process and
//! RSS every second, and every log and both API servers' audit logs at the end. The
//! report goes to stdout and to `target/chaos-<seed>.md`; the process exits 1 when an
//! invariant was violated, 2 when the campaign could not run. README, section "Fault campaign", states the invariants and
//! their budgets.

#[path = "../../tests/support/mod.rs"]
mod support;

mod audit;
mod check;
mod faults;
mod report;
mod world;

use faults::Kind;
use std::time::Duration;

/// What one campaign runs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub duration: Duration,
    pub kinds: Vec<Kind>,
}

fn usage() -> String {
    format!(
        "usage: chaos [--seed N] [--duration 10m] [--faults kind,kind]\nkinds: {} (all by default); \
         control-promote is the checker's control: an operator's promotion with no outage, \
         which it must report",
        Kind::ALL
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn parse_kinds(text: &str) -> Result<Vec<Kind>, String> {
    if text.trim() == "all" {
        return Ok(Kind::ALL.to_vec());
    }
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Kind::from_name(s).ok_or_else(|| format!("unknown fault kind {s:?}")))
        .collect()
}

fn plan_from(args: &[String]) -> Result<Plan, String> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let mut seed = env("KUBE_FAILOVER_CHAOS_SEED");
    let mut duration = env("KUBE_FAILOVER_CHAOS_DURATION");
    let mut kinds = env("KUBE_FAILOVER_CHAOS_FAULTS");
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{key} needs a value"))
        };
        match key {
            // `cargo bench` passes `--bench` to a bench without the test harness.
            "--bench" => {}
            "--seed" => seed = Some(value()?),
            "--duration" => duration = Some(value()?),
            "--faults" => kinds = Some(value()?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let seed = match seed {
        Some(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("--seed / KUBE_FAILOVER_CHAOS_SEED: not a number: {s:?}"))?,
        None => fastrand::u64(..1_000_000),
    };
    let duration = match duration {
        Some(d) => humantime::parse_duration(d.trim()).map_err(|e| {
            format!("--duration / KUBE_FAILOVER_CHAOS_DURATION: {d:?}: {e} (e.g. 10m)")
        })?,
        None => Duration::from_secs(300),
    };
    let kinds = match kinds {
        Some(k) => {
            parse_kinds(&k).map_err(|e| format!("--faults / KUBE_FAILOVER_CHAOS_FAULTS: {e}"))?
        }
        None => Kind::ALL.to_vec(),
    };
    if kinds.is_empty() {
        return Err("--faults / KUBE_FAILOVER_CHAOS_FAULTS: no fault kind given".into());
    }
    Ok(Plan {
        seed,
        duration,
        kinds,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plan = match plan_from(&args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chaos: {e}\n{}", usage());
            std::process::exit(2);
        }
    };
    if plan.kinds.contains(&Kind::ClockRate) && world::faketime_lib().is_none() {
        eprintln!(
            "chaos: the clock-rate fault needs libfaketime (Debian: apt-get install faketime; \
             or KUBE_FAILOVER_FAKETIME_LIB=/path/to/libfaketimeMT.so.1), or leave it out with \
             --faults"
        );
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = rt.block_on(world::run(plan));
    // Whatever the test bed left running goes with the runtime.
    drop(rt);
    std::process::exit(if outcome.violations == 0 { 0 } else { 1 });
}

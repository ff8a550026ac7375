//! The campaign's report: faults by kind and their overlaps, promotions and failbacks,
//! every invariant's worst value against its budget, and for each violation the seed,
//! its window, the faults around it and the instances' log lines from it. Printed and
//! written to `target/chaos-<seed>.md`.

use crate::check::{
    AGENTS_BUDGET, Checker, FENCE_BUDGET, NO_ACTIVE_BUDGET, PROMOTION_LOOKBACK, RSS_BUDGET_KIB,
    Window,
};
use crate::faults::Kind;
use crate::support::daemon_bin;
use crate::world::{FaultRecord, World};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn window_text(w: &Window, begin: Duration) -> String {
    match w.worst_at {
        Some((from, to)) => format!(
            "{} (at {}..{})",
            secs(w.worst),
            secs(from.saturating_sub(begin)),
            secs(to.saturating_sub(begin))
        ),
        None => "never".to_string(),
    }
}

fn fault_line(f: &FaultRecord, begin: Duration) -> String {
    let rel = |d: Duration| secs(d.saturating_sub(begin));
    format!(
        "| {} | {} | {} | {} | {} | {} |",
        f.id,
        rel(f.start),
        f.end.map(rel).unwrap_or_else(|| "-".into()),
        f.kind.name(),
        if f.injected { "yes" } else { "no" },
        f.detail.replace('|', "/")
    )
}

/// Log lines of every instance between two wall-clock times (compared as RFC 3339 text,
/// which the daemon's log lines start with), at most `max` per log file.
fn log_lines(world: &World, from: Duration, to: Duration, max: usize) -> String {
    let stamp = |d: Duration| {
        let s = humantime::format_rfc3339_millis(world.wall(d)).to_string();
        s[..23].to_string()
    };
    let (lo, hi) = (stamp(from), stamp(to));
    let mut out = String::new();
    for inst in &world.instances {
        for log in inst.logs.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.len() >= 23 && l[..23] >= *lo && l[..23] <= *hi)
                .collect();
            if lines.is_empty() {
                continue;
            }
            let skip = lines.len().saturating_sub(max);
            let _ = writeln!(
                out,
                "\n{} ({}), {} lines in the window{}:\n```",
                inst.identity,
                log.display(),
                lines.len(),
                if skip > 0 {
                    format!(", the last {max}")
                } else {
                    String::new()
                }
            );
            for l in &lines[skip..] {
                let _ = writeln!(out, "{l}");
            }
            let _ = writeln!(out, "```");
        }
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn write(world: &World, c: &Checker, begin: Duration) {
    let plan = &world.plan;
    let faults = world.faults();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let mut md = String::new();
    let _ = writeln!(md, "# Fault campaign, seed {}\n", plan.seed);
    let _ = writeln!(
        md,
        "Started {} (UTC), {} of faults after the instances settled, then 30 s to settle; \
         three instances, observer quorum 2; daemon `{}`.\n\
         Replay: `cargo bench --bench chaos -- --seed {} --duration {} --faults {}`.\n",
        humantime::format_rfc3339_seconds(world.wall(begin)),
        humantime::format_duration(plan.duration),
        daemon_bin().display(),
        plan.seed,
        humantime::format_duration(plan.duration),
        plan.kinds
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(",")
    );

    let _ = writeln!(md, "## Faults\n");
    let _ = writeln!(
        md,
        "| kind | injected | not injected | started while others were in force |"
    );
    let _ = writeln!(md, "|---|---|---|---|");
    let mut pairs: BTreeMap<(Kind, Kind), usize> = BTreeMap::new();
    for kind in Kind::ALL.into_iter().chain([Kind::ControlPromote]) {
        let of: Vec<&FaultRecord> = faults.iter().filter(|f| f.kind == kind).collect();
        if of.is_empty() && !plan.kinds.contains(&kind) {
            continue;
        }
        let injected = of.iter().filter(|f| f.injected).count();
        let overlapped = of
            .iter()
            .filter(|f| f.injected && !f.overlapping.is_empty())
            .count();
        let _ = writeln!(
            md,
            "| {} | {injected} | {} | {overlapped} |",
            kind.name(),
            of.len() - injected
        );
        for f in of.iter().filter(|f| f.injected) {
            for o in &f.overlapping {
                let key = if *o <= kind { (*o, kind) } else { (kind, *o) };
                *pairs.entry(key).or_default() += 1;
            }
        }
    }
    let injected = faults.iter().filter(|f| f.injected).count();
    let overlapping = faults
        .iter()
        .filter(|f| f.injected && !f.overlapping.is_empty())
        .count();
    let _ = writeln!(
        md,
        "\n{injected} faults injected, {overlapping} of them while another was in force; most frequent overlaps:"
    );
    let mut pairs: Vec<_> = pairs.into_iter().collect();
    pairs.sort_by_key(|p| std::cmp::Reverse(p.1));
    for ((a, b), n) in pairs.iter().take(8) {
        let _ = writeln!(md, "- {} + {}: {n}", a.name(), b.name());
    }

    let _ = writeln!(md, "\n## Promotions and failbacks\n");
    for p in &c.promotions {
        let _ = writeln!(
            md,
            "- epoch {} at {} by {}: {} (causes: {})",
            p.epoch,
            secs(p.at.saturating_sub(begin)),
            p.holder,
            if p.justified {
                "justified"
            } else {
                "NOT JUSTIFIED"
            },
            p.causes
        );
    }
    let _ = writeln!(
        md,
        "\n{} promotions, {} failbacks completed (record back to `primary`).",
        c.promotions.len(),
        c.failbacks.len()
    );

    let mut gaps = c.gaps.clone();
    gaps.sort();
    let _ = writeln!(md, "\n## Invariants\n");
    let _ = writeln!(md, "| invariant | worst observed | budget | violations |");
    let _ = writeln!(md, "|---|---|---|---|");
    let count = |name: &str| c.violations.iter().filter(|v| v.invariant == name).count();
    let _ = writeln!(
        md,
        "| both sides active, primary API answering, an instance able to fence | {} | {} | {} |",
        window_text(&c.dual, begin),
        secs(FENCE_BUDGET),
        count("dual_active")
    );
    let _ = writeln!(
        md,
        "| both agents running (the guards) | {} | {} | {} |",
        window_text(&c.agents_dual, begin),
        secs(AGENTS_BUDGET),
        count("agents_dual")
    );
    let _ = writeln!(
        md,
        "| neither side serving while a promotion is due | {} | {} | {} |",
        window_text(&c.none, begin),
        secs(NO_ACTIVE_BUDGET),
        count("no_active_side")
    );
    let _ = writeln!(
        md,
        "| epochs never decrease, never reused | drop {}, {} reuses | 0 | {} |",
        c.epoch_worst_drop,
        c.epoch_reuses,
        count("epochs")
    );
    let unjustified = c.promotions.iter().filter(|p| !p.justified).count();
    let _ = writeln!(
        md,
        "| every promotion follows an outage a quorum could see (within {}) | {unjustified} of {} unjustified | 0 | {} |",
        secs(PROMOTION_LOOKBACK),
        c.promotions.len(),
        count("promotion_justified")
    );
    let _ = writeln!(
        md,
        "| a failback is never undone | {} | 0 | {} |",
        c.failback_undone,
        count("failback_undone")
    );
    let _ = writeln!(
        md,
        "| no crash, no panic | {} crashes, {} panics | 0 | {} |",
        c.crashes,
        c.panics,
        count("no_crash") + count("no_panic")
    );
    audit_row(&mut md, c);
    let rss: Vec<String> = (0..c.rss_max_kib.len())
        .map(|i| {
            format!(
                "{:.1}→{:.1} (max {:.1})",
                c.rss_first_kib[i] as f64 / 1024.0,
                c.rss_last_kib[i] as f64 / 1024.0,
                c.rss_max_kib[i] as f64 / 1024.0
            )
        })
        .collect();
    let _ = writeln!(
        md,
        "| RSS per instance, MiB first→last (max) | {} | {} MiB | {} |",
        rss.join(", "),
        RSS_BUDGET_KIB / 1024,
        count("memory")
    );
    let _ = writeln!(
        md,
        "\nFor information: both sides with replicas at all (the primary's API down or \
         unanswered included) {}; neither side serving at all (cooldown, pauses, faults \
         included) {}.",
        window_text(&c.dual_raw, begin),
        window_text(&c.none_raw, begin)
    );
    let _ = writeln!(
        md,
        "Agents (samples × 100 ms): the primary's ran {:.1}s, the standby's {:.1}s.",
        c.agent_samples[0] as f64 / 10.0,
        c.agent_samples[1] as f64 / 10.0
    );
    let excused: Vec<String> = c
        .none_excused
        .iter()
        .map(|(k, n)| format!("{k} {:.1}s", *n as f64 / 10.0))
        .collect();
    let _ = writeln!(
        md,
        "Neither side serving, excused (samples × 100 ms, a sample can have several): {}.",
        if excused.is_empty() {
            "none".to_string()
        } else {
            excused.join(", ")
        }
    );
    for (from, to, excuses) in &c.long_excused {
        let _ = writeln!(
            md,
            "- neither side serving {}..{} ({}), excused by: {}",
            secs(from.saturating_sub(begin)),
            secs(to.saturating_sub(begin)),
            secs(*to - *from),
            if excuses.is_empty() {
                "nothing (a violation)".to_string()
            } else {
                excuses.join(", ")
            }
        );
    }
    let _ = writeln!(
        md,
        "Checker: {} samples, interval p50 {} ms, p99 {} ms, max {} ms; primary unreadable in {}, standby in {}.",
        c.samples,
        percentile(&gaps, 0.5).as_millis(),
        percentile(&gaps, 0.99).as_millis(),
        gaps.last().copied().unwrap_or_default().as_millis(),
        c.unread_primary,
        c.unread_standby
    );

    audit_detail(&mut md, c);

    if !c.violations.is_empty() {
        let _ = writeln!(md, "\n## Violations\n");
        for (n, v) in c.violations.iter().enumerate() {
            let _ = writeln!(
                md,
                "### {}. {} at {}..{} (seed {})\n\n{}\n",
                n + 1,
                v.invariant,
                secs(v.from.saturating_sub(begin)),
                secs(v.to.saturating_sub(begin)),
                plan.seed,
                v.detail
            );
            let around_from = v.from.saturating_sub(Duration::from_secs(30));
            let around_to = v.to + Duration::from_secs(10);
            let _ = writeln!(md, "Faults from 30 s before to 10 s after:\n");
            let _ = writeln!(md, "| # | start | end | kind | injected | detail |");
            let _ = writeln!(md, "|---|---|---|---|---|---|");
            for f in faults
                .iter()
                .filter(|f| f.start <= around_to && f.end.is_none_or(|e| e >= around_from))
            {
                let _ = writeln!(md, "{}", fault_line(f, begin));
            }
            if v.to - v.from < Duration::from_secs(600) {
                md.push_str(&log_lines(
                    world,
                    v.from.saturating_sub(Duration::from_secs(10)),
                    v.to + Duration::from_secs(2),
                    60,
                ));
            }
        }
    }

    let _ = writeln!(md, "\n## Record changes\n");
    for (t, what) in &c.record_changes {
        let _ = writeln!(md, "- {}: {what}", secs(t.saturating_sub(begin)));
    }

    let _ = writeln!(md, "\n## Fault history\n");
    let _ = writeln!(md, "Times from the campaign's start.\n");
    let _ = writeln!(md, "| # | start | end | kind | injected | detail |");
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for f in &faults {
        let _ = writeln!(md, "{}", fault_line(f, begin));
    }

    let logs = target.join(format!("chaos-{}-logs", plan.seed));
    let _ = std::fs::create_dir_all(&logs);
    for (name, sets) in world.log_sets() {
        for (n, log) in sets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .enumerate()
        {
            let _ = std::fs::copy(log, logs.join(format!("{name}-{n}.log")));
        }
    }
    let _ = writeln!(md, "\nThe instances' and guards' logs: {}.", logs.display());
    println!("{md}");
    let file = target.join(format!("chaos-{}.md", plan.seed));
    match std::fs::write(&file, &md) {
        Ok(()) => println!("chaos: report written to {}", file.display()),
        Err(e) => eprintln!("chaos: cannot write {}: {e}", file.display()),
    }
}

/// The invariant row of [`crate::check::scan_audit`].
fn audit_row(md: &mut String, c: &Checker) {
    let count = c
        .violations
        .iter()
        .filter(|v| v.invariant == "leader_writes")
        .count();
    let what = "no leader-only write after the leadership deadline (audit logs)";
    let Some(a) = &c.audit else {
        let _ = writeln!(md, "| {what} | not checked | lease duration | {count} |");
        return;
    };
    let worst = match a.worst() {
        Some((id, d, write)) => format!(
            "{} from the last renewal to a write ({id}: {write}; renew deadline {})",
            secs3(d),
            secs(a.renew_deadline)
        ),
        None => "no write in a term".to_string(),
    };
    let _ = writeln!(
        md,
        "| {what} | {worst}; {} writes checked, {} late | {} | {count} |",
        a.checked(),
        a.late.len(),
        secs(a.lease_duration)
    );
}

/// What the audit check counted, per instance and for the other clients.
fn audit_detail(md: &mut String, c: &Checker) {
    let Some(a) = &c.audit else {
        return;
    };
    let _ = writeln!(
        md,
        "
Audit logs (successful writes): a write received more than {} after its instance's \
         last renewal (leader Lease or heartbeat) landed, or after another instance took the \
         Lease over, is late.",
        secs(a.lease_duration)
    );
    for (id, i) in &a.instances {
        let kinds: Vec<String> = i.writes.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            md,
            "- {id}: {} leader-only writes checked ({}), worst {} after the last renewal; {} leader Lease writes, {} heartbeats",
            i.checked(),
            if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.join(", ")
            },
            i.worst
                .as_ref()
                .map(|(d, _)| secs3(*d))
                .unwrap_or_else(|| "-".into()),
            i.leader_lease_writes,
            i.heartbeats
        );
    }
    let others: Vec<String> = a
        .other_writes
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let _ = writeln!(
        md,
        "- not instances, not checked: the operator's commands {} writes; other clients (user, agent) {}; \
         the daemon's user with no instance's agent {}{}; without timestamps {}",
        a.operator_writes,
        if others.is_empty() {
            "none".to_string()
        } else {
            others.join(", ")
        },
        a.unattributed.len(),
        a.unattributed
            .first()
            .map(|u| format!(" (first: {u})"))
            .unwrap_or_default(),
        a.untimed
    );
}

fn secs3(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

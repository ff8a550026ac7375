//! Writes the report: each part's results (JSON in the output folder) become a section
//! of BENCHMARKS.md between `<!-- report:NAME:begin -->` and `<!-- report:NAME:end -->`
//! (text outside the markers is left alone; a part with no results leaves its section
//! as it is), and PNG plots in the output folder.

use crate::engine_cycles::EngineReport;
use crate::footprint::{self, Row};
use crate::guard::GuardReport;
use crate::outages::{Outage, OutagesReport, ProfileResult};
use crate::parts::FootprintReport;
use crate::soak::{KINDS, SoakReport};
use crate::stats::{Meta, Summary};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where the report goes.
pub struct Output {
    /// JSON results and PNG plots.
    pub dir: PathBuf,
    /// The Markdown file with the sections.
    pub markdown: PathBuf,
}

impl Output {
    fn json(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Saves one part's results (written whole, then renamed into place).
    pub fn save<T: serde::Serialize>(&self, name: &str, value: &T) {
        std::fs::create_dir_all(&self.dir).expect("create the report's folder");
        let path = self.json(name);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(value).expect("serialize results");
        std::fs::write(&tmp, text + "\n").expect("write results");
        std::fs::rename(&tmp, &path).expect("move results into place");
        println!("wrote {}", path.display());
    }

    fn load<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        let path = self.json(name);
        let text = std::fs::read_to_string(&path).ok()?;
        match serde_json::from_str(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!(
                    "{}: {e}; its section is left as it was (run the part again)",
                    path.display()
                );
                None
            }
        }
    }

    /// How the Markdown file links a file of the output folder.
    fn link(&self, file: &str) -> String {
        let base = self.markdown.parent().unwrap_or(Path::new(""));
        match self.dir.strip_prefix(base) {
            Ok(rel) => rel.join(file).display().to_string(),
            Err(_) => self.dir.join(file).display().to_string(),
        }
    }
}

fn took(secs: f64) -> String {
    if secs < 1.0 {
        "under 1 s".into()
    } else if secs >= 5400.0 {
        format!("{:.1} h", secs / 3600.0)
    } else if secs >= 90.0 {
        format!("{:.0} min", secs / 60.0)
    } else {
        format!("{secs:.0} s")
    }
}

fn smoke_banner(meta: &Meta) -> &'static str {
    if meta.smoke {
        "> **Smoke run**: too few samples to be the report's numbers; they show that the \
         machinery works.\n\n"
    } else {
        ""
    }
}

fn summary_row(who: &str, what: &str, s: Option<Summary>, budget: f64, missed: usize) -> String {
    match s {
        Some(s) => format!(
            "| {who} | {what} | {} | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} s | {:.2} | {:.2} | {missed} |",
            s.n,
            s.min,
            s.median,
            s.p90,
            s.p99,
            s.max,
            s.median / budget,
            s.p99 / budget,
        ),
        None => format!("| {who} | {what} | 0 | – | – | – | – | – | – | – | {missed} |"),
    }
}

fn scaled(o: &Outage) -> Option<f64> {
    o.scaled
}

fn ready(o: &Outage) -> Option<f64> {
    o.ready
}

fn fenced(o: &Outage) -> Option<f64> {
    o.fenced
}

fn outages_section(out: &Output, r: &OutagesReport) -> String {
    let mut s = String::new();
    s.push_str(smoke_banner(&r.meta));
    let _ = writeln!(
        s,
        "{} outages per profile for each watcher, taking turns on one test-bed pair per \
         profile; measured {} on {} (release build; kube-failover `{}`, commit `{}`), in {}.\n",
        r.outages_per_profile,
        r.meta.date,
        r.meta.machine.describe(),
        r.meta.daemon,
        r.meta.commit,
        took(r.meta.elapsed_secs),
    );
    match &r.kubectl {
        Some((path, version)) => {
            let _ = writeln!(s, "The kubectl watchdog ran `{path}` ({version}).\n");
        }
        None => s.push_str("The kubectl watchdog was left out of this run.\n\n"),
    }
    for p in &r.profiles {
        let budget = p.profile.budget_s();
        let _ = writeln!(
            s,
            "#### {} (probe timeout {:.1} s; budget (threshold − 1) × interval + 0.25 s = {:.2} s)\n",
            p.profile.name(),
            p.timeout_s,
            budget
        );
        s.push_str("| watcher | from SIGTERM to the primary's API server until | n | min | median | p90 | p99 | max | median ÷ budget | p99 ÷ budget | no promotion in 60 s |\n");
        s.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
        let missed = |v: &[Outage]| v.iter().filter(|o| o.scaled.is_none()).count();
        let d = &p.daemon;
        let _ = writeln!(
            s,
            "{}",
            summary_row(
                "kube-failover",
                "standby scaled",
                ProfileResult::summary(d, scaled),
                budget,
                missed(d)
            )
        );
        let _ = writeln!(
            s,
            "{}",
            summary_row(
                "kube-failover",
                "standby Ready",
                ProfileResult::summary(d, ready),
                budget,
                missed(d)
            )
        );
        if !p.naive.is_empty() {
            let n = &p.naive;
            let _ = writeln!(
                s,
                "{}",
                summary_row(
                    "kubectl watchdog",
                    "standby scaled",
                    ProfileResult::summary(n, scaled),
                    budget,
                    missed(n)
                )
            );
            let _ = writeln!(
                s,
                "{}",
                summary_row(
                    "kubectl watchdog",
                    "standby Ready",
                    ProfileResult::summary(n, ready),
                    budget,
                    missed(n)
                )
            );
        }
        s.push('\n');
        let fence = ProfileResult::summary(d, fenced);
        let promoted = d.iter().filter(|o| o.scaled.is_some()).count();
        let fenced_n = d.iter().filter(|o| o.fenced.is_some()).count();
        let _ = write!(
            s,
            "Time to fence (the primary's `/readyz` passing again → its Deployments at 0): \
             kube-failover {fenced_n} of {promoted}"
        );
        if let Some(f) = fence {
            let _ = write!(
                s,
                ", min {:.2} s, median {:.2} s, p90 {:.2} s, max {:.2} s",
                f.min, f.median, f.p90, f.max
            );
        }
        if !p.naive.is_empty() {
            let both = p.naive.iter().filter(|o| o.dual_active).count();
            let back = p.naive.iter().filter(|o| o.scaled.is_some()).count();
            let _ = write!(
                s,
                "; the kubectl watchdog never fences: both sides were active {} s after the \
                 primary returned in {both} of {back} outages",
                2.0 * p.profile.interval_s + 1.0
            );
        }
        let exit = ProfileResult::summary(d, |o| Some(o.exited));
        if let Some(e) = exit {
            let _ = write!(
                s,
                ". The API server took {:.2}–{:.2} s to exit after SIGTERM (it refuses \
                 connections from the start)",
                e.min, e.max
            );
        }
        s.push_str(".\n\n");
        let _ = writeln!(
            s,
            "![{}: time to promote, kube-failover and the kubectl watchdog]({})\n",
            p.profile.name(),
            out.link(&format!("time-to-promote-{}.png", p.profile.slug()))
        );
    }
    s.trim_end().to_string()
}

fn footprint_section(out: &Output, r: &FootprintReport) -> String {
    let mut s = String::new();
    s.push_str(smoke_banner(&r.meta));
    let _ = writeln!(
        s,
        "Measured {} on {} (release build; kube-failover `{}`, commit `{}`), window {:.0} s, \
         in {}. {}.\n",
        r.meta.date,
        r.meta.machine.describe(),
        r.meta.daemon,
        r.meta.commit,
        r.window_s,
        took(r.meta.elapsed_secs),
        r.baseline.describe().replacen("baseline", "Baseline", 1),
    );
    s.push_str(footprint::TABLE_HEADER);
    s.push('\n');
    for row in &r.rows {
        s.push_str(&row.table_line());
        s.push('\n');
    }
    if !r.naive.is_empty() {
        let (path, version) = r.kubectl.clone().unwrap_or_default();
        let _ = writeln!(
            s,
            "\nThe kubectl watchdog (`{path}`, {version}), one loop per group, interval 1 s:\n"
        );
        s.push_str("| loops | requests per tick: primary / standby | by verb (primary; standby) | CPU of the loops and their commands (one core) | API server CPU added (primary / standby) |\n|---|---|---|---|---|\n");
        for n in &r.naive {
            let _ = writeln!(
                s,
                "| {} | {:.2} / {:.2} | {}; {} | {:.2} % | {:.1} % / {:.1} % |",
                n.loops,
                n.per_tick[0],
                n.per_tick[1],
                verbs_or_none(&n.verbs[0]),
                verbs_or_none(&n.verbs[1]),
                n.cpu,
                n.apiserver_cpu[0],
                n.apiserver_cpu[1],
            );
        }
    }
    let _ = write!(
        s,
        "\n![Cost against groups: requests per tick, RSS, CPU]({})",
        out.link("footprint.png")
    );
    s
}

fn verbs_or_none(v: &std::collections::BTreeMap<String, f64>) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        footprint::verbs_text(v)
    }
}

fn soak_section(out: &Output, r: &SoakReport) -> String {
    let mut s = String::new();
    s.push_str(smoke_banner(&r.meta));
    let total: u64 = r.faults.values().map(|t| t.count).sum();
    let _ = writeln!(
        s,
        "Ran {} (planned {}) on {} ({}; kube-failover `{}`, commit `{}`), profile {}, \
         probe timeout {:.1} s, blip tolerance (threshold − 1) × interval = {:.1} s: {total} \
         faults.\n",
        took(r.ran_s),
        took(r.planned_s),
        r.meta.date,
        r.meta.machine.describe(),
        r.meta.daemon,
        r.meta.commit,
        r.profile.name(),
        r.timeout_s,
        r.tolerance_s,
    );
    s.push_str("| fault | injected | longest | longest ÷ tolerance | total time |\n|---|---|---|---|---|\n");
    for kind in KINDS {
        let t = r.faults.get(kind).cloned().unwrap_or_default();
        let label = if kind == "latency_spike" {
            format!(
                "latency_spike (every request held {:.2} s; probe timeout {:.1} s)",
                r.spike_delay_s, r.timeout_s
            )
        } else {
            kind.to_string()
        };
        let ratio = if kind == "latency_spike" {
            "–".to_string()
        } else {
            format!("{:.2}", t.longest_s / r.tolerance_s)
        };
        let _ = writeln!(
            s,
            "| {label} | {} | {:.2} s | {ratio} | {} |",
            t.count,
            t.longest_s,
            took(t.total_s)
        );
    }
    let _ = writeln!(
        s,
        "\n**Promotions: {}** (goal 0; the daemons' own counter: {:.0}).",
        r.promotions, r.promotions_metric
    );
    for note in &r.promotion_notes {
        let _ = writeln!(s, "- promotion {note}");
    }
    let join = |m: Vec<String>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.join(", ")
        }
    };
    let _ = writeln!(
        s,
        "\nWhat the daemon saw: state changes {}; failed probes of the primary by reason: {}.\n",
        join(
            r.state_changes
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect()
        ),
        join(
            r.probe_failures
                .iter()
                .map(|(k, v)| format!("{k} {v:.0}"))
                .collect()
        ),
    );
    let _ = write!(
        s,
        "![Every soak fault's duration]({})",
        out.link("soak-faults.png")
    );
    s
}

fn engine_section(r: &EngineReport) -> String {
    let mut s = String::new();
    s.push_str(smoke_banner(&r.meta));
    let _ = writeln!(
        s,
        "Seed {}, measured {} ({:.0} engine steps per second on one core), in {}.\n",
        r.seed,
        r.meta.date,
        r.steps_per_sec,
        took(r.meta.elapsed_secs)
    );
    s.push_str("Ticks, episodes and promotions during blips count both kinds of cycle (the outage cycles' blips come before their outage).\n\n");
    s.push_str("| cycles | faults | ticks | fault episodes (threshold − 1 long) | promotions | goal |\n|---|---|---|---|---|---|\n");
    let _ = writeln!(
        s,
        "| {} | blips under the tolerance | {} | {} ({}) | **{}** (left primary_active in {} cycles) | 0 |",
        r.blip_cycles,
        r.blip_ticks,
        r.blip_episodes,
        r.blips_at_threshold_minus_one,
        r.false_promotions,
        r.cycles_suspect,
    );
    let at: Vec<String> = r
        .promoted_at
        .iter()
        .map(|(k, n)| match k {
            0 => format!("{n} at the threshold-th failed tick"),
            k => format!("{n} at {k:+} ticks from it"),
        })
        .collect();
    let _ = writeln!(
        s,
        "| {} | blips, then a real outage | – | – | **{} of {}** ({}) | all |",
        r.outage_cycles,
        r.outages_promoted,
        r.outage_cycles,
        if at.is_empty() {
            "none".into()
        } else {
            at.join(", ")
        },
    );
    s
}

fn summary_section(
    outages: Option<&OutagesReport>,
    fp: Option<&FootprintReport>,
    soak: Option<&SoakReport>,
    engine: Option<&EngineReport>,
) -> String {
    let mut s = String::new();
    let metas: Vec<(&str, &Meta)> = [
        outages.map(|r| ("time to promote and to fence", &r.meta)),
        fp.map(|r| ("footprint", &r.meta)),
        soak.map(|r| ("false-promotion soak on the test bed", &r.meta)),
        engine.map(|r| ("false-promotion cycles through the engine", &r.meta)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if metas.is_empty() {
        return "Not measured yet.".into();
    }
    let mut machines: Vec<String> = metas.iter().map(|(_, m)| m.machine.describe()).collect();
    machines.sort();
    machines.dedup();
    let _ = writeln!(
        s,
        "Machine: {}; release build. Other processes on the same cores (builds, another \
         part running at the same time) show in the timings and CPU figures.\n",
        machines.join("; ")
    );
    s.push_str("| part | measured | took | kube-failover | commit |\n|---|---|---|---|---|\n");
    for (name, m) in &metas {
        let _ = writeln!(
            s,
            "| {name}{} | {} | {} | `{}` | `{}` |",
            if m.smoke { " (smoke run)" } else { "" },
            m.date,
            took(m.elapsed_secs),
            m.daemon,
            m.commit
        );
    }
    let mut t = String::new();
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "–".into()
        }
    };
    if let Some(o) = outages {
        for p in o.profiles.iter().filter(|p| !p.naive.is_empty()) {
            let (d, n) = (
                ProfileResult::summary(&p.daemon, scaled),
                ProfileResult::summary(&p.naive, scaled),
            );
            if let (Some(d), Some(n)) = (d, n) {
                let _ = writeln!(
                    t,
                    "| time to promote (stop → scaled), {}: median / p99 | {:.2} / {:.2} s | {:.2} / {:.2} s | {} / {} |",
                    p.profile.name(),
                    d.median,
                    d.p99,
                    n.median,
                    n.p99,
                    ratio(d.median, n.median),
                    ratio(d.p99, n.p99)
                );
            }
        }
        let (mut fenced_n, mut promoted, mut dual, mut naive_n) = (0, 0, 0, 0);
        let mut fence_times = Vec::new();
        for p in &o.profiles {
            promoted += p.daemon.iter().filter(|o| o.scaled.is_some()).count();
            fenced_n += p.daemon.iter().filter(|o| o.fenced.is_some()).count();
            fence_times.extend(p.daemon.iter().filter_map(|o| o.fenced));
            naive_n += p.naive.iter().filter(|o| o.scaled.is_some()).count();
            dual += p.naive.iter().filter(|o| o.dual_active).count();
        }
        if naive_n > 0 {
            let med =
                Summary::of(&fence_times).map_or("–".into(), |s| format!("{:.2} s", s.median));
            let _ = writeln!(
                t,
                "| old primary fenced when it returns | {fenced_n} of {promoted} (median {med}) | never: both sides active in {dual} of {naive_n} | – |"
            );
        }
    }
    if let Some(f) = fp {
        // Compared in the shape users run, one instance (as one watchdog per group).
        let row = |g: usize| {
            f.rows.iter().find(|r| {
                r.groups == g && r.shape == footprint::Shape::Namespaces && r.instances == 1
            })
        };
        for n in &f.naive {
            if let Some(r) = row(n.loops) {
                let (g, l) = if n.loops == 1 {
                    ("1 group", "1 loop".to_string())
                } else {
                    ("groups", format!("{} loops", n.loops))
                };
                let g = if n.loops == 1 {
                    g.to_string()
                } else {
                    format!("{} {g}", n.loops)
                };
                let _ = writeln!(
                    t,
                    "| CPU, {g} / {l} (% of one core) | {:.2} % | {:.2} % | {} |",
                    r.cpu,
                    n.cpu,
                    ratio(r.cpu, n.cpu)
                );
                let _ = writeln!(
                    t,
                    "| API requests per tick, {g} / {l}: primary / standby | {:.2} / {:.2} | {:.2} / {:.2} | {} / {} |",
                    r.per_tick[0],
                    r.per_tick[1],
                    n.per_tick[0],
                    n.per_tick[1],
                    ratio(r.per_tick[0], n.per_tick[0]),
                    ratio(r.per_tick[1], n.per_tick[1])
                );
            }
        }
    }
    if let Some(sk) = soak {
        let _ = writeln!(
            t,
            "| false promotions in the {} soak on the test bed | {} | not measured | – |",
            took(sk.ran_s),
            sk.promotions
        );
    }
    if !t.is_empty() {
        s.push_str("\n**kube-failover and the kubectl watchdog, side by side** (ratio: kube-failover ÷ watchdog):\n\n");
        s.push_str("| figure | kube-failover | kubectl watchdog | ratio |\n|---|---|---|---|\n");
        s.push_str(&t);
    }
    s.trim_end().to_string()
}

fn guard_section(r: &GuardReport) -> String {
    let mut s = String::new();
    s.push_str(smoke_banner(&r.meta));
    let _ = writeln!(
        s,
        "{} outages per mode on one test-bed pair, the primary's API server down {:.0} s in \
         each (SIGTERM to start); daemon probe interval {} s × {}, guard interval {} s, \
         `isolation_ttl` {} s; measured {} on {} ({}; kube-failover `{}`, commit `{}`), in {}.\n",
        r.outages_per_mode,
        r.outage_s,
        r.daemon_interval_s,
        r.failure_threshold,
        r.guard_interval_s,
        r.isolation_ttl_s,
        r.meta.date,
        r.meta.machine.describe(),
        r.build,
        r.meta.daemon,
        r.meta.commit,
        took(r.meta.elapsed_secs),
    );
    s.push_str(
        "| mode | outages | promoted | time to promote (stop → scaled): median / p95 / max | \
         dual-active: median | p95 | max | fenced by the guard |\n|---|---|---|---|---|---|---|---|\n",
    );
    let secs = |v: f64| format!("{v:.2} s");
    for m in &r.modes {
        let promote = m.summary(|o| o.scaled).map_or("–".into(), |p| {
            format!("{} / {} / {}", secs(p.median), secs(p.p95), secs(p.max))
        });
        let dual = m.summary(|o| o.dual_active);
        let q = |f: fn(&Summary) -> f64| dual.as_ref().map_or("–".into(), |d| secs(f(d)));
        let by_guard = m
            .outages
            .iter()
            .filter(|o| o.fenced_by.as_deref() == Some("guard"))
            .count();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {promote} | {} | {} | {} | {by_guard} of {} |",
            m.mode.name(),
            m.outages.len(),
            m.outages.iter().filter(|o| o.scaled.is_some()).count(),
            q(|d| d.median),
            q(|d| d.p95),
            q(|d| d.max),
            m.outages.len(),
        );
    }
    let restarts: usize = r.modes.iter().map(|m| m.restarts).sum();
    if restarts > 0 {
        let _ = writeln!(
            s,
            "\n{restarts} times the pair was not back at `primary` after an outage and the \
             mode was set up again (printed in the run's output)."
        );
    }
    s
}

fn replace_section(md: &str, name: &str, body: &str) -> String {
    let begin = format!("<!-- report:{name}:begin -->");
    let end = format!("<!-- report:{name}:end -->");
    match (md.find(&begin), md.find(&end)) {
        (Some(b), Some(e)) if e > b => format!(
            "{}\n{}\n{}",
            &md[..b + begin.len()],
            body.trim_end(),
            &md[e..]
        ),
        _ => {
            eprintln!("no {begin} … {end} in the report: the section goes at its end");
            format!("{}\n{begin}\n{}\n{end}\n", md.trim_end(), body.trim_end())
        }
    }
}

/// Renders every part whose results are in the output folder.
pub fn render(out: &Output) {
    let outages: Option<OutagesReport> = out.load("outages");
    let fp: Option<FootprintReport> = out.load("footprint");
    let soak: Option<SoakReport> = out.load("soak");
    let engine: Option<EngineReport> = out.load("engine");
    let guard: Option<GuardReport> = out.load("guard");
    let mut md = std::fs::read_to_string(&out.markdown).unwrap_or_else(|e| {
        panic!("{}: {e}", out.markdown.display());
    });
    let plot = |what: &str, r: Result<(), Box<dyn std::error::Error>>| {
        if let Err(e) = r {
            panic!("plotting {what}: {e}");
        }
    };
    md = replace_section(
        &md,
        "summary",
        &summary_section(
            outages.as_ref(),
            fp.as_ref(),
            soak.as_ref(),
            engine.as_ref(),
        ),
    );
    if let Some(r) = &outages {
        for p in &r.profiles {
            let file = out
                .dir
                .join(format!("time-to-promote-{}.png", p.profile.slug()));
            plot(
                &file.display().to_string(),
                crate::plots::time_to_promote(&file, p),
            );
        }
        md = replace_section(&md, "outages", &outages_section(out, r));
    }
    if let Some(r) = &fp {
        // The plot follows the headline: one namespace per group, one instance.
        let rows: Vec<Row> = r
            .rows
            .iter()
            .filter(|r| r.shape == footprint::Shape::Namespaces && r.instances == 1)
            .cloned()
            .collect();
        plot(
            "footprint",
            crate::plots::footprint(&out.dir.join("footprint.png"), &rows, &r.naive),
        );
        md = replace_section(&md, "footprint", &footprint_section(out, r));
    }
    if let Some(r) = &soak {
        plot(
            "soak",
            crate::plots::soak(&out.dir.join("soak-faults.png"), r),
        );
        md = replace_section(&md, "soak", &soak_section(out, r));
    }
    if let Some(r) = &engine {
        md = replace_section(&md, "engine", &engine_section(r));
    }
    if let Some(r) = &guard {
        md = replace_section(&md, "guard", &guard_section(r));
    }
    std::fs::write(&out.markdown, md).expect("write the report");
    println!("wrote {}", out.markdown.display());
}

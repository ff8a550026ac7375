//! `simulate`: replays observations through the pure engine with the configuration's
//! policy (or `--set` overrides) and prints the timeline: state changes with their
//! reasons, and when it would promote or fence. The observations come from a daemon's
//! trace (`daemon.trace_file`) or from a synthetic scenario (`--scenario`). A trace is
//! replayed as recorded: the engine's actions are not carried out, the trace shows what
//! the clusters did. A scenario runs in the core crate's model of the two clusters
//! (`kube_failover::world`, the one the engine's tests run in), which carries
//! the actions out (record writes, scaling, fencing).

use super::Failure;
use kube_failover::config::{Config, GroupConfig};
use kube_failover::engine::{Decision, Engine, EngineSettings, GroupState};
use kube_failover::model::{Action, Observation, ProbeReason, SignalId};
use kube_failover::probe;
use kube_failover::trace::{self, TraceLine};
use kube_failover::world::{Workload, World};
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Wall time of a synthetic scenario's first tick (fixed, so output is reproducible).
const SCENARIO_WALL_START: f64 = 1_800_000_000.0;
/// Ticks simulated after a scenario's faults end.
const SCENARIO_TAIL_TICKS: u32 = 10;
/// Bound on a scenario's ticks.
const MAX_SCENARIO_TICKS: u64 = 1_000_000;

/// The flags of `simulate`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Configuration file (TOML); its kubeconfig files need not exist here.
    #[arg(long, short, env = "KUBE_FAILOVER_CONFIG")]
    config: PathBuf,
    /// A trace written by the daemon (`daemon.trace_file`); give the rotated `.1` file
    /// first to replay both, in order.
    #[arg(
        long,
        required_unless_present = "scenario",
        conflicts_with = "scenario"
    )]
    trace: Vec<PathBuf>,
    /// A synthetic scenario: `outage:at=30s,for=60s`, `flap:down=2,up=1,for=5m`,
    /// `latency:at=30s,for=20s,timeout` (or `delay=2s`). Times count from the daemon's
    /// start; `at` defaults to `policy.startup_grace`.
    #[arg(long)]
    scenario: Option<String>,
    /// The group (`groups[].name`); default: the only group of the configuration.
    #[arg(long)]
    group: Option<String>,
    /// Override a setting with the configuration's key path, e.g.
    /// `policy.failure_threshold=5` or `daemon.probe_interval=2s` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the timeline as JSON.
    #[arg(long)]
    json: bool,
}

/// Bad flags, scenario or overrides (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

impl Args {
    pub(crate) fn execute(self) -> Result<(), Failure> {
        let mut config = Config::load(&self.config).map_err(Failure::invalid)?;
        apply_overrides(&mut config, &self.set).map_err(Failure::invalid)?;
        config
            .validate_offline()
            .map_err(|e| Failure::invalid(e.with_file(&self.config)))?;
        let group = pick_group(&config, self.group.as_deref()).map_err(Failure::invalid)?;
        let timeline = match &self.scenario {
            Some(text) => {
                let scenario = Scenario::parse(text, &group.policy.startup_grace)
                    .map_err(|e| Failure::invalid(Usage(format!("--scenario {text:?}: {e}"))))?;
                run_scenario(&config, &group, &scenario, text)
            }
            None => {
                let mut lines = Vec::new();
                for path in &self.trace {
                    lines.extend(trace::read(path).map_err(Failure::invalid)?);
                }
                lines.retain(|l| l.group == group.name);
                if lines.is_empty() {
                    return Err(Failure::invalid(Usage(format!(
                        "no observation of group {} in the trace",
                        group.name
                    ))));
                }
                let names: Vec<String> =
                    self.trace.iter().map(|p| p.display().to_string()).collect();
                replay_trace(&config, &group, &lines, &names.join(", "))
            }
        };
        if self.json {
            let text = serde_json::to_string_pretty(&timeline).map_err(Failure::runtime)?;
            println!("{text}");
        } else {
            print!("{}", timeline.render());
        }
        Ok(())
    }
}

fn pick_group(config: &Config, name: Option<&str>) -> Result<GroupConfig, Usage> {
    let known = || {
        config
            .groups
            .iter()
            .map(|g| g.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(n) => config
            .groups
            .iter()
            .find(|g| g.name == n)
            .cloned()
            .ok_or_else(|| {
                Usage(format!(
                    "no group {n:?} in the configuration (groups: {})",
                    known()
                ))
            }),
        None if config.groups.len() == 1 => Ok(config.groups[0].clone()),
        None => Err(Usage(format!(
            "the configuration has several groups: name one with --group ({})",
            known()
        ))),
    }
}

/// Applies `--set key=value` overrides: `policy.…` keys to every group's policy,
/// `daemon.…` keys to `[daemon]`. A value is read as TOML (`5`, `true`, `"10s"`), or as
/// text when it is not TOML (`10s`). An unknown key is refused, naming it.
fn apply_overrides(config: &mut Config, sets: &[String]) -> Result<(), Usage> {
    if sets.is_empty() {
        return Ok(());
    }
    let mut tree = serde_json::to_value(&*config).map_err(|e| Usage(e.to_string()))?;
    for set in sets {
        let Some((key, text)) = set.split_once('=') else {
            return Err(Usage(format!("--set {set:?}: expected KEY=VALUE")));
        };
        let key = key.trim();
        let value = parse_value(text.trim());
        let path: Vec<&str> = key.split('.').collect();
        let targets: Vec<&mut serde_json::Value> = match path[0] {
            "policy" if path.len() > 1 => tree["groups"]
                .as_array_mut()
                .into_iter()
                .flatten()
                .map(|g| &mut g["policy"])
                .collect(),
            "daemon" if path.len() > 1 => vec![&mut tree["daemon"]],
            _ => return Err(unknown_key(key)),
        };
        for target in targets {
            let mut slot = target;
            for part in &path[1..] {
                slot = match slot.as_object_mut().and_then(|o| o.get_mut(*part)) {
                    Some(s) => s,
                    None => return Err(unknown_key(key)),
                };
            }
            if slot.is_object() {
                return Err(Usage(format!("--set {key}: a section, not a setting")));
            }
            *slot = value.clone();
        }
        // Each override is checked on its own, so an error names it.
        serde_json::from_value::<Config>(tree.clone())
            .map_err(|e| Usage(format!("--set {key}={}: {e}", text.trim())))?;
    }
    *config = serde_json::from_value(tree).map_err(|e| Usage(e.to_string()))?;
    Ok(())
}

fn unknown_key(key: &str) -> Usage {
    Usage(format!(
        "--set {key}: unknown key (policy.<key> of [groups.policy], or daemon.<key>)"
    ))
}

fn parse_value(text: &str) -> serde_json::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .and_then(|v| serde_json::to_value(v).ok())
        .unwrap_or_else(|| serde_json::Value::String(text.to_string()))
}

/// A synthetic fault schedule of the primary.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Scenario {
    /// When the first fault starts, from the daemon's start.
    at: Duration,
    /// How long faults go on.
    length: Duration,
    kind: ScenarioKind,
}

#[derive(Debug, Clone, PartialEq)]
enum ScenarioKind {
    /// The primary's API and workloads refuse connections.
    Outage,
    /// Down `down` ticks, up `up` ticks, repeated.
    Flap { down: u32, up: u32 },
    /// Every primary probe takes `delay`; at or above the probe timeout it times out.
    /// `None`: they time out.
    Latency { delay: Option<Duration> },
}

impl Scenario {
    pub(crate) fn parse(text: &str, default_at: &Duration) -> Result<Self, String> {
        let (kind, rest) = text.split_once(':').unwrap_or((text, ""));
        let mut at = *default_at;
        let mut length = None;
        let (mut down, mut up, mut delay, mut timeout) = (None, None, None, false);
        for item in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            let duration = || {
                humantime::parse_duration(value)
                    .map_err(|e| format!("{key}={value}: not a duration ({e})"))
            };
            let ticks = || {
                value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{key}={value}: not a number of ticks (1 or more)"))
            };
            match (kind, key) {
                (_, "at") => at = duration()?,
                (_, "for") => length = Some(duration()?),
                ("flap", "down") => down = Some(ticks()?),
                ("flap", "up") => up = Some(ticks()?),
                ("latency", "delay") => delay = Some(duration()?),
                ("latency", "timeout") if value.is_empty() => timeout = true,
                _ => return Err(format!("unknown setting {key:?} for a {kind} scenario")),
            }
        }
        let length = length.ok_or("for=<duration> is required")?;
        let kind = match kind {
            "outage" => ScenarioKind::Outage,
            "flap" => ScenarioKind::Flap {
                down: down.ok_or("down=<ticks> is required")?,
                up: up.ok_or("up=<ticks> is required")?,
            },
            "latency" if timeout && delay.is_some() => {
                return Err("timeout and delay= exclude each other".into());
            }
            "latency" => ScenarioKind::Latency { delay },
            other => {
                return Err(format!(
                    "unknown scenario {other:?} (outage, flap, latency)"
                ));
            }
        };
        Ok(Scenario { at, length, kind })
    }

    /// What the primary's probes answer in tick `tick` (at `offset`): `None` when it is
    /// healthy, else the reason and latency of every failing probe.
    fn fault(
        &self,
        tick: u64,
        offset: Duration,
        interval: Duration,
        timeout: Duration,
    ) -> Option<(ProbeReason, Duration)> {
        if offset < self.at || offset >= self.at.saturating_add(self.length) {
            return None;
        }
        match self.kind {
            ScenarioKind::Outage => Some((ProbeReason::Refused, Duration::from_millis(1))),
            ScenarioKind::Flap { down, up } => {
                let first = ticks_until(self.at, interval);
                let phase = (tick - first) % u64::from(down + up);
                (phase < u64::from(down))
                    .then_some((ProbeReason::Refused, Duration::from_millis(1)))
            }
            ScenarioKind::Latency { delay } => match delay {
                Some(d) if d < timeout => None,
                _ => Some((ProbeReason::Timeout, timeout)),
            },
        }
    }

    fn end(&self) -> Duration {
        self.at.saturating_add(self.length)
    }
}

/// The first tick at or after `at`.
fn ticks_until(at: Duration, interval: Duration) -> u64 {
    let n = at.as_nanos().div_ceil(interval.as_nanos().max(1));
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// One line of the timeline: a tick where the state changed or an action was decided.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Event {
    /// The observation's index (0-based) among the group's observations.
    pub(crate) index: usize,
    pub(crate) offset_seconds: f64,
    pub(crate) wall: String,
    pub(crate) state: GroupState,
    pub(crate) state_changed: bool,
    pub(crate) reasons: Vec<String>,
    pub(crate) actions: Vec<Action>,
}

/// The simulation's result.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Timeline {
    pub(crate) group: String,
    /// The trace file(s) or the scenario.
    pub(crate) source: String,
    /// True when the engine's actions were carried out in a model of the clusters
    /// (scenarios); false when the recorded observations were replayed as they are.
    pub(crate) actions_carried_out: bool,
    #[serde(with = "humantime_serde")]
    pub(crate) interval: Duration,
    pub(crate) mode: String,
    pub(crate) policy: kube_failover::config::PolicyConfig,
    pub(crate) observations: usize,
    /// Lines the daemon dropped from the trace (a gap in the observations).
    pub(crate) dropped_lines: u64,
    pub(crate) events: Vec<Event>,
    /// The first tick that starts a promotion (or would, in observe mode).
    pub(crate) promotion_at: Option<usize>,
    /// The first tick that fences the old primary.
    pub(crate) fence_at: Option<usize>,
    /// Traces only: the tick in which the daemon wrote the promotion (the observation
    /// before the first whose record says the standby is active).
    pub(crate) recorded_promotion_at: Option<usize>,
}

/// Feeds observations to an engine and collects the timeline.
struct Recorder {
    engine: Engine,
    base: Instant,
    timeline: Timeline,
    first: bool,
}

impl Recorder {
    fn new(config: &Config, group: &GroupConfig, source: String, carried_out: bool) -> Self {
        let base = Instant::now();
        let settings = EngineSettings {
            interval: config.daemon.probe_interval,
            policy: group.policy.clone(),
            mode: config.daemon.mode,
            signals: probe::signal_ids(group),
            clear_stale_locks: group.state.clear_stale_locks,
        };
        Recorder {
            engine: Engine::new(settings, base),
            base,
            timeline: Timeline {
                group: group.name.clone(),
                source,
                actions_carried_out: carried_out,
                interval: config.daemon.probe_interval,
                mode: config.daemon.mode.as_str().to_string(),
                policy: group.policy.clone(),
                observations: 0,
                dropped_lines: 0,
                events: Vec::new(),
                promotion_at: None,
                fence_at: None,
                recorded_promotion_at: None,
            },
            first: true,
        }
    }

    fn step(&mut self, offset: Duration, obs: &Observation) -> (Instant, Decision) {
        let now = self.base + offset;
        let index = self.timeline.observations;
        self.timeline.observations += 1;
        let decision = self.engine.step(now, obs);
        let promotes = decision.would_promote()
            || decision
                .actions
                .iter()
                .any(|a| matches!(a, Action::RecordPromoting { .. }));
        if promotes {
            self.timeline.promotion_at.get_or_insert(index);
        }
        if decision
            .actions
            .iter()
            .any(|a| matches!(a, Action::FencePrimary { .. }))
        {
            self.timeline.fence_at.get_or_insert(index);
        }
        if decision.state_changed || self.first || !decision.actions.is_empty() {
            self.timeline.events.push(Event {
                index,
                offset_seconds: offset.as_secs_f64(),
                wall: rfc3339(obs.wall_unix),
                state: decision.state,
                state_changed: decision.state_changed,
                reasons: decision.reasons.iter().map(|r| r.to_string()).collect(),
                actions: decision.actions.clone(),
            });
        }
        self.first = false;
        (now, decision)
    }
}

fn rfc3339(wall_unix: f64) -> String {
    let at = UNIX_EPOCH + Duration::try_from_secs_f64(wall_unix.max(0.0)).unwrap_or_default();
    humantime::format_rfc3339_millis(at).to_string()
}

/// Replays a trace's observations as recorded; no action is carried out.
pub(crate) fn replay_trace(
    config: &Config,
    group: &GroupConfig,
    lines: &[TraceLine],
    source: &str,
) -> Timeline {
    let mut rec = Recorder::new(config, group, format!("trace {source}"), false);
    for (index, line) in lines.iter().enumerate() {
        rec.timeline.dropped_lines += line.dropped_before;
        let offset = Duration::try_from_secs_f64(line.offset_seconds.max(0.0)).unwrap_or_default();
        rec.step(offset, &line.observation);
        let standby_active = matches!(&line.observation.standby.record,
            Ok(r) if r.effective_phase().standby_active());
        if standby_active && index > 0 && rec.timeline.recorded_promotion_at.is_none() {
            rec.timeline.recorded_promotion_at = Some(index - 1);
        }
    }
    rec.timeline
}

/// Runs a scenario in a model of the two clusters that carries the actions out.
pub(crate) fn run_scenario(
    config: &Config,
    group: &GroupConfig,
    scenario: &Scenario,
    source: &str,
) -> Timeline {
    let interval = config.daemon.probe_interval;
    let carried_out = config.daemon.mode == kube_failover::config::Mode::Auto;
    let mut rec = Recorder::new(config, group, format!("scenario {source}"), carried_out);
    let mut world = scenario_world(group);
    let ticks = (ticks_until(scenario.end(), interval) + u64::from(SCENARIO_TAIL_TICKS))
        .min(MAX_SCENARIO_TICKS);
    for tick in 0..ticks {
        let offset = interval.saturating_mul(u32::try_from(tick).unwrap_or(u32::MAX));
        let fault = scenario.fault(tick, offset, interval, config.daemon.probe_timeout);
        let wall = SCENARIO_WALL_START + offset.as_secs_f64();
        let obs = observe_scenario(&mut world, fault, wall);
        let (now, decision) = rec.step(offset, &obs);
        if carried_out {
            carry_out(&mut world, &mut rec.engine, now, &decision, wall);
        }
        world.tick_done();
    }
    rec.timeline
}

/// The world's observation of a scenario's tick: the primary fails as the scenario
/// says, or answers.
fn observe_scenario(
    world: &mut World,
    fault: Option<(ProbeReason, Duration)>,
    wall: f64,
) -> Observation {
    match fault {
        Some((reason, latency)) => world.primary_fails(reason, latency),
        None => world.primary_up(),
    }
    world.observe(wall)
}

/// Carries a decision's actions out in the world and feeds each result back to the
/// engine, as the daemon's runner does with the actuator's reports (the record as
/// stored is the engine's last copy).
fn carry_out(world: &mut World, engine: &mut Engine, now: Instant, decision: &Decision, wall: f64) {
    for (action, ok) in world.apply(&decision.actions, wall) {
        engine.handle_result(now, &action, ok);
        if ok && action.writes_record() && world.record_exists {
            engine.record_stored(&world.record);
        }
    }
}

/// The two clusters of one group, as the engine sees them: the group's workloads and
/// HTTP checks, every one at 1 replica on the primary; the standby and its record
/// always answer.
fn scenario_world(group: &GroupConfig) -> World {
    let ids = probe::signal_ids(group);
    let workloads = ids
        .iter()
        .filter(|id| matches!(id, SignalId::Workload(_)))
        .zip(&group.workloads)
        .map(|(id, w)| Workload {
            signal: id.clone(),
            deployment: w.signal_name(),
            replicas: w.replicas,
        })
        .collect();
    let http = ids
        .into_iter()
        .filter(|id| matches!(id, SignalId::Http(_)))
        .collect();
    World::healthy(workloads, http)
}

impl Timeline {
    fn render(&self) -> String {
        use std::fmt::Write;
        let p = &self.policy;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "group {}, {}: {} observations, interval {}, mode {}",
            self.group,
            self.source,
            self.observations,
            humantime::format_duration(self.interval),
            self.mode
        );
        let _ = writeln!(
            out,
            "policy: failure_threshold={} success_threshold={} quorum={} startup_grace={} cooldown={}",
            p.failure_threshold,
            p.success_threshold,
            p.quorum,
            humantime::format_duration(p.startup_grace),
            humantime::format_duration(p.cooldown)
        );
        if self.actions_carried_out {
            let _ = writeln!(
                out,
                "actions carried out in a model of the clusters (record, scaling, fencing)"
            );
        } else {
            let _ = writeln!(
                out,
                "decisions on the recorded observations: actions are not carried out, the \
                 trace shows what the clusters did"
            );
        }
        if self.dropped_lines > 0 {
            let _ = writeln!(
                out,
                "warning: the daemon dropped {} trace line(s): the trace has gaps",
                self.dropped_lines
            );
        }
        let _ = writeln!(
            out,
            "\n{:>5}  {:>9}  {:<24}  {:<20}  REASONS; ACTIONS",
            "TICK", "OFFSET", "WALL", "STATE"
        );
        for e in &self.events {
            let actions: Vec<String> = e.actions.iter().map(describe).collect();
            let _ = writeln!(
                out,
                "{:>5}  {:>8.1}s  {:<24}  {:<20}  {}{}{}",
                e.index,
                e.offset_seconds,
                e.wall,
                if e.state_changed || e.index == 0 {
                    e.state.as_str().to_string()
                } else {
                    format!("({})", e.state.as_str())
                },
                e.reasons.join(","),
                if actions.is_empty() { "" } else { "; " },
                actions.join(", ")
            );
        }
        let at = |i: Option<usize>| match i {
            Some(i) => format!("tick {i}"),
            None => "never".to_string(),
        };
        let _ = writeln!(
            out,
            "\npromotion: {}; fencing: {}",
            at(self.promotion_at),
            at(self.fence_at)
        );
        if !self.actions_carried_out {
            let _ = writeln!(
                out,
                "recorded: the daemon wrote its promotion in {}",
                at(self.recorded_promotion_at)
            );
        }
        out
    }
}

fn describe(action: &Action) -> String {
    match action {
        Action::RecordPromoting { epoch, .. } => format!("promote (epoch {epoch})"),
        Action::FencePrimary { epoch, .. } => format!("fence primary (epoch {epoch})"),
        Action::Announce { reason } => format!("event {reason}"),
        other => other.kind().replace('_', " "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_failover::config::Mode;

    const CONFIG: &str = r#"
[daemon]
probe_interval = "2s"
probe_timeout = "1s"

[[groups]]
name = "env0"
primary = { context = "primary", namespace = "app" }
standby = { context = "standby", namespace = "app" }
workloads = [{ name = "agent" }]

[groups.policy]
failure_threshold = 4
startup_grace = "10s"
"#;

    fn config() -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, CONFIG).unwrap();
        Config::load(&path).unwrap()
    }

    fn simulate(config: &Config, scenario: &str) -> Timeline {
        let group = config.groups[0].clone();
        let s = Scenario::parse(scenario, &group.policy.startup_grace).unwrap();
        run_scenario(config, &group, &s, scenario)
    }

    #[test]
    fn scenarios_parse_with_defaults_and_name_their_errors() {
        let grace = Duration::from_secs(30);
        let s = Scenario::parse("outage:at=40s,for=1m", &grace).unwrap();
        assert_eq!(
            s,
            Scenario {
                at: Duration::from_secs(40),
                length: Duration::from_secs(60),
                kind: ScenarioKind::Outage
            }
        );
        let s = Scenario::parse("flap:down=2,up=1,for=5m", &grace).unwrap();
        assert_eq!(s.at, grace);
        assert_eq!(s.kind, ScenarioKind::Flap { down: 2, up: 1 });
        let s = Scenario::parse("latency:at=1m,for=20s,timeout", &grace).unwrap();
        assert_eq!(s.kind, ScenarioKind::Latency { delay: None });
        let s = Scenario::parse("latency:for=20s,delay=500ms", &grace).unwrap();
        assert_eq!(
            s.kind,
            ScenarioKind::Latency {
                delay: Some(Duration::from_millis(500))
            }
        );
        for (text, expected) in [
            ("outage:at=30s", "for=<duration> is required"),
            (
                "outage:for=1m,down=2",
                "unknown setting \"down\" for a outage scenario",
            ),
            ("flap:down=2,for=1m", "up=<ticks> is required"),
            ("flap:down=0,up=1,for=1m", "down=0: not a number of ticks"),
            ("outage:for=soon", "for=soon: not a duration"),
            ("earthquake:for=1m", "unknown scenario \"earthquake\""),
            ("latency:for=1m,timeout,delay=1s", "exclude each other"),
        ] {
            let err = Scenario::parse(text, &grace).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn an_outage_of_threshold_ticks_promotes_in_its_last_tick_and_fences_when_back() {
        let config = config();
        // Interval 2s, threshold 4: the outage starts at tick 10 (20s); ticks 10..=13
        // fail, the fourth failure (tick 13) puts the primary down and promotes.
        let t = simulate(&config, "outage:at=20s,for=8s");
        assert_eq!(t.promotion_at, Some(13), "{}", t.render());
        // The primary answers again at tick 14 (28s) and is fenced then.
        assert_eq!(t.fence_at, Some(14), "{}", t.render());
        let last = t.events.last().unwrap();
        assert_eq!(last.state, GroupState::Promoted, "{}", t.render());
        // One tick shorter: never down.
        let t = simulate(&config, "outage:at=20s,for=6s");
        assert_eq!(t.promotion_at, None, "{}", t.render());
        assert!(
            t.events
                .iter()
                .any(|e| e.state == GroupState::PrimarySuspect)
        );
    }

    #[test]
    fn a_flap_below_the_threshold_never_promotes_and_at_it_does() {
        let config = config();
        let t = simulate(&config, "flap:down=3,up=1,for=5m");
        assert_eq!(t.promotion_at, None, "{}", t.render());
        assert!(
            t.events
                .iter()
                .any(|e| e.state == GroupState::PrimarySuspect)
        );
        let t = simulate(&config, "flap:down=4,up=1,for=5m");
        // The first run of 4 down ticks starts at tick 5 (10s, the startup grace).
        assert_eq!(t.promotion_at, Some(8), "{}", t.render());
    }

    #[test]
    fn timeouts_count_as_down_and_slow_answers_do_not() {
        let config = config();
        let t = simulate(&config, "latency:at=20s,for=8s,timeout");
        assert_eq!(t.promotion_at, Some(13), "{}", t.render());
        let t = simulate(&config, "latency:at=20s,for=8s,delay=900ms");
        assert_eq!(t.promotion_at, None, "{}", t.render());
    }

    #[test]
    fn observe_mode_says_when_it_would_promote_and_carries_nothing_out() {
        let mut config = config();
        config.daemon.mode = Mode::Observe;
        let t = simulate(&config, "outage:at=20s,for=8s");
        assert!(!t.actions_carried_out);
        assert_eq!(t.promotion_at, Some(13), "{}", t.render());
        assert_eq!(t.fence_at, None);
    }

    #[test]
    fn overrides_use_the_config_key_paths_and_refuse_unknown_keys() {
        let mut config = config();
        apply_overrides(
            &mut config,
            &[
                "policy.failure_threshold=2".into(),
                "daemon.probe_interval=5s".into(),
                "policy.observers.ttl=\"20s\"".into(),
            ],
        )
        .unwrap();
        assert_eq!(config.groups[0].policy.failure_threshold, 2);
        assert_eq!(config.daemon.probe_interval, Duration::from_secs(5));
        assert_eq!(
            config.groups[0].policy.observers.ttl,
            Some(Duration::from_secs(20))
        );
        let t = simulate(&config, "outage:at=20s,for=10s");
        // Ticks every 5s: ticks 4 and 5 fail, the second promotes.
        assert_eq!(t.promotion_at, Some(5), "{}", t.render());

        for (set, expected) in [
            (
                "policy.failure_treshold=2",
                "--set policy.failure_treshold: unknown key",
            ),
            ("groups.name=x", "--set groups.name: unknown key"),
            (
                "policy.failure_threshold=many",
                "--set policy.failure_threshold=many: ",
            ),
            ("policy.observers=1", "a section, not a setting"),
            ("policy.quorum", "expected KEY=VALUE"),
        ] {
            let err = apply_overrides(&mut config.clone(), &[set.into()])
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(expected) || err.contains(expected),
                "{set}: {err}"
            );
        }
    }

    #[test]
    fn a_replayed_scenario_trace_predicts_the_same_promotion_tick() {
        // A scenario's observations written as a trace and replayed as recorded: the
        // engine decides the promotion in the same tick, and the record written by the
        // model shows it in the next observation.
        let config = config();
        let group = config.groups[0].clone();
        let scenario =
            Scenario::parse("outage:at=20s,for=30s", &group.policy.startup_grace).unwrap();
        let interval = config.daemon.probe_interval;
        let mut world = scenario_world(&group);
        let mut engine = Engine::new(
            EngineSettings {
                interval,
                policy: group.policy.clone(),
                mode: Mode::Auto,
                signals: probe::signal_ids(&group),
                clear_stale_locks: group.state.clear_stale_locks,
            },
            Instant::now(),
        );
        let base = Instant::now();
        let mut lines = Vec::new();
        for tick in 0..30u32 {
            let offset = interval * tick;
            let fault = scenario.fault(
                u64::from(tick),
                offset,
                interval,
                config.daemon.probe_timeout,
            );
            let wall = SCENARIO_WALL_START + offset.as_secs_f64();
            let obs = observe_scenario(&mut world, fault, wall);
            lines.push(TraceLine {
                group: "env0".into(),
                offset_seconds: offset.as_secs_f64(),
                wall: rfc3339(wall),
                dropped_before: 0,
                trigger: None,
                observation: obs.clone(),
            });
            let d = engine.step(base + offset, &obs);
            carry_out(&mut world, &mut engine, base + offset, &d, wall);
            world.tick_done();
        }
        let t = replay_trace(&config, &group, &lines, "t.jsonl");
        assert_eq!(t.promotion_at, Some(13), "{}", t.render());
        assert_eq!(t.recorded_promotion_at, Some(13), "{}", t.render());
        assert!(
            t.render()
                .contains("recorded: the daemon wrote its promotion in tick 13")
        );
    }
}

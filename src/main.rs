//! `kube-failover`: the daemon (`run`) and the operator's commands (`check-config`,
//! `status`). Owns process concerns only: arguments, exit codes, log setup, printing.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube_failover::config::{Config, ConfigError, LogFormat};
use kube_failover::status::{GroupStatus, StatusReport};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Success.
const EXIT_OK: u8 = 0;
/// The daemon (or a command) failed at run time.
const EXIT_RUNTIME: u8 = 1;
/// Invalid configuration or command line (clap also exits 2 on usage errors).
const EXIT_INVALID: u8 = 2;
/// `status` could not reach the daemon.
const EXIT_UNREACHABLE: u8 = 3;

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (check-config: the configuration is valid)
  1  runtime error (the daemon failed; status got an unusable answer)
  2  invalid configuration or command line
  3  the daemon could not be reached (status)

Configuration keys can be overridden from the environment as
KUBE_FAILOVER__<SECTION>__<KEY>, e.g. KUBE_FAILOVER__DAEMON__MODE=observe or
KUBE_FAILOVER__GROUPS__0__POLICY__FAILURE_THRESHOLD=5. Log level: RUST_LOG (default info;
the Kubernetes client's per-request error lines only when it names kube_client).";

const DEFAULT_CONFIG: &str = "/etc/kube-failover/config.toml";

/// How long `status` waits for the daemon: it is local and answers from memory.
const STATUS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps an active/passive Kubernetes workload alive across two clusters: probes the
/// primary, promotes the standby when the primary is down, fences the old primary.
#[derive(Debug, Parser)]
#[command(name = "kube-failover", version, after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon until SIGTERM/SIGINT.
    Run {
        /// Configuration file (TOML).
        #[arg(long, short, env = "KUBE_FAILOVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Load and validate the configuration (including kubeconfig files and contexts,
    /// without contacting any cluster) and print it resolved: defaults filled in,
    /// durations normalised. Exits 0 if valid, 2 with every problem if not.
    CheckConfig {
        /// Configuration file (TOML).
        #[arg(long, short, env = "KUBE_FAILOVER_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Ask a running daemon for its view of every group and print it.
    Status {
        /// The daemon's admin address (`daemon.listen`).
        #[arg(long, default_value = "127.0.0.1:9464")]
        addr: String,
        /// Print the daemon's /status JSON as it was served.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run { config } => run(&config),
        Command::CheckConfig { config } => check_config(&config),
        Command::Status { addr, json } => status(&addr, json),
    };
    ExitCode::from(code)
}

/// Loads and fully validates `path`, attaching the file to validation problems.
fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let config = Config::load(path)?;
    config.validate().map_err(|e| e.with_file(path))?;
    Ok(config)
}

fn run(path: &Path) -> u8 {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("kube-failover: {err}");
            return EXIT_INVALID;
        }
    };
    if let Err(err) = init_tracing(config.daemon.log_format) {
        eprintln!("kube-failover: {err:#}");
        return EXIT_RUNTIME;
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %path.display(),
        mode = config.daemon.mode.as_str(),
        "starting"
    );
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| {
            runtime
                .block_on(kube_failover::daemon::run(config))
                .map_err(anyhow::Error::from)
        });
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            EXIT_OK
        }
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "daemon failed");
            // Two instances with one identity is a configuration error.
            let clash = err
                .downcast_ref::<kube_failover::daemon::DaemonError>()
                .is_some_and(|e| matches!(e, kube_failover::daemon::DaemonError::IdentityClash(_)));
            if clash { EXIT_INVALID } else { EXIT_RUNTIME }
        }
    }
}

/// kube's client logs every failed request itself, at error level, without naming the
/// cluster: several lines per tick during an outage. The daemon reports the same failure
/// once per change, with group and cluster, so these stay out unless `RUST_LOG` names
/// `kube_client`.
const QUIET_KUBE_CLIENT: &str = "kube_client::client::builder=off";

/// The log filter: `RUST_LOG` (default `info`) with kube's per-request error lines off,
/// unless `RUST_LOG` names `kube_client` itself.
fn log_filter(rust_log: Option<&str>) -> String {
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        Some(spec) if spec.contains("kube_client") => spec.to_string(),
        Some(spec) => format!("{spec},{QUIET_KUBE_CLIENT}"),
        None => format!("info,{QUIET_KUBE_CLIENT}"),
    }
}

/// Colour only on a terminal, and not when `NO_COLOR` is set (no-color.org): a log file,
/// pipe or journal gets plain text.
fn use_colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Logs go to stderr, so that stdout stays free for anything a command prints.
fn init_tracing(format: LogFormat) -> anyhow::Result<()> {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;

    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = EnvFilter::try_new(log_filter(rust_log.as_deref())).unwrap_or_else(|err| {
        eprintln!("kube-failover: RUST_LOG is not a valid filter ({err}); logging at info");
        EnvFilter::new(log_filter(None))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(use_colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

fn check_config(path: &Path) -> u8 {
    let config = match load_config(path) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("kube-failover: {err}");
            return EXIT_INVALID;
        }
    };
    match config.resolved().to_toml() {
        Ok(text) => {
            println!(
                "# {}: valid. Resolved configuration (defaults filled in):\n",
                path.display()
            );
            print!("{text}");
            EXIT_OK
        }
        Err(err) => {
            eprintln!("kube-failover: cannot print the configuration: {err}");
            EXIT_RUNTIME
        }
    }
}

fn status(addr: &str, json: bool) -> u8 {
    let url = status_url(addr);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("kube-failover: cannot start the async runtime: {err}");
            return EXIT_RUNTIME;
        }
    };
    let body = match runtime.block_on(fetch(&url)) {
        Ok(body) => body,
        Err(FetchError::Unreachable(err)) => {
            eprintln!("kube-failover: cannot reach the daemon at {addr}: {err:#}");
            return EXIT_UNREACHABLE;
        }
        Err(FetchError::Answer(err)) => {
            eprintln!("kube-failover: the daemon at {addr} ({url}) {err:#}");
            return EXIT_RUNTIME;
        }
    };
    if json {
        println!("{}", body.trim_end());
        return EXIT_OK;
    }
    match serde_json::from_str::<StatusReport>(&body) {
        Ok(report) => {
            print!("{}", render_status(&report, unix_now()));
            EXIT_OK
        }
        Err(err) => {
            eprintln!(
                "kube-failover: the daemon at {addr} answered with a status this version cannot read ({err}); try --json"
            );
            EXIT_RUNTIME
        }
    }
}

/// `HOST:PORT` → `http://HOST:PORT/status`; a full `http(s)://…` base is kept.
fn status_url(addr: &str) -> String {
    let base = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.trim_end_matches('/').to_string()
    } else {
        format!("http://{addr}")
    };
    format!("{base}/status")
}

enum FetchError {
    /// No connection, or no answer in time.
    Unreachable(anyhow::Error),
    /// Something answered, but not with a status document.
    Answer(anyhow::Error),
}

async fn fetch(url: &str) -> Result<String, FetchError> {
    let client = reqwest::Client::builder()
        .connect_timeout(STATUS_CONNECT_TIMEOUT)
        .timeout(STATUS_TIMEOUT)
        // The admin port is local; a proxy from the environment has no business here.
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")
        .map_err(FetchError::Answer)?;
    let classify = |err: reqwest::Error| {
        if err.is_connect() || err.is_timeout() || err.is_request() {
            FetchError::Unreachable(err.into())
        } else {
            FetchError::Answer(anyhow::Error::from(err).context("gave an unreadable answer"))
        }
    };
    let response = client.get(url).send().await.map_err(classify)?;
    let code = response.status();
    if !code.is_success() {
        return Err(FetchError::Answer(anyhow::anyhow!(
            "answered HTTP {code} to GET /status"
        )));
    }
    response.text().await.map_err(classify)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `2026-01-02T03:04:05Z (5m 3s ago)`.
fn when(unix: f64, now: f64) -> String {
    if !unix.is_finite() || unix <= 0.0 {
        return "never".to_string();
    }
    let at = UNIX_EPOCH + Duration::from_secs_f64(unix);
    format!(
        "{} ({})",
        humantime::format_rfc3339_seconds(at),
        ago(unix, now)
    )
}

/// Relative time, whole seconds: `5m 3s ago`, `just now`, `2s in the future` (clock skew).
fn ago(unix: f64, now: f64) -> String {
    let delta = now - unix;
    let secs = Duration::from_secs(delta.abs().round() as u64);
    if secs.is_zero() {
        "just now".to_string()
    } else if delta > 0.0 {
        format!("{} ago", humantime::format_duration(secs))
    } else {
        format!("{} in the future", humantime::format_duration(secs))
    }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The readable form of a `/status` document, one block per group. `now` is the Unix
/// time used for "… ago".
fn render_status(report: &StatusReport, now: f64) -> String {
    let mut out = String::new();
    let last_tick = report
        .last_tick_unix
        .map(|t| ago(t, now))
        .unwrap_or_else(|| "never".to_string());
    let _ = writeln!(
        out,
        "kube-failover {}  mode {}  identity {}  ready {}  last tick {}",
        report.version,
        report.mode,
        report.identity,
        yes_no(report.ready),
        last_tick
    );
    if report.groups.is_empty() {
        let _ = writeln!(out, "\n(no groups reported yet)");
    }
    for group in &report.groups {
        out.push('\n');
        render_group(&mut out, group, now);
    }
    out
}

fn render_group(out: &mut String, g: &GroupStatus, now: f64) {
    let _ = writeln!(out, "group {}", g.name);
    let rows: Vec<(&str, String)> = vec![
        (
            "state",
            format!("{} since {}", g.state, when(g.since_unix, now)),
        ),
        ("active cluster", g.active_cluster.to_string()),
        ("primary down", yes_no(g.primary_down).to_string()),
        (
            "standby fit",
            format!(
                "{} (api: {}, workloads: {}){}",
                yes_no(g.standby_fit),
                g.standby.api_reason,
                g.standby.workloads_reason,
                detail(&g.standby.detail)
            ),
        ),
        (
            "unexpected standby replicas",
            g.unexpected_standby_replicas.to_string(),
        ),
        (
            "last action error",
            g.last_action_error
                .clone()
                .unwrap_or_else(|| "none".to_string()),
        ),
    ];
    let mut rows = rows;
    if let Some(c) = &g.coordination {
        let observers: Vec<String> = c
            .observers
            .iter()
            .map(|o| {
                let age = o
                    .age_seconds
                    .map_or_else(|| "?".to_string(), |a| format!("{a:.0}s"));
                let stale = if o.fresh { "" } else { ", stale" };
                format!("{} {} ({age}{stale})", o.identity, o.verdict)
            })
            .collect();
        rows.push((
            "leader",
            format!(
                "{} (this instance: {})",
                c.leader.as_deref().unwrap_or("none"),
                c.role
            ),
        ));
        rows.push((
            "observers",
            format!("{}; quorum {}", observers.join(", "), c.quorum),
        ));
    }
    if g.dual_active {
        rows.insert(1, ("DUAL ACTIVE", "both sides want replicas".to_string()));
    }
    if g.no_active_side {
        rows.insert(
            1,
            (
                "NO ACTIVE SIDE",
                "neither side runs the workload".to_string(),
            ),
        );
    }
    for (label, value) in rows {
        let _ = writeln!(out, "  {label:<28} {value}");
    }

    let header = [
        "SIGNAL", "UP", "FAILS", "PASSES", "LAST", "LATENCY", "DETAIL",
    ];
    let table: Vec<[String; 7]> = g
        .signals
        .iter()
        .map(|s| {
            [
                s.name.to_string(),
                if s.consecutive_unknown > 0 {
                    "unknown"
                } else if s.up {
                    "up"
                } else {
                    "down"
                }
                .to_string(),
                s.consecutive_failures.to_string(),
                s.consecutive_successes.to_string(),
                s.last_reason
                    .as_ref()
                    .map_or_else(|| "-".to_string(), ToString::to_string),
                s.last_latency_seconds
                    .map(|l| format!("{:.0}ms", l * 1000.0))
                    .unwrap_or_else(|| "-".to_string()),
                s.last_detail.clone(),
            ]
        })
        .collect();
    out.push('\n');
    if table.is_empty() {
        let _ = writeln!(out, "  (no signals yet)");
    } else {
        let mut widths = header.map(str::len);
        for row in &table {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut l = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    let _ = write!(l, "  {cell}");
                } else {
                    let _ = write!(l, "  {cell:<width$}", width = widths[i]);
                }
            }
            l.trim_end().to_string()
        };
        let _ = writeln!(out, "{}", line(header.to_vec()));
        for row in &table {
            let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
        }
    }

    out.push('\n');
    match &g.record {
        None => {
            let _ = writeln!(out, "  record    none (no failover recorded)");
        }
        Some(r) => {
            let _ = writeln!(
                out,
                "  record    phase {}  epoch {}  holder {}  reason {}",
                r.phase, r.epoch, r.holder, r.reason
            );
            let times = [
                ("promoted", &r.promoted_at),
                ("completed", &r.completed_at),
                ("fenced", &r.fenced_at),
            ];
            let times: Vec<String> = times
                .iter()
                .map(|(k, v)| format!("{k} {}", v.as_deref().unwrap_or("-")))
                .collect();
            let _ = writeln!(out, "            {}", times.join("  "));
        }
    }
    let d = &g.last_decision;
    fn list<T: ToString>(items: &[T]) -> String {
        if items.is_empty() {
            "none".to_string()
        } else {
            items
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
    let _ = writeln!(out, "  decision  {}", when(d.at_unix, now));
    let _ = writeln!(out, "            reasons: {}", list(&d.reasons));
    let _ = writeln!(out, "            actions: {}", list(&d.actions));
    let _ = writeln!(
        out,
        "            would promote: {}",
        yes_no(d.would_promote)
    );
}

fn detail(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(": {d}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_failover::status::{DecisionStatus, Named, RecordStatus, SignalStatus, StandbyStatus};

    const NOW: f64 = 1_767_323_045.0; // 2026-01-02T03:04:05Z

    #[test]
    fn kube_client_request_errors_are_off_unless_rust_log_names_kube_client() {
        let quiet = "kube_client::client::builder=off";
        assert_eq!(log_filter(None), format!("info,{quiet}"));
        assert_eq!(log_filter(Some("  ")), format!("info,{quiet}"));
        assert_eq!(
            log_filter(Some("info,kube_failover=debug")),
            format!("info,kube_failover=debug,{quiet}")
        );
        assert_eq!(
            log_filter(Some("debug,kube_client=error")),
            "debug,kube_client=error"
        );
        for spec in [None, Some("debug"), Some("warn,kube_failover=debug")] {
            let filter = log_filter(spec);
            assert!(
                tracing_subscriber::EnvFilter::try_new(&filter).is_ok(),
                "{filter}"
            );
        }
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
    }

    fn report() -> StatusReport {
        StatusReport {
            version: "0.1.0".into(),
            mode: "observe".into(),
            identity: "watcher-1".into(),
            ready: true,
            last_tick_unix: Some(NOW - 2.0),
            groups: vec![GroupStatus {
                name: "env0".into(),
                state: Named::parse("primary_down"),
                since_unix: NOW - 303.0,
                primary_down: true,
                standby_fit: false,
                active_cluster: Named::parse("primary"),
                signals: vec![
                    SignalStatus {
                        name: Named::parse("api"),
                        up: false,
                        consecutive_failures: 4,
                        consecutive_successes: 0,
                        consecutive_unknown: 0,
                        last_reason: Some(Named::parse("timeout")),
                        last_latency_seconds: Some(1.0),
                        last_detail: "no answer within 1s".into(),
                    },
                    SignalStatus {
                        name: Named::parse("workload:env0=agent-trigger"),
                        up: true,
                        consecutive_failures: 0,
                        consecutive_successes: 12,
                        consecutive_unknown: 0,
                        last_reason: Some(Named::parse("ok")),
                        last_latency_seconds: Some(0.0123),
                        last_detail: String::new(),
                    },
                ],
                standby: StandbyStatus {
                    api_reason: Named::parse("ok"),
                    workloads_reason: Named::parse("not_found"),
                    detail: "no Deployment matches env0=agent-proxy".into(),
                },
                record: Some(RecordStatus {
                    phase: Named::parse("promoting"),
                    epoch: 3,
                    reason: "primary_down_quorum".into(),
                    promoted_at: Some("2026-01-02T03:00:00Z".into()),
                    completed_at: None,
                    fenced_at: None,
                    holder: "watcher-1".into(),
                    primary_deployments: vec!["agent-trigger".into()],
                    failback_at: None,
                    restored_at: None,
                }),
                last_decision: DecisionStatus {
                    at_unix: NOW - 1.0,
                    reasons: vec![
                        Named::parse("primary_down_quorum"),
                        Named::parse("standby_unfit"),
                    ],
                    actions: vec![],
                    would_promote: true,
                },
                unexpected_standby_replicas: 1,
                dual_active: false,
                no_active_side: false,
                last_action_error: None,
                coordination: None,
            }],
        }
    }

    #[test]
    fn table_shows_state_signals_standby_record_and_decision() {
        let text = render_status(&report(), NOW);
        let expected = [
            "kube-failover 0.1.0  mode observe  identity watcher-1  ready yes  last tick 2s ago",
            "group env0",
            "  state                        primary_down since 2026-01-02T02:59:02Z (5m 3s ago)",
            "  active cluster               primary",
            "  primary down                 yes",
            "  standby fit                  no (api: ok, workloads: not_found): no Deployment matches env0=agent-proxy",
            "  unexpected standby replicas  1",
            "  last action error            none",
            "  SIGNAL                       UP    FAILS  PASSES  LAST     LATENCY  DETAIL",
            "  api                          down  4      0       timeout  1000ms   no answer within 1s",
            "  workload:env0=agent-trigger  up    0      12      ok       12ms",
            "  record    phase promoting  epoch 3  holder watcher-1  reason primary_down_quorum",
            "            promoted 2026-01-02T03:00:00Z  completed -  fenced -",
            "  decision  2026-01-02T03:04:04Z (1s ago)",
            "            reasons: primary_down_quorum, standby_unfit",
            "            actions: none",
            "            would promote: yes",
        ];
        for line in expected {
            assert!(
                text.lines().any(|l| l == line),
                "missing line {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn table_shows_the_leader_and_the_observers() {
        use kube_failover::status::{CoordStatus, ObserverStatus};
        let mut r = report();
        let observer = |identity: &str, verdict: &str, age: f64, fresh: bool| ObserverStatus {
            identity: identity.into(),
            verdict: Named::parse(verdict),
            age_seconds: Some(age),
            fresh,
            this_instance: identity == "watcher-1",
            down_signals: vec![],
            down_since_unix: None,
        };
        r.groups[0].coordination = Some(CoordStatus {
            leader: Some("watcher-2".into()),
            role: "follower".into(),
            quorum: 2,
            expected: Some(3),
            observers: vec![
                observer("watcher-1", "down", 0.0, true),
                observer("watcher-2", "up", 1.2, true),
                observer("watcher-3", "down", 40.0, false),
            ],
        });
        let text = render_status(&r, NOW);
        for line in [
            "  leader                       watcher-2 (this instance: follower)",
            "  observers                    watcher-1 down (0s), watcher-2 up (1s), watcher-3 down (40s, stale); quorum 2",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn table_handles_a_daemon_that_has_not_ticked_yet() {
        let mut r = report();
        r.last_tick_unix = None;
        r.ready = false;
        r.groups[0].record = None;
        r.groups[0].signals.clear();
        let text = render_status(&r, NOW);
        assert!(text.contains("ready no  last tick never"), "{text}");
        assert!(text.contains("(no signals yet)"), "{text}");
        assert!(text.contains("record    none"), "{text}");
        r.groups.clear();
        assert!(render_status(&r, NOW).contains("(no groups reported yet)"));
    }

    #[test]
    fn relative_times() {
        assert_eq!(ago(NOW, NOW), "just now");
        assert_eq!(ago(NOW - 3723.0, NOW), "1h 2m 3s ago");
        assert_eq!(ago(NOW + 2.0, NOW), "2s in the future");
        assert_eq!(when(0.0, NOW), "never");
    }

    #[test]
    fn status_url_forms() {
        assert_eq!(status_url("127.0.0.1:9464"), "http://127.0.0.1:9464/status");
        assert_eq!(
            status_url("http://watcher:9464/"),
            "http://watcher:9464/status"
        );
    }

    #[test]
    fn cli_parses_and_documents_exit_codes() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let help = Cli::command().render_long_help().to_string();
        assert!(
            help.contains("3  the daemon could not be reached"),
            "{help}"
        );
        let cli = Cli::try_parse_from(["kube-failover", "status", "--json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Status { ref addr, json: true } if addr == "127.0.0.1:9464"
        ));
    }
}

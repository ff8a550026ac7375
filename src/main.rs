//! `kube-failover`: the daemon (`run`) and the operator's commands (`check-config`,
//! `status`). Owns process concerns only: arguments, exit codes, log setup, printing.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod cli;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube_failover::config::{Config, ConfigError};
use kube_failover::status::StatusReport;
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
    if let Err(err) = cli::logging::init(config.daemon.log_format) {
        eprintln!("kube-failover: {err}");
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
            EXIT_RUNTIME
        }
    }
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
            print!("{}", cli::render::status(&report, unix_now()));
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

#[cfg(test)]
mod tests {
    use super::*;

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

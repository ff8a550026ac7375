//! `kube-failover-sandbox`: builds what is missing, starts two local clusters, runs the
//! daemon against them and breaks the primary on demand.

use clap::Parser;
use kube_failover_testbed::sandbox::{SandboxOptions, run_sandbox};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

/// Watch kube-failover promote a standby and fence the old primary, on two local
/// Kubernetes control planes (etcd, kube-apiserver, kube-controller-manager, kwok).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The kube-failover binary; when omitted it is built with
    /// `cargo build -p kube-failover --bin kube-failover`.
    #[arg(long, value_name = "PATH")]
    daemon: Option<PathBuf>,
    /// The daemon's admin address (/metrics, /status).
    #[arg(long, default_value = "127.0.0.1:9464")]
    admin_addr: SocketAddr,
    /// Stop the primary's API server this long after start (e.g. 30s).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    outage_after: Option<Duration>,
    /// How long an automatic outage lasts.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s", value_name = "DURATION")]
    outage_for: Duration,
    /// Quit by itself after this long (for scripted runs).
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    exit_after: Option<Duration>,
    /// Ignore stdin (no outages on Enter).
    #[arg(long)]
    no_input: bool,
    /// Run `kube-failover guard` beside a stand-in agent process on each side, to watch
    /// the primary's agent stop at the promotion while its API server is down.
    #[arg(long)]
    guard: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let daemon = match args.daemon {
        Some(path) => path,
        None => match build_daemon() {
            Ok(path) => path,
            Err(e) => {
                eprintln!("[sandbox] {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let opts = SandboxOptions {
        daemon,
        admin_addr: args.admin_addr,
        outage_after: args.outage_after,
        outage_for: args.outage_for,
        exit_after: args.exit_after,
        interactive: !args.no_input,
        guard: args.guard,
    };
    match run_sandbox(opts).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("[sandbox] error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Builds the daemon with cargo, progress on stderr, and returns the executable cargo
/// reports (so CARGO_TARGET_DIR and the like need no guessing).
fn build_daemon() -> Result<PathBuf, String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("[sandbox] building the daemon: cargo build -p kube-failover --bin kube-failover");
    let mut child = Command::new(&cargo)
        .args(["build", "-p", "kube-failover", "--bin", "kube-failover"])
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(&manifest)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
    let mut executable = None;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if msg["reason"] == "compiler-artifact"
                && msg["target"]["name"] == "kube-failover"
                && let Some(exe) = msg["executable"].as_str()
            {
                executable = Some(PathBuf::from(exe));
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the daemon failed ({status}); pass --daemon PATH to use a built one"
        ));
    }
    executable.ok_or_else(|| "cargo built no kube-failover executable".to_string())
}

//! `guard`: runs the agent as a child process and keeps it running only while the
//! failover record says this side is active, or (`form = "sidecar"`) serves that
//! verdict to the agent's liveness probe, `guard check` (see `kube_failover::guard`).

use super::{Failure, logging};
use kube_failover::config::LogFormat;
use kube_failover::guard::config::GuardConfig;
use kube_failover::guard::{Ended, GuardError};
use std::ffi::OsString;
use std::path::PathBuf;

/// The flags of `guard`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct Args {
    /// Instead of guarding an agent.
    #[command(subcommand)]
    action: Option<Action>,
    /// The guard's configuration file (see guard.example.toml).
    #[arg(
        long,
        short,
        env = "KUBE_FAILOVER_GUARD_CONFIG",
        default_value = "/etc/kube-failover/guard.toml"
    )]
    config: PathBuf,
    /// Log lines as JSON objects instead of text.
    #[arg(long)]
    json_logs: bool,
    /// The agent's command and arguments, after `--` (none with form = "sidecar").
    #[arg(last = true, value_name = "AGENT")]
    command: Vec<OsString>,
}

/// What `guard` does instead of guarding an agent.
#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Copy this executable to DEST (mode 0755) and exit: an init container's job, in an
    /// image without a shell, to put the guard into an emptyDir beside the agent.
    Install {
        /// Where to put the copy, e.g. /guard/kube-failover.
        dest: PathBuf,
    },
    /// The agent container's liveness probe beside a sidecar guard (form = "sidecar"):
    /// succeeds while the guard's `GET /agent` answers 200, then runs the probe command
    /// after `--` (the agent's own check), if any, for its result. Fails on a refusal
    /// and when the guard does not answer.
    Check {
        /// The sidecar's verdict.
        #[arg(long, default_value = kube_failover::guard::check::DEFAULT_URL)]
        url: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// The agent's own probe command, run once the guard allows the agent.
        #[arg(last = true, value_name = "PROBE")]
        probe: Vec<OsString>,
    },
}

/// The agent's own probe command failed (or could not start).
#[derive(Debug, thiserror::Error)]
enum ProbeFailed {
    #[error("the guard allows the agent, but its probe command {0:?} failed ({1})")]
    Exited(String, std::process::ExitStatus),
    #[error("the guard allows the agent, but its probe command {0:?} cannot start")]
    Start(String, #[source] std::io::Error),
}

/// The async runtime could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the async runtime")]
struct NoRuntime(#[source] std::io::Error);

/// The agent exited by itself with a failure; the guard hands on its exit code.
#[derive(Debug, thiserror::Error)]
#[error("the agent exited by itself ({0})")]
struct AgentFailed(std::process::ExitStatus);

impl Args {
    pub(crate) fn execute(self) -> Result<(), Failure> {
        if let Some(Action::Install { dest }) = self.action {
            let bytes = kube_failover::guard::install::install(&dest).map_err(Failure::runtime)?;
            println!("installed {} ({bytes} bytes, mode 0755)", dest.display());
            return Ok(());
        }
        if let Some(Action::Check {
            url,
            timeout,
            probe,
        }) = self.action
        {
            return check(&url, timeout, probe);
        }
        let config = GuardConfig::load(&self.config).map_err(Failure::invalid)?;
        let format = if self.json_logs {
            LogFormat::Json
        } else {
            LogFormat::Text
        };
        logging::init(format).map_err(Failure::runtime)?;
        let ended = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| Failure::runtime(NoRuntime(e)).logged("guard failed"))?
            .block_on(kube_failover::guard::run(config, self.command))
            .map_err(|e| match e {
                GuardError::NoCommand
                | GuardError::CommandInSidecar
                | GuardError::Client(_)
                | GuardError::Listen { .. } => Failure::invalid(e).logged("guard failed"),
                _ => Failure::runtime(e).logged("guard failed"),
            })?;
        match ended {
            Ended::Signalled => Ok(()),
            Ended::AgentExited(status) if status.success() => Ok(()),
            Ended::AgentExited(status) => {
                Err(Failure::runtime(AgentFailed(status)).logged("guard stopped"))
            }
        }
    }
}

/// `guard check`: the sidecar's verdict, then the agent's own probe command.
fn check(url: &str, timeout: std::time::Duration, probe: Vec<OsString>) -> Result<(), Failure> {
    let answer = kube_failover::guard::check::ask(url, timeout).map_err(Failure::runtime)?;
    println!("{answer}");
    let Some((program, args)) = probe.split_first() else {
        return Ok(());
    };
    let name = program.to_string_lossy().into_owned();
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .map_err(|e| Failure::runtime(ProbeFailed::Start(name.clone(), e)))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure::runtime(ProbeFailed::Exited(name, status)))
    }
}

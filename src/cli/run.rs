//! `run`: the daemon in the foreground until SIGTERM/SIGINT, logging to stderr.

use super::check_config::ConfigFile;
use super::{Failure, logging};

/// The target of this command's own log lines: the crate's name, as before the command
/// had a module of its own (log filters and queries name it).
const TARGET: &str = "kube_failover";

/// The log message when the daemon does not run to a clean stop.
const FAILED: &str = "daemon failed";

/// The flags of `run`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    config: ConfigFile,
}

/// The daemon's runtime could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the async runtime")]
struct NoRuntime(#[source] std::io::Error);

impl Args {
    pub(crate) fn execute(self) -> Result<(), Failure> {
        let config = self.config.load_for_daemon()?;
        logging::init(config.daemon.log_format).map_err(Failure::runtime)?;
        tracing::info!(
            target: TARGET,
            version = env!("CARGO_PKG_VERSION"),
            revision = env!("KUBE_FAILOVER_REVISION"),
            config = %self.config.path().display(),
            mode = config.daemon.mode.as_str(),
            "starting"
        );
        // The runtime is a temporary: it is shut down before `stopped` is logged.
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::runtime(NoRuntime(e)).logged(FAILED))?
            .block_on(kube_failover::daemon::run(config))
            .map_err(|e| {
                // Two instances with one identity is a configuration error.
                if matches!(e, kube_failover::daemon::DaemonError::IdentityClash(_)) {
                    Failure::invalid(e).logged(FAILED)
                } else {
                    Failure::runtime(e).logged(FAILED)
                }
            })?;
        tracing::info!(target: TARGET, "stopped");
        Ok(())
    }
}

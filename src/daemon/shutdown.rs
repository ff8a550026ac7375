//! Drain-based shutdown: the first SIGTERM or SIGINT (or a stop request) ends new
//! ticks and lets in-flight actions finish within `daemon.shutdown_timeout`; a second
//! signal aborts them.

use super::DaemonError;
use std::time::Duration;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

/// The signals that stop the daemon, installed once and listened to twice: to begin
/// the shutdown, then to abort the drain.
pub(super) struct Signals {
    sigterm: Signal,
    sigint: Signal,
}

impl Signals {
    /// Installs the SIGTERM and SIGINT handlers; a failure names the signal.
    pub(super) fn install() -> Result<Self, (&'static str, std::io::Error)> {
        Ok(Signals {
            sigterm: signal(SignalKind::terminate()).map_err(|e| ("SIGTERM", e))?,
            sigint: signal(SignalKind::interrupt()).map_err(|e| ("SIGINT", e))?,
        })
    }

    /// Waits for the first SIGTERM or SIGINT, or for `stop` to turn true.
    pub(super) async fn first(&mut self, mut stop: watch::Receiver<bool>) {
        tokio::select! {
            _ = self.sigterm.recv() => info!("SIGTERM: finishing in-flight work"),
            _ = self.sigint.recv() => info!("SIGINT: finishing in-flight work"),
            _ = stop.wait_for(|s| *s) => info!("stop requested: finishing in-flight work"),
        }
    }

    /// Waits for `tasks` to finish, at most `timeout` (then they are abandoned); a
    /// second signal meanwhile is [`DaemonError::Aborted`].
    pub(super) async fn drain(
        &mut self,
        mut tasks: JoinSet<()>,
        timeout: Duration,
    ) -> Result<(), DaemonError> {
        let drain = async { while tasks.join_next().await.is_some() {} };
        tokio::select! {
            _ = drain => Ok(()),
            _ = tokio::time::sleep(timeout) => {
                warn!(timeout = %humantime::format_duration(timeout),
                    "shutdown timeout: abandoning in-flight work");
                Ok(())
            }
            _ = self.sigterm.recv() => Err(DaemonError::Aborted),
            _ = self.sigint.recv() => Err(DaemonError::Aborted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never_ending() -> JoinSet<()> {
        let mut tasks = JoinSet::new();
        tasks.spawn(std::future::pending());
        tasks
    }

    /// One test: a signal reaches every listener in the process, so a second test
    /// listening at the same time would see this one's signal.
    #[tokio::test]
    async fn drain_waits_gives_up_at_the_timeout_and_aborts_on_a_signal() {
        let mut signals = Signals::install().unwrap();
        let mut tasks = JoinSet::new();
        tasks.spawn(tokio::time::sleep(Duration::from_millis(20)));
        let finished = signals.drain(tasks, Duration::from_secs(60)).await;
        assert!(finished.is_ok(), "{finished:?}");
        let abandoned = signals
            .drain(never_ending(), Duration::from_millis(50))
            .await;
        assert!(abandoned.is_ok(), "{abandoned:?}");

        // The handler is installed, so the signal reaches it instead of ending the process.
        let sent = std::process::Command::new("kill")
            .args(["-INT", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let result = signals.drain(never_ending(), Duration::from_secs(60)).await;
        assert!(matches!(result, Err(DaemonError::Aborted)), "{result:?}");
    }
}

//! The agent as the guard's child process: started, stopped (SIGTERM, then SIGKILL after
//! the grace), and watched for an exit of its own.
//!
//! The child lives in the guard's container (or systemd unit): when the guard is killed
//! outright, the container's end (or systemd's control-group kill) ends the child with
//! it. Run outside either, a killed guard leaves its child running, as the agent would
//! run without a guard; a guard started again then starts a second agent beside it, so
//! run the guard only as a container's entrypoint or a systemd service.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The agent's command and its process, when running.
#[derive(Debug)]
pub struct Agent {
    program: OsString,
    args: Vec<OsString>,
    child: Option<Child>,
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It was not running.
    NotRunning,
    /// It exited within the grace after SIGTERM.
    Terminated,
    /// It was still running after the grace and was killed.
    Killed,
}

impl Agent {
    /// The agent `command` (program and arguments); nothing is started yet.
    pub fn new(mut command: Vec<OsString>) -> Option<Agent> {
        if command.is_empty() {
            return None;
        }
        let program = command.remove(0);
        Some(Agent {
            program,
            args: command,
            child: None,
        })
    }

    /// The program, for logs.
    pub fn program(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    /// Whether a child is running (as far as the last look saw).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Its process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Starts the agent with the guard's standard streams and environment. Killed with
    /// the guard's runtime when the guard exits.
    pub fn start(&mut self) -> std::io::Result<u32> {
        let child = Command::new(&self.program)
            .args(&self.args)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().unwrap_or(0);
        self.child = Some(child);
        Ok(pid)
    }

    /// The exit status, if the agent ended by itself since the last look.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }

    /// Waits until the agent ends by itself (never returns while none runs).
    pub async fn wait(&mut self) -> ExitStatus {
        match self.child.as_mut() {
            Some(child) => {
                let status = child.wait().await;
                self.child = None;
                status.unwrap_or_else(|_| std::os::unix::process::ExitStatusExt::from_raw(1))
            }
            None => std::future::pending().await,
        }
    }

    /// Stops the agent: SIGTERM, then SIGKILL when it is still running after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> Stopped {
        let Some(mut child) = self.child.take() else {
            return Stopped::NotRunning;
        };
        let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
            // Already reaped.
            return Stopped::Terminated;
        };
        if kill(Pid::from_raw(pid), Signal::SIGTERM).is_err() {
            let _ = child.wait().await;
            return Stopped::Terminated;
        }
        match tokio::time::timeout(grace, child.wait()).await {
            Ok(_) => Stopped::Terminated,
            Err(_) => {
                let _ = child.kill().await;
                Stopped::Killed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Agent {
        Agent::new(vec!["/bin/sh".into(), "-c".into(), script.into()]).unwrap()
    }

    #[test]
    fn an_empty_command_is_no_agent() {
        assert!(Agent::new(Vec::new()).is_none());
    }

    #[tokio::test]
    async fn sigterm_first_then_sigkill_after_the_grace() {
        let mut polite = sh("trap 'exit 0' TERM; while :; do sleep 0.05; done");
        polite.start().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            polite.stop(Duration::from_secs(5)).await,
            Stopped::Terminated
        );
        assert!(!polite.running());

        let mut stubborn = sh("trap '' TERM; while :; do sleep 0.05; done");
        stubborn.start().unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            stubborn.stop(Duration::from_millis(300)).await,
            Stopped::Killed
        );
        assert_eq!(
            stubborn.stop(Duration::from_millis(300)).await,
            Stopped::NotRunning
        );
    }

    #[tokio::test]
    async fn an_exit_of_its_own_is_seen() {
        let mut a = sh("exit 3");
        a.start().unwrap();
        let status = a.wait().await;
        assert_eq!(status.code(), Some(3));
        assert!(!a.running());
        assert!(a.exited().is_none());
    }
}

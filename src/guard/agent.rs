//! The agent as the guard's child process: started, stopped (SIGTERM, then SIGKILL after
//! the grace), and watched for an exit of its own.
//!
//! The agent runs in a process group of its own, and a stop signals the whole group: an
//! agent started through a shell (the env0 proxy's `/bin/sh -c "update-ca-certificates;
//! node … run-proxy.js;"`, where the shell forks node instead of replacing itself) would
//! otherwise lose only its shell, and node would go on running unguarded. A stop counts
//! as done when no process of the group is left (zombies aside).
//!
//! The child lives in the guard's container (or systemd unit): when the guard is killed
//! outright, the container's end (or systemd's control-group kill) ends the child with
//! it. Run outside either, a killed guard leaves its child running, as the agent would
//! run without a guard; a guard started again then starts a second agent beside it, so
//! run the guard only as a container's entrypoint or a systemd service.

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::process::ExitStatus;
use std::time::{Duration, Instant};
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
            .process_group(0)
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

    /// Stops the agent: SIGTERM to its process group, then SIGKILL to the group when any
    /// of it is still running after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> Stopped {
        let Some(mut child) = self.child.take() else {
            return Stopped::NotRunning;
        };
        let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
            // Already reaped.
            return Stopped::Terminated;
        };
        let group = Pid::from_raw(pid);
        let deadline = Instant::now() + grace;
        if killpg(group, Signal::SIGTERM).is_err() && kill(group, Signal::SIGTERM).is_err() {
            let _ = child.wait().await;
            return Stopped::Terminated;
        }
        let leader_gone = tokio::time::timeout(grace, child.wait()).await.is_ok();
        // The leader's children (a shell's node) may outlive it: wait for them too.
        while leader_gone && group_alive(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if leader_gone && !group_alive(pid) {
            return Stopped::Terminated;
        }
        let _ = killpg(group, Signal::SIGKILL);
        if !leader_gone {
            let _ = child.kill().await;
        }
        Stopped::Killed
    }
}

/// Whether a process of group `pgid` runs (zombies, which only wait to be reaped, do
/// not count). Read from /proc; without it, assumed gone once the leader is.
fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            return false;
        };
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                // pid (comm) state ppid pgrp …; comm may hold spaces and parentheses.
                let rest = &stat[stat.rfind(')')? + 1..];
                let mut fields = rest.split_whitespace();
                let state = fields.next()?;
                let pgrp: i32 = fields.nth(1)?.parse().ok()?;
                Some(pgrp == pgid && state != "Z" && state != "X")
            })
            .unwrap_or(false)
    })
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

    /// Whether `pid` runs (not a zombie).
    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s[s.rfind(')')? + 1..]
                    .split_whitespace()
                    .next()
                    .map(String::from)
            })
            .is_some_and(|state| state != "Z" && state != "X")
    }

    #[tokio::test]
    async fn a_stop_reaches_what_a_shell_started() {
        // The env0 proxy's shape: a shell that runs a list and forks its last command
        // (dash does not exec it), which ignores nothing and just runs.
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!(
            "true; sh -c 'echo $$ > {}; exec sleep 60';",
            pid_file.display()
        );
        let mut agent = sh(&script);
        agent.start().unwrap();
        let mut grandchild = None;
        for _ in 0..200 {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                grandchild = Some(pid);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let grandchild = grandchild.expect("the shell started its command");
        assert!(alive(grandchild), "the command runs before the stop");
        assert_eq!(
            agent.stop(Duration::from_secs(5)).await,
            Stopped::Terminated
        );
        // Reparented and reaped by init (or a zombie until then): not running.
        assert!(!alive(grandchild), "the shell's command outlived the stop");
    }

    #[tokio::test]
    async fn a_child_that_ignores_sigterm_in_the_group_is_killed() {
        let mut agent = sh("true; sh -c 'trap \"\" TERM; while :; do sleep 0.05; done';");
        agent.start().unwrap();
        let pid = agent.pid().unwrap() as i32;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            agent.stop(Duration::from_millis(300)).await,
            Stopped::Killed
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!group_alive(pid), "a process of the agent's group survived");
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

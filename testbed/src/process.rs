//! Child processes of the test bed and the guards that keep them from outliving it.
//!
//! Three layers, from the common case to the worst:
//! 1. [`Proc`]'s `Drop` kills the child's whole process group with SIGKILL and reaps
//!    it, so a test that returns or panics leaves nothing behind.
//! 2. Each child runs under `setpriv --pdeathsig KILL` (util-linux), so the kernel kills
//!    it when the thread that spawned it dies, including when the test process is
//!    SIGKILLed and no destructor runs. This needs no `unsafe` in this crate (the
//!    alternative, `prctl` in a `pre_exec` hook, does). The test bed spawns from runtime
//!    threads, which live until the runtime is gone and with it every `Cluster`.
//! 3. Each cluster directory records its owner's PID and its children's PIDs; the next
//!    test bed start in any process removes directories whose owner is dead and kills
//!    the children still running there (checked against their command line, which
//!    names the directory, so a recycled PID is never hit).

use crate::error::{Result, TestbedError};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Prefix of every cluster directory under the system temp directory.
pub(crate) const DIR_PREFIX: &str = "kube-failover-testbed-";
const OWNER_FILE: &str = "owner.pid";
const PIDS_FILE: &str = "children.pids";
const KEEP_FILE: &str = "keep";

/// A running control-plane component.
#[derive(Debug)]
pub(crate) struct Proc {
    cluster: String,
    component: &'static str,
    child: tokio::process::Child,
    pid: u32,
    log: PathBuf,
}

impl Proc {
    /// Starts `program` in its own process group, output appended to `log`.
    pub(crate) fn spawn(
        cluster: &str,
        component: &'static str,
        program: &Path,
        args: &[String],
        log: &Path,
        cluster_dir: &Path,
    ) -> Result<Proc> {
        let spawn_err = |source| TestbedError::Spawn {
            cluster: cluster.to_string(),
            component,
            source,
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| TestbedError::io("opening log", log, e))?;
        let err = out
            .try_clone()
            .map_err(|e| TestbedError::io("opening log", log, e))?;
        let mut cmd = match setpriv() {
            Some(setpriv) => {
                let mut c = tokio::process::Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(program);
                c
            }
            None => tokio::process::Command::new(program),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(spawn_err)?;
        let pid = child
            .id()
            .ok_or_else(|| spawn_err(std::io::Error::other("exited before it got a PID")))?;
        record_pid(cluster_dir, pid);
        Ok(Proc {
            cluster: cluster.to_string(),
            component,
            child,
            pid,
            log: log.to_path_buf(),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// An error if the process has exited, with the end of its log.
    pub(crate) fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.exited(status)),
            Err(e) => Err(TestbedError::Spawn {
                cluster: self.cluster.clone(),
                component: self.component,
                source: e,
            }),
        }
    }

    pub(crate) fn exited(&self, status: ExitStatus) -> TestbedError {
        TestbedError::Exited {
            cluster: self.cluster.clone(),
            component: self.component,
            status,
            log_tail: log_tail(&self.log, 30),
        }
    }

    pub(crate) fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// SIGTERM to the group, then SIGKILL if it is still there after `grace`.
    pub(crate) async fn terminate(mut self, grace: Duration) -> Result<ExitStatus> {
        self.signal(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(waited) => self.waited(waited),
            Err(_) => self.kill().await,
        }
    }

    /// SIGKILL to the group; returns once the process is reaped.
    pub(crate) async fn kill(mut self) -> Result<ExitStatus> {
        self.signal(Signal::SIGKILL);
        let waited = self.child.wait().await;
        self.waited(waited)
    }

    fn waited(&self, waited: std::io::Result<ExitStatus>) -> Result<ExitStatus> {
        waited.map_err(|e| TestbedError::Spawn {
            cluster: self.cluster.clone(),
            component: self.component,
            source: e,
        })
    }

    fn signal(&self, signal: Signal) {
        // The group shares the leader's PID; the group may already be gone.
        let _ = killpg(Pid::from_raw(self.pid as i32), signal);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        self.signal(Signal::SIGKILL);
        // Reap here rather than leave a zombie to tokio's background reaper, so that once
        // a cluster is dropped its processes are gone from /proc. SIGKILL takes effect
        // within milliseconds; the bound only guards against a stuck kernel.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                _ => return,
            }
        }
    }
}

fn setpriv() -> Option<&'static Path> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path)
                .map(|dir| dir.join("setpriv"))
                .find(|p| p.is_file())
        })
        .as_deref()
}

/// The last `lines` lines of a log file (empty if it cannot be read).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Records this process as the owner of a fresh cluster directory.
pub(crate) fn claim_dir(dir: &Path) -> Result<()> {
    let path = dir.join(OWNER_FILE);
    std::fs::write(&path, std::process::id().to_string())
        .map_err(|e| TestbedError::io("writing", &path, e))
}

/// Marks a directory to be left on disk by the orphan sweep too.
pub(crate) fn mark_kept(dir: &Path) {
    let _ = std::fs::write(dir.join(KEEP_FILE), "");
}

fn record_pid(dir: &Path, pid: u32) {
    use std::io::Write;
    // Best effort: the file only helps a later sweep after this process was killed.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(PIDS_FILE))
    {
        let _ = writeln!(f, "{pid}");
    }
}

/// Kills what earlier, killed test processes left running and removes their directories.
/// Runs once per process.
pub(crate) fn sweep_orphans() {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(DIR_PREFIX) {
                sweep_dir(&entry.path());
            }
        }
    });
}

fn sweep_dir(dir: &Path) {
    let owner = std::fs::read_to_string(dir.join(OWNER_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    match owner {
        Some(pid) if Path::new(&format!("/proc/{pid}")).exists() => return,
        // A directory without an owner file is still being set up by someone.
        None => return,
        Some(_) => {}
    }
    let pids = std::fs::read_to_string(dir.join(PIDS_FILE)).unwrap_or_default();
    let marker = dir.to_string_lossy().into_owned();
    for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&marker) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    if !dir.join(KEEP_FILE).exists() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A port on 127.0.0.1 that was free a moment ago, outside the kernel's ephemeral range.
///
/// Outside that range because a component's port must stay free while the component is
/// stopped: a port in the range can be taken meanwhile as the local end of any outgoing
/// connection, and a client retrying against a stopped API server on loopback can even
/// connect to itself (source port = destination port), so the API server started again
/// fails with "address already in use". Ports are tried from a per-process start in the
/// range below the ephemeral one; the kernel's choice (port 0) is the last resort.
///
/// The port is released before the component binds it, so another process could take it
/// in between; cluster start retries with fresh ports when a component reports that.
pub(crate) fn free_port(what: &str) -> Result<u16> {
    let (low, high) = port_range();
    let span = u32::from(high - low) + 1;
    let start = port_seed() % span;
    for i in 0..span.min(4096) {
        let port = low + ((start + i * 7919) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| TestbedError::Port {
            what: what.to_string(),
            source,
        })
}

/// The ports [`free_port`] tries: below the ephemeral range (`ip_local_port_range`,
/// 32768-60999 by default), above 10000 (away from well-known services).
fn port_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > 12000 {
        (10000, ephemeral_low - 1)
    } else {
        // A range that starts low leaves nothing below it: any port will do.
        (ephemeral_low.max(1024), u16::MAX)
    }
}

/// Where this call starts looking: spread over processes and calls so that test
/// processes started together do not race for the same ports.
fn port_seed() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::process::id()
        .wrapping_mul(2_654_435_761)
        .wrapping_add(nanos)
        .wrapping_add(CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(104_729))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_bindable_and_outside_the_ephemeral_range() {
        let (low, high) = port_range();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..20 {
            let port = free_port("test").unwrap();
            assert!((low..=high).contains(&port), "{port} not in {low}-{high}");
            std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
            seen.insert(port);
        }
        // Consecutive calls start in different places.
        assert!(seen.len() > 10, "{seen:?}");
        let ephemeral =
            std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
        let low_ephemeral = ephemeral
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u16>().ok());
        if let Some(e) = low_ephemeral
            && e > 12000
        {
            assert!(
                high < e,
                "range {low}-{high} overlaps the ephemeral ports from {e}"
            );
        }
    }
}

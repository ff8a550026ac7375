//! The naive alternative: `kubectl-watchdog.sh`, the shell loop a user would write today
//! (`kubectl get --raw /readyz` every interval, `kubectl scale` after `threshold`
//! failures in a row), run with the `kubectl` found on PATH (or `KUBECTL`).

use kube_failover_testbed::ClusterPair;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// The script, as committed next to this file.
pub const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/benches/report/kubectl-watchdog.sh"
);

/// The kubectl the loop runs.
#[derive(Debug, Clone)]
pub struct Kubectl {
    pub path: PathBuf,
    /// `kubectl version --client`, first line.
    pub version: String,
}

impl Kubectl {
    /// `KUBECTL`, else `kubectl` on PATH; an error says what was looked for.
    pub fn find() -> Result<Kubectl, String> {
        let path = match std::env::var_os("KUBECTL") {
            Some(p) => PathBuf::from(p),
            None => std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .map(|d| d.join("kubectl"))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    "no kubectl on PATH (the naive watchdog needs one; set KUBECTL to its path, \
                     or KUBE_FAILOVER_REPORT_NAIVE=0 to leave the comparison out)"
                        .to_string()
                })?,
        };
        let out = std::process::Command::new(&path)
            .args(["version", "--client"])
            .output()
            .map_err(|e| format!("{}: cannot run: {e}", path.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} version --client failed: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let version = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        Ok(Kubectl { path, version })
    }
}

/// One running watchdog loop (a process group: the shell and its kubectl and sleep).
pub struct Watchdog {
    child: tokio::process::Child,
    pid: u32,
}

/// The loop's settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub interval: Duration,
    pub timeout: Duration,
    pub threshold: u32,
}

impl Watchdog {
    /// Starts the loop against `pair` with the daemon's restricted identity on both
    /// sides (the same rights kube-failover has); its output goes to `log`.
    pub fn start(kubectl: &Kubectl, pair: &ClusterPair, s: Settings, log: &Path) -> Watchdog {
        let out = std::fs::File::create(log).expect("create watchdog log");
        let err = out.try_clone().expect("clone log handle");
        let child = tokio::process::Command::new("sh")
            .arg(SCRIPT)
            .env("KUBECTL", &kubectl.path)
            .env("PRIMARY_KUBECONFIG", pair.primary.daemon_kubeconfig())
            .env("STANDBY_KUBECONFIG", pair.standby.daemon_kubeconfig())
            .env("NAMESPACE", pair.standby.namespace())
            .env("DEPLOYMENTS", pair.standby.deployment_names().join(" "))
            .env("INTERVAL", format!("{}", s.interval.as_secs_f64()))
            .env("TIMEOUT", format!("{}", s.timeout.as_secs_f64()))
            .env("THRESHOLD", s.threshold.to_string())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn sh kubectl-watchdog.sh");
        let pid = child.id().expect("watchdog pid");
        Watchdog { child, pid }
    }

    /// CPU seconds of the loop so far: the shell and every command it has finished.
    pub fn cpu_seconds(&self) -> f64 {
        crate::footprint::cpu_seconds_with_children(self.pid)
    }

    /// Ends the loop and everything it started.
    pub async fn stop(mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = std::process::Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.pid)])
            .stderr(Stdio::null())
            .status();
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.pid)])
                .stderr(Stdio::null())
                .status();
            let _ = self.child.wait().await;
        }
    }
}

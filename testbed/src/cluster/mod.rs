//! One Kubernetes control plane on 127.0.0.1 (etcd, kube-apiserver,
//! kube-controller-manager, kwok): the [`Cluster`] handle, what a test reads from it, and
//! its end (every process stopped, the directory removed). The other concerns live in
//! the submodules: [`spec`] what to start, [`start`] starting it, [`kubeconfig`] how to
//! reach it, [`workload`] the env0-agent-like workload, [`outage`] stopping and restarting
//! the API server and etcd, [`faults`] changes made to its objects behind the daemon's
//! back, [`state`] the Terraform state around the agent (its volume claim, a VolSync-like
//! replication object, a container image changed on one side), [`namespaces`] more agent
//! namespaces and a coordination namespace, [`pair`] a primary and a standby side by
//! side, [`audit`] the API server's audit log.

mod audit;
mod extra_roles;
mod faults;
mod grants;
mod kubeconfig;
mod namespaces;
mod outage;
mod pair;
mod spec;
mod start;
mod state;
mod workload;

pub use audit::{AuditEvent, AuditObject, AuditStatus, AuditUser};
pub use pair::ClusterPair;
pub use spec::{ClusterSpec, DEFAULT_NAMESPACE, DEFAULT_RELEASE};
pub use start::KEEP_ENV;
pub use state::{REPLICATION_DESTINATION, VOLSYNC_GROUP, VOLSYNC_VERSION};

use crate::binaries::Binaries;
use crate::error::TestbedError;
use crate::pki::Pki;
use crate::process::{self, Proc};
use kube::Client;
use kubeconfig::Kubeconfigs;
use start::{Ports, Procs};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// A running single-node control plane. Dropping it kills every process it started and
/// removes its directory.
pub struct Cluster {
    spec: ClusterSpec,
    bins: Binaries,
    dir: PathBuf,
    keep_dir: bool,
    pki: Pki,
    ports: Ports,
    procs: Mutex<Procs>,
    /// The shutdown delay of the API server's next start ([`Cluster::set_shutdown_delay`]).
    next_shutdown_delay: Mutex<Option<Duration>>,
    kubeconfigs: Kubeconfigs,
    client: Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.spec.name)
            .field("server", &self.server_url())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// The cluster's name, which is also the context name in each of its kubeconfigs.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Same as [`Cluster::name`]: the only context in each kubeconfig.
    pub fn context(&self) -> &str {
        &self.spec.name
    }

    /// The namespace of the agent's workload.
    pub fn namespace(&self) -> &str {
        &self.spec.namespace
    }

    /// The Helm-like release name in the Deployment names.
    pub fn release(&self) -> &str {
        &self.spec.release
    }

    /// The API server's address.
    pub fn api_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.ports.apiserver))
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        format!("https://{}", self.api_addr())
    }

    /// The cluster's directory: certificates, kubeconfigs, `*.log` of each component.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A client with `system:masters` rights, for a test to set up and inspect things.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// PIDs of the processes running now.
    pub fn pids(&self) -> Vec<u32> {
        let procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        [
            &procs.etcd,
            &procs.apiserver,
            &procs.controller_manager,
            &procs.kwok,
        ]
        .into_iter()
        .flatten()
        .map(Proc::pid)
        .collect()
    }

    /// Resident memory of all running processes, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        self.pids().into_iter().map(rss_of).sum()
    }

    /// Whether the API server process is running (it may still be starting).
    pub fn apiserver_running(&self) -> bool {
        let mut procs = self.procs.lock().unwrap_or_else(|p| p.into_inner());
        procs
            .apiserver
            .as_mut()
            .is_some_and(|p| p.check_running().is_ok())
    }

    pub(super) fn kube_err(&self, action: String, e: kube::Error) -> TestbedError {
        TestbedError::kube(&self.spec.name, action, e)
    }

    pub(super) fn state_err(&self, message: String) -> TestbedError {
        TestbedError::State {
            cluster: self.spec.name.clone(),
            message,
        }
    }

    pub(super) fn timeout(&self, what: String, after: Duration, detail: String) -> TestbedError {
        TestbedError::Timeout {
            cluster: self.spec.name.clone(),
            what,
            after,
            detail: if detail.is_empty() {
                detail
            } else {
                format!("\n{detail}")
            },
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let procs = std::mem::take(self.procs.get_mut().unwrap_or_else(|p| p.into_inner()));
        let panicking = std::thread::panicking();
        if panicking {
            // The test failed: show what the control plane said, since the directory goes.
            for name in ["kube-apiserver", "kube-controller-manager", "kwok", "etcd"] {
                let tail = process::log_tail(&self.dir.join(format!("{name}.log")), 15);
                eprintln!(
                    "--- cluster {}: last lines of {name}.log ---\n{tail}",
                    self.spec.name
                );
            }
        }
        // Clients first, store last, as a real shutdown would.
        drop(procs.kwok);
        drop(procs.controller_manager);
        drop(procs.apiserver);
        drop(procs.etcd);
        if self.keep_dir {
            eprintln!("cluster {}: kept {}", self.spec.name, self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}

    /// Tests share clusters across tasks of multi-threaded runtimes.
    #[test]
    fn clusters_and_their_futures_can_cross_threads() {
        send_sync::<Cluster>();
        send_sync::<ClusterPair>();
        send_sync::<crate::FaultProxy>();
        send_sync::<crate::HttpFaultProxy>();
        // Checked at compile time; never run.
        #[allow(dead_code, clippy::let_underscore_future)]
        fn futures(c: &Cluster) {
            send(&Cluster::start("x"));
            send(&ClusterPair::start());
            send(&c.stop_apiserver());
            send(&c.kill_apiserver());
            send(&c.start_apiserver());
            send(&c.stop_etcd());
            send(&c.start_etcd());
            send(&c.set_pods_ready("x", false));
            send(&c.wait_deployment_ready("x", Duration::ZERO));
            send(&c.delete_namespace());
            send(&c.scale("x", 1));
            send(&crate::HttpFaultProxy::start(c));
            send(&c.rename_deployment("x", "y"));
            send(&c.set_deployment_label("x", "k", None));
            send(&c.delete_daemon_role_bindings());
            send(&c.restore_daemon_role_bindings());
        }
    }
}

//! The test bed as the report uses it: a watch on a cluster's agent Deployments (so a
//! promotion is seen when its event arrives, not at the next poll), putting a pair back
//! to "primary active" between outages, and starting the daemon.

use crate::support::*;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::watcher;
use kube_failover_testbed::{Cluster, ClusterPair};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What the watch knows of one Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeploymentState {
    /// `spec.replicas`.
    pub desired: i32,
    /// The controller has caught up and every desired replica is Ready and available.
    pub ready: bool,
    /// `status.replicas`: Pods that exist (0 once a scale-down has finished).
    pub current: i32,
}

/// The agent Deployments of one cluster, as last seen by the watch.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub synced: bool,
    pub deployments: BTreeMap<String, DeploymentState>,
}

impl Snapshot {
    /// Every Deployment wants replicas (the standby is scaled up).
    pub fn all_scaled(&self) -> bool {
        self.synced
            && !self.deployments.is_empty()
            && self.deployments.values().all(|d| d.desired > 0)
    }

    /// Any Deployment wants replicas.
    pub fn any_scaled(&self) -> bool {
        self.deployments.values().any(|d| d.desired > 0)
    }

    /// Every Deployment wants replicas and has them Ready.
    pub fn all_ready(&self) -> bool {
        self.all_scaled() && self.deployments.values().all(|d| d.ready)
    }

    /// Every Deployment is at 0 with no Pod left.
    pub fn all_down(&self) -> bool {
        self.synced
            && self
                .deployments
                .values()
                .all(|d| d.desired == 0 && d.current == 0)
    }
}

fn state_of(d: &Deployment) -> DeploymentState {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let ready = desired > 0
        && st.observed_generation.unwrap_or(-1) >= d.metadata.generation.unwrap_or(0)
        && st.ready_replicas.unwrap_or(0) >= desired
        && st.available_replicas.unwrap_or(0) >= desired;
    DeploymentState {
        desired,
        ready,
        current: st.replicas.unwrap_or(0),
    }
}

/// A watch on the agent Deployments of one cluster (admin credentials).
pub struct DeploymentsWatch {
    rx: watch::Receiver<Snapshot>,
    task: tokio::task::JoinHandle<()>,
}

impl DeploymentsWatch {
    /// Starts the watch and waits for its first complete list.
    pub async fn start(cluster: &Cluster) -> DeploymentsWatch {
        let names: Vec<String> = cluster.deployment_names().to_vec();
        let api: Api<Deployment> = Api::namespaced(cluster.client(), cluster.namespace());
        let (tx, rx) = watch::channel(Snapshot::default());
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default()).boxed();
            let mut pending = BTreeMap::new();
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else {
                    continue; // the watcher retries by itself
                };
                match ev {
                    watcher::Event::Init => pending.clear(),
                    watcher::Event::InitApply(d) => {
                        let name = d.metadata.name.clone().unwrap_or_default();
                        if names.contains(&name) {
                            pending.insert(name, state_of(&d));
                        }
                    }
                    watcher::Event::InitDone => {
                        let all = std::mem::take(&mut pending);
                        tx.send_modify(|s| {
                            s.deployments = all;
                            s.synced = true;
                        });
                    }
                    watcher::Event::Apply(d) => {
                        let name = d.metadata.name.clone().unwrap_or_default();
                        if names.contains(&name) {
                            tx.send_modify(|s| {
                                s.deployments.insert(name, state_of(&d));
                            });
                        }
                    }
                    watcher::Event::Delete(d) => {
                        let name = d.metadata.name.clone().unwrap_or_default();
                        tx.send_modify(|s| {
                            s.deployments.remove(&name);
                        });
                    }
                }
            }
        });
        let w = DeploymentsWatch { rx, task };
        w.wait(Duration::from_secs(30), |s| s.synced)
            .await
            .expect("the Deployments watch lists them within 30 s");
        w
    }

    /// The latest snapshot.
    pub fn now(&self) -> Snapshot {
        self.rx.borrow().clone()
    }

    /// Waits until `pred` holds; returns the moment the event that made it hold arrived,
    /// or `None` after `timeout`.
    pub async fn wait(
        &self,
        timeout: Duration,
        pred: impl Fn(&Snapshot) -> bool,
    ) -> Option<Instant> {
        let mut rx = self.rx.clone();
        let fut = async {
            loop {
                if pred(&rx.borrow_and_update()) {
                    return Instant::now();
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, fut).await.ok()
    }
}

impl Drop for DeploymentsWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Puts the pair back to "primary active" with no trace of a failover: the primary's API
/// server running and its agent at 1 replica and Ready, the standby's at 0 with no Pod,
/// no failover record and no Lease in the standby's agent namespace. Call with no
/// watcher running.
pub async fn reset(pair: &ClusterPair, standby: &DeploymentsWatch) {
    if !pair.primary.apiserver_running() {
        pair.primary
            .start_apiserver()
            .await
            .expect("start the primary's API server");
    }
    for name in pair.standby.deployment_names() {
        pair.standby.scale(&name, 0).await.expect("scale standby");
    }
    for name in pair.primary.deployment_names() {
        pair.primary.scale(&name, 1).await.expect("scale primary");
    }
    let ns = pair.standby.namespace();
    let records: Api<ConfigMap> = Api::namespaced(pair.standby.client(), ns);
    let _ = records
        .delete(&format!("kube-failover-{GROUP}"), &DeleteParams::default())
        .await;
    let leases: Api<Lease> = Api::namespaced(pair.standby.client(), ns);
    leases
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("delete the Leases of the standby's agent namespace");
    standby
        .wait(Duration::from_secs(60), Snapshot::all_down)
        .await
        .expect("standby at 0 with no Pod within 60 s");
    for name in pair.primary.deployment_names() {
        pair.primary
            .wait_deployment_ready(&name, Duration::from_secs(60))
            .await
            .expect("primary Ready");
    }
}

/// Starts the daemon and waits until it leads the group and sees the primary active.
pub async fn start_daemon(pair: &ClusterPair, opts: &DaemonOpts) -> Daemon {
    let d = Daemon::start(pair, opts).await;
    d.wait_group("primary_active, leading", Duration::from_secs(90), |g| {
        g.state == "primary_active" && g.coordination.as_ref().is_none_or(|c| c.role == "leader")
    })
    .await;
    d
}

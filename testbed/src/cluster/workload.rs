//! The env0-agent-like workload: its namespace, the daemon's Roles and RoleBindings, the
//! kwok Node and the agent Deployments created at start, and how a test reads them and
//! waits for them to settle.

use super::Cluster;
use crate::error::Result;
use crate::objects::{self, AGENT_COMPONENTS, NODE_NAME};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, PostParams};
use std::time::{Duration, Instant};

impl Cluster {
    /// `<release>-agent-trigger-deployment`.
    pub fn trigger_deployment(&self) -> String {
        objects::deployment_name(&self.spec.release, AGENT_COMPONENTS[0])
    }

    /// `<release>-agent-proxy-deployment`.
    pub fn proxy_deployment(&self) -> String {
        objects::deployment_name(&self.spec.release, AGENT_COMPONENTS[1])
    }

    /// Both agent Deployments, trigger first.
    pub fn deployment_names(&self) -> [String; 2] {
        [self.trigger_deployment(), self.proxy_deployment()]
    }

    pub(super) fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.spec.namespace)
    }

    /// The Deployment `name` in the agent namespace.
    pub async fn deployment(&self, name: &str) -> Result<Deployment> {
        self.deployments()
            .get(name)
            .await
            .map_err(|e| self.kube_err(format!("getting deployment {name}"), e))
    }

    /// `spec.replicas` of Deployment `name`.
    pub async fn replicas(&self, name: &str) -> Result<i32> {
        Ok(self
            .deployment(name)
            .await?
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(1))
    }

    /// Waits until Deployment `name` has settled: its controller has seen the latest spec
    /// and exactly `spec.replicas` Pods exist, all updated, Ready and available. Returns
    /// how long that took.
    pub async fn wait_deployment_ready(&self, name: &str, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            let last = match self.deployments().get_opt(name).await {
                Ok(Some(d)) if deployment_settled(&d) => return Ok(start.elapsed()),
                Ok(Some(d)) => format!("status: {:?}", d.status),
                Ok(None) => "not found".to_string(),
                Err(e) => format!("error: {e}"),
            };
            if start.elapsed() > timeout {
                return Err(self.timeout(format!("deployment {name} ready"), timeout, last));
            }
            self.check_processes()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The live Pods (not being deleted) of Deployment `name`, with their Ready condition.
    pub async fn pod_readiness(&self, name: &str) -> Result<Vec<(String, bool)>> {
        let (_, list) = self.pods_of(name).await?;
        Ok(list
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .map(|p| {
                let ready = p
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                (p.metadata.name.unwrap_or_default(), ready)
            })
            .collect())
    }

    /// The Pods that Deployment `name`'s selector matches, and the API they came from.
    pub(super) async fn pods_of(&self, name: &str) -> Result<(Api<Pod>, Vec<Pod>)> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.spec.namespace);
        let selector = self.selector_of(name).await?;
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| self.kube_err(format!("listing pods of {name}"), e))?;
        Ok((pods, list.items))
    }

    async fn selector_of(&self, name: &str) -> Result<String> {
        let d = self.deployment(name).await?;
        let labels = d
            .spec
            .and_then(|s| s.selector.match_labels)
            .unwrap_or_default();
        if labels.is_empty() {
            return Err(self.state_err(format!("deployment {name} has no matchLabels selector")));
        }
        Ok(labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","))
    }

    pub(super) async fn create_objects(&self) -> Result<()> {
        let ns = &self.spec.namespace;
        let pp = PostParams::default();
        Api::<Namespace>::all(self.client.clone())
            .create(&pp, &objects::namespace(ns))
            .await
            .map_err(|e| self.kube_err(format!("creating namespace {ns}"), e))?;
        let roles: Api<Role> = Api::namespaced(self.client.clone(), ns);
        let bindings: Api<RoleBinding> = Api::namespaced(self.client.clone(), ns);
        for mut role in objects::daemon_roles()? {
            role.metadata.namespace = Some(ns.clone());
            let name = role.metadata.name.clone().unwrap_or_default();
            roles
                .create(&pp, &role)
                .await
                .map_err(|e| self.kube_err(format!("creating role {name}"), e))?;
            bindings
                .create(&pp, &objects::daemon_binding(&name))
                .await
                .map_err(|e| self.kube_err(format!("creating rolebinding {name}"), e))?;
        }
        Api::<Node>::all(self.client.clone())
            .create(&pp, &objects::node())
            .await
            .map_err(|e| self.kube_err(format!("creating node {NODE_NAME}"), e))?;
        for component in AGENT_COMPONENTS {
            let d = objects::agent_deployment(&self.spec.release, component, self.spec.replicas);
            self.deployments()
                .create(&pp, &d)
                .await
                .map_err(|e| self.kube_err(format!("creating deployment for {component}"), e))?;
        }
        Ok(())
    }
}

fn deployment_settled(d: &Deployment) -> bool {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(st) = d.status.as_ref() else {
        return false;
    };
    st.observed_generation.unwrap_or(-1) >= d.metadata.generation.unwrap_or(0)
        && st.replicas.unwrap_or(0) == want
        && st.updated_replicas.unwrap_or(0) == want
        && st.ready_replicas.unwrap_or(0) == want
        && st.available_replicas.unwrap_or(0) == want
}

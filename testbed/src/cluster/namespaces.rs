//! More namespaces beside the agent namespace created at start: another agent (its own
//! Deployments and the daemon's Roles, as users run one env0 agent per namespace), and
//! a coordination namespace holding only the daemon's Leases, with exactly the Role of
//! `deploy/kubernetes/target-rbac/coordination/`.

use super::Cluster;
use crate::error::Result;
use crate::objects::{self, AGENT_COMPONENTS};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};

impl Cluster {
    /// Creates namespace `ns` with the agent's Deployments (this cluster's release and
    /// replicas) and the daemon's Roles of `role.yaml` bound to its user, as in the agent
    /// namespace.
    pub async fn add_agent_namespace(&self, ns: &str) -> Result<()> {
        self.create_namespace(ns).await?;
        self.bind_roles(ns, objects::daemon_roles()?).await?;
        let deployments: Api<Deployment> = Api::namespaced(self.client(), ns);
        let pp = PostParams::default();
        for component in AGENT_COMPONENTS {
            let d = objects::agent_deployment(&self.spec.release, component, self.spec.replicas);
            deployments.create(&pp, &d).await.map_err(|e| {
                self.kube_err(format!("creating deployment {component} in {ns}"), e)
            })?;
        }
        Ok(())
    }

    /// Creates namespace `ns` with nothing in it but the Role of
    /// `deploy/kubernetes/target-rbac/coordination/role.yaml` bound to the daemon's user:
    /// where the instances keep their Leases (`[coordination] namespace`).
    pub async fn add_coordination_namespace(&self, ns: &str) -> Result<()> {
        self.create_namespace(ns).await?;
        let roles = objects::roles_in(objects::target_rbac_file("coordination/role.yaml"))?;
        self.bind_roles(ns, roles).await
    }

    async fn create_namespace(&self, ns: &str) -> Result<()> {
        Api::<Namespace>::all(self.client())
            .create(&PostParams::default(), &objects::namespace(ns))
            .await
            .map_err(|e| self.kube_err(format!("creating namespace {ns}"), e))?;
        Ok(())
    }

    /// Creates `roles` in `ns` and binds each to the daemon's user.
    pub(super) async fn bind_roles(&self, ns: &str, roles: Vec<Role>) -> Result<()> {
        let pp = PostParams::default();
        let role_api: Api<Role> = Api::namespaced(self.client(), ns);
        let bindings: Api<RoleBinding> = Api::namespaced(self.client(), ns);
        for mut role in roles {
            role.metadata.namespace = Some(ns.to_string());
            let name = role.metadata.name.clone().unwrap_or_default();
            role_api
                .create(&pp, &role)
                .await
                .map_err(|e| self.kube_err(format!("creating role {name} in {ns}"), e))?;
            bindings
                .create(&pp, &objects::daemon_binding(&name))
                .await
                .map_err(|e| self.kube_err(format!("creating rolebinding {name} in {ns}"), e))?;
        }
        Ok(())
    }
}

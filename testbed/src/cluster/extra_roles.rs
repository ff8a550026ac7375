//! Optional Roles of `deploy/kubernetes/target-rbac/` (beside the base role.yaml every
//! cluster gets at start), granted to the daemon's user by a scenario that needs them.

use super::Cluster;
use crate::error::Result;
use crate::objects;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};
use std::path::Path;

impl Cluster {
    /// Creates the Roles of the manifest `path` (relative to `deploy/kubernetes/target-rbac`,
    /// e.g. `clear-stale-locks/role.yaml`) in the agent namespace and binds each to the
    /// daemon's user, as the base Role is bound at start.
    pub async fn grant_daemon_roles(&self, path: &Path) -> Result<()> {
        let file = objects::rbac_manifest()
            .parent()
            .map(|dir| dir.join(path))
            .unwrap_or_else(|| path.to_path_buf());
        let ns = self.namespace();
        let pp = PostParams::default();
        let roles: Api<Role> = Api::namespaced(self.client(), ns);
        let bindings: Api<RoleBinding> = Api::namespaced(self.client(), ns);
        for mut role in objects::roles_in(file)? {
            role.metadata.namespace = Some(ns.to_string());
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
        Ok(())
    }
}

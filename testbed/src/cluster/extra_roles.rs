//! Optional Roles of `deploy/kubernetes/target-rbac/` (beside the base role.yaml every
//! cluster gets at start), granted to the daemon's user by a scenario that needs them.

use super::Cluster;
use crate::error::Result;
use crate::objects;
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
        self.bind_roles(self.namespace(), objects::roles_in(file)?)
            .await
    }
}

//! More Roles for the daemon's identity, from a manifest of `deploy/kubernetes/target-rbac/`
//! other than `role.yaml` (the state mirror's Roles, for example), so a scenario runs the
//! daemon with exactly the permissions the shipped file grants.

use super::Cluster;
use crate::error::{Result, TestbedError};
use crate::objects;
use crate::pki::DAEMON_USER;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kube::api::{Api, PostParams};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a new grant may take to reach the API server's authorizer.
const GRANT_TIMEOUT: Duration = Duration::from_secs(15);

impl Cluster {
    /// Creates the Role named `role` of `manifest` in the agent namespace, binds it to
    /// the daemon's user, and waits until the API server allows that user the Role's
    /// first verb.
    pub async fn grant_daemon_role(&self, manifest: &Path, role: &str) -> Result<()> {
        let mut found = objects::roles_in(manifest.to_path_buf())?
            .into_iter()
            .find(|r| r.metadata.name.as_deref() == Some(role))
            .ok_or_else(|| TestbedError::Manifest {
                path: manifest.to_path_buf(),
                message: format!("has no Role {role}"),
            })?;
        let ns = self.namespace().to_string();
        found.metadata.namespace = Some(ns.clone());
        let pp = PostParams::default();
        Api::<Role>::namespaced(self.client(), &ns)
            .create(&pp, &found)
            .await
            .map_err(|e| self.kube_err(format!("creating role {role}"), e))?;
        Api::<RoleBinding>::namespaced(self.client(), &ns)
            .create(&pp, &objects::daemon_binding(role))
            .await
            .map_err(|e| self.kube_err(format!("creating rolebinding {role}"), e))?;
        let attributes = first_rule(found.rules.as_deref(), Some(ns));
        self.await_allowed(role, attributes).await
    }

    /// Creates the ClusterRole of `path` (relative to `deploy/kubernetes/target-rbac`,
    /// e.g. `cluster-watch/clusterrole.yaml`), binds it to the daemon's user
    /// cluster-wide, and waits until the API server allows that user the first rule's
    /// first verb in every namespace.
    pub async fn grant_daemon_cluster_role(&self, path: &Path) -> Result<()> {
        let file = objects::rbac_manifest()
            .parent()
            .map(|dir| dir.join(path))
            .unwrap_or_else(|| path.to_path_buf());
        let role = objects::cluster_role_in(file)?;
        let name = role.metadata.name.clone().unwrap_or_default();
        let pp = PostParams::default();
        Api::<ClusterRole>::all(self.client())
            .create(&pp, &role)
            .await
            .map_err(|e| self.kube_err(format!("creating clusterrole {name}"), e))?;
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": { "name": name },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": DAEMON_USER }],
        }))
        .expect("static ClusterRoleBinding manifest");
        Api::<ClusterRoleBinding>::all(self.client())
            .create(&pp, &binding)
            .await
            .map_err(|e| self.kube_err(format!("creating clusterrolebinding {name}"), e))?;
        let attributes = first_rule(role.rules.as_deref(), None);
        self.await_allowed(&name, attributes).await
    }

    /// Waits until the API server allows the daemon's user `attributes`.
    async fn await_allowed(&self, role: &str, attributes: ResourceAttributes) -> Result<()> {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(DAEMON_USER.to_string()),
                resource_attributes: Some(attributes),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let reviews: Api<SubjectAccessReview> = Api::all(self.client());
        let start = Instant::now();
        loop {
            let answer = reviews
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| self.kube_err(format!("reviewing access of role {role}"), e))?;
            if answer.status.is_some_and(|s| s.allowed) {
                return Ok(());
            }
            if start.elapsed() > GRANT_TIMEOUT {
                return Err(self.state_err(format!(
                    "role {role} not in force for the daemon after {GRANT_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What the first rule of a Role allows first: its first verb on its first resource (in
/// `namespace`, or in every namespace), the request a grant is awaited with.
fn first_rule(rules: Option<&[PolicyRule]>, namespace: Option<String>) -> ResourceAttributes {
    let rule = rules.and_then(|r| r.first()).cloned().unwrap_or_default();
    ResourceAttributes {
        namespace,
        verb: rule.verbs.first().cloned(),
        group: rule.api_groups.as_ref().and_then(|g| g.first().cloned()),
        resource: rule.resources.as_ref().and_then(|r| r.first().cloned()),
        ..ResourceAttributes::default()
    }
}

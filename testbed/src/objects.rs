//! The Kubernetes objects a fresh test bed cluster gets: the agent namespace, a kwok
//! Node, the env0-agent-like Deployments, and the daemon's RBAC from
//! `deploy/kubernetes/target-rbac/`.

use crate::error::{Result, TestbedError};
use crate::pki::DAEMON_USER;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use serde_json::json;
use std::path::{Path, PathBuf};

/// Name of the kwok Node every Pod is bound to.
pub const NODE_NAME: &str = "kwok-node-0";

/// The taint kwok's documentation puts on fake Nodes, so nothing real lands there.
const KWOK_TAINT_KEY: &str = "kwok.x-k8s.io/node";

/// The two components of the env0 self-hosted agent chart, as `(component, label value)`.
pub const AGENT_COMPONENTS: [&str; 2] = ["agent-trigger", "agent-proxy"];

/// Name of a component's Deployment as the env0 chart spells it.
pub fn deployment_name(release: &str, component: &str) -> String {
    format!("{release}-{component}-deployment")
}

pub(crate) fn namespace(name: &str) -> Namespace {
    serde_json::from_value(json!({
        "metadata": { "name": name }
    }))
    .expect("static Namespace manifest")
}

pub(crate) fn node() -> Node {
    serde_json::from_value(json!({
        "metadata": {
            "name": NODE_NAME,
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": NODE_NAME,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
            "annotations": { "kwok.x-k8s.io/node": "fake" },
        },
        "spec": {
            "taints": [{ "key": KWOK_TAINT_KEY, "value": "fake", "effect": "NoSchedule" }]
        },
    }))
    .expect("static Node manifest")
}

/// A Deployment shaped like the env0 chart's: its name, the `env0: <component>` label on
/// the Deployment, its selector and its Pods. No scheduler runs, so the Pod template names
/// the kwok Node directly.
pub(crate) fn agent_deployment(release: &str, component: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {
            "name": deployment_name(release, component),
            "labels": {
                "env0": component,
                "app.kubernetes.io/instance": release,
                "app.kubernetes.io/managed-by": "Helm",
            },
        },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "env0": component } },
            "template": {
                "metadata": { "labels": { "env0": component } },
                "spec": {
                    "nodeName": NODE_NAME,
                    "tolerations": [{
                        "key": KWOK_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"
                    }],
                    "containers": [{
                        "name": component,
                        // Never pulled: kwok only pretends to run containers.
                        "image": "env0/deployment-agent:testbed",
                    }],
                },
            },
        },
    }))
    .expect("static Deployment manifest")
}

/// The Roles in the daemon's RBAC manifest, read at run time so the test bed proves
/// exactly the file that deploy/ ships.
pub(crate) fn daemon_roles() -> Result<Vec<Role>> {
    roles_in(rbac_manifest())
}

/// The documents of a YAML manifest file.
fn yaml_documents(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| TestbedError::io("reading", path, e))?;
    serde_saphyr::from_multiple(&text).map_err(|e| TestbedError::Manifest {
        path: path.to_path_buf(),
        message: format!("not valid YAML: {e}"),
    })
}

/// The Roles in a manifest file (YAML, one or more documents; documents of other kinds
/// are an error).
pub(crate) fn roles_in(path: PathBuf) -> Result<Vec<Role>> {
    let docs = yaml_documents(&path)?;
    let mut roles = Vec::new();
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        match doc.get("kind").and_then(|k| k.as_str()) {
            Some("Role") => {
                roles.push(
                    serde_json::from_value(doc).map_err(|e| TestbedError::Manifest {
                        path: path.clone(),
                        message: format!("not a valid Role: {e}"),
                    })?,
                )
            }
            other => {
                return Err(TestbedError::Manifest {
                    path,
                    message: format!(
                        "holds a {other:?}; the test bed applies only Roles (teach \
                         objects.rs about the new kind)"
                    ),
                });
            }
        }
    }
    if roles.is_empty() {
        return Err(TestbedError::Manifest {
            path,
            message: "holds no Role".to_string(),
        });
    }
    Ok(roles)
}

/// The one ClusterRole of the manifest at `path` (any other kind is an error).
pub(crate) fn cluster_role_in(path: PathBuf) -> Result<ClusterRole> {
    let docs = yaml_documents(&path)?;
    let mut docs = docs.into_iter().filter(|d| !d.is_null());
    match (docs.next(), docs.next()) {
        (Some(doc), None) if doc.get("kind").and_then(|k| k.as_str()) == Some("ClusterRole") => {
            serde_json::from_value(doc).map_err(|e| TestbedError::Manifest {
                path,
                message: format!("not a valid ClusterRole: {e}"),
            })
        }
        _ => Err(TestbedError::Manifest {
            path,
            message: "must hold exactly one ClusterRole".to_string(),
        }),
    }
}

/// Binds a Role to the daemon's user.
pub(crate) fn daemon_binding(role: &str) -> RoleBinding {
    serde_json::from_value(json!({
        "metadata": { "name": role },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": DAEMON_USER }],
    }))
    .expect("static RoleBinding manifest")
}

/// `deploy/kubernetes/target-rbac/role.yaml` in this checkout.
pub fn rbac_manifest() -> PathBuf {
    target_rbac_file("role.yaml")
}

/// A file of `deploy/kubernetes/target-rbac/` in this checkout.
pub fn target_rbac_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
        .join("kubernetes")
        .join("target-rbac")
        .join(name)
}

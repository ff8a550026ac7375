//! The API server's audit log of a cluster started with [`crate::ClusterSpec::audit`]: who sent
//! which request, and with which user agent.

use super::Cluster;
use crate::error::{Result, TestbedError};
use serde::Deserialize;
use std::path::PathBuf;

/// One request as the audit log records it (level `Metadata`, stage `ResponseComplete`
/// or `Panic`; a watch also at `ResponseStarted`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`…
    pub verb: String,
    /// The request path and query.
    #[serde(default, rename = "requestURI")]
    pub request_uri: String,
    /// The authenticated user.
    pub user: AuditUser,
    /// The `User-Agent` header as sent (empty when none was).
    #[serde(default)]
    pub user_agent: String,
    /// The object concerned, for a resource request.
    #[serde(default)]
    pub object_ref: Option<AuditObject>,
    /// `ResponseStarted`, `ResponseComplete` or `Panic`.
    #[serde(default)]
    pub stage: String,
}

/// The user of an [`AuditEvent`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AuditUser {
    /// The user name (the daemon's is [`crate::DAEMON_USER`]).
    #[serde(default)]
    pub username: String,
}

/// The object of an [`AuditEvent`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AuditObject {
    /// `deployments`, `leases`, `configmaps`…
    #[serde(default)]
    pub resource: String,
    /// `scale`, `status`… (empty for the object itself).
    #[serde(default)]
    pub subresource: String,
    /// The object's name (empty for a list or watch).
    #[serde(default)]
    pub name: String,
    /// Its namespace.
    #[serde(default)]
    pub namespace: String,
}

impl Cluster {
    /// Where kube-apiserver writes its audit log (see [`crate::ClusterSpec::audit`]).
    pub fn audit_log_path(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// Every request in the audit log so far; an error when the cluster was started
    /// without [`crate::ClusterSpec::audit`] or a line is not an audit event.
    pub fn audit_events(&self) -> Result<Vec<AuditEvent>> {
        if !self.spec.audit {
            return Err(self
                .state_err("started without an audit log (ClusterSpec::audit(true))".to_string()));
        }
        let path = self.audit_log_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(TestbedError::io("reading", &path, e)),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).map_err(|e| {
                    self.state_err(format!("{}: not an audit event: {e}", path.display()))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audit_line_parses() {
        let line = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"x","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/env0-agent/deployments/a/scale","verb":"update","user":{"username":"kube-failover","groups":["system:authenticated"]},"sourceIPs":["127.0.0.1"],"userAgent":"kube-failover/0.1.0 (obs-a)","objectRef":{"resource":"deployments","namespace":"env0-agent","name":"a","apiGroup":"apps","apiVersion":"v1","subresource":"scale"},"responseStatus":{"metadata":{},"code":200}}"#;
        let e: AuditEvent = serde_json::from_str(line).unwrap();
        assert_eq!(e.verb, "update");
        assert_eq!(e.user.username, "kube-failover");
        assert_eq!(e.user_agent, "kube-failover/0.1.0 (obs-a)");
        let o = e.object_ref.unwrap();
        assert_eq!(
            (o.resource.as_str(), o.subresource.as_str()),
            ("deployments", "scale")
        );
    }
}

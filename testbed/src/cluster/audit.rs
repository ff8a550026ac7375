//! The API server's audit log of a cluster started with [`crate::ClusterSpec::audit`]: who sent
//! which request, with which user agent, when, and how it was answered.

use super::Cluster;
use crate::error::{Result, TestbedError};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use serde::Deserialize;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::SystemTime;

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
    /// When the API server received the request (microseconds, the host's clock).
    #[serde(default)]
    pub request_received_timestamp: Option<MicroTime>,
    /// When the request reached [`AuditEvent::stage`]: for `ResponseComplete`, when its
    /// answer was sent.
    #[serde(default)]
    pub stage_timestamp: Option<MicroTime>,
    /// The answer's status (absent at `ResponseStarted` of some requests).
    #[serde(default)]
    pub response_status: Option<AuditStatus>,
}

/// The answer of an [`AuditEvent`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AuditStatus {
    /// The HTTP status code.
    #[serde(default)]
    pub code: Option<u16>,
}

/// The verbs that change something.
const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

impl AuditEvent {
    /// The answer's HTTP status code, when recorded.
    pub fn code(&self) -> Option<u16> {
        self.response_status.as_ref().and_then(|s| s.code)
    }

    /// A write (`create`, `update`, `patch`, `delete`, `deletecollection`) answered 2xx.
    pub fn is_successful_write(&self) -> bool {
        WRITE_VERBS.contains(&self.verb.as_str())
            && self.code().is_some_and(|c| (200..300).contains(&c))
    }

    /// When the API server received the request.
    pub fn received(&self) -> Option<SystemTime> {
        self.request_received_timestamp
            .as_ref()
            .map(|t| SystemTime::from(t.0))
    }

    /// When the request reached its stage (for `ResponseComplete`: answered).
    pub fn staged(&self) -> Option<SystemTime> {
        self.stage_timestamp.as_ref().map(|t| SystemTime::from(t.0))
    }
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
        self.audit_events_where(|_| true)
    }

    /// The requests of the audit log so far that `keep` keeps, read line by line (a
    /// long run's log need not fit in memory twice); errors as [`Cluster::audit_events`].
    pub fn audit_events_where(
        &self,
        mut keep: impl FnMut(&AuditEvent) -> bool,
    ) -> Result<Vec<AuditEvent>> {
        if !self.spec.audit {
            return Err(self
                .state_err("started without an audit log (ClusterSpec::audit(true))".to_string()));
        }
        let path = self.audit_log_path();
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(TestbedError::io("reading", &path, e)),
        };
        let mut reader = std::io::BufReader::new(file);
        let mut kept = Vec::new();
        let mut line = String::new();
        for n in 1.. {
            line.clear();
            let read = reader
                .read_line(&mut line)
                .map_err(|e| TestbedError::io("reading", &path, e))?;
            // The end, or a last line the API server is still writing.
            if read == 0 || !line.ends_with('\n') {
                break;
            }
            if line.trim().is_empty() {
                continue;
            }
            let event: AuditEvent = serde_json::from_str(&line).map_err(|e| {
                self.state_err(format!(
                    "{} line {n}: not an audit event: {e}",
                    path.display()
                ))
            })?;
            if keep(&event) {
                kept.push(event);
            }
        }
        Ok(kept)
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

    /// A line of kube-apiserver 1.35's audit log (the daemon scaling a Deployment, in a
    /// fault campaign): the times it was received and answered, to the microsecond, and
    /// its status code.
    #[test]
    fn a_real_line_gives_its_times_and_code() {
        let line = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"d0f4a1c5-f9d0-47b1-bf10-656a92c53a43","stage":"ResponseComplete","requestURI":"/apis/apps/v1/namespaces/env0-agent/deployments/env0-agent-trigger-deployment/scale?\u0026fieldManager=kube-failover","verb":"patch","user":{"username":"kube-failover","groups":["system:authenticated"],"extra":{"authentication.kubernetes.io/credential-id":["X509SHA256=e23474b970af1bead588ba716c76ef675d9ce0f610c7e3a6f198a2f01842d046"]}},"sourceIPs":["127.0.0.1"],"userAgent":"kube-failover/0.1.0 (chaos-a)","objectRef":{"resource":"deployments","namespace":"env0-agent","name":"env0-agent-trigger-deployment","apiGroup":"apps","apiVersion":"v1","subresource":"scale"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-12-07T02:00:41.898238Z","stageTimestamp":"2026-12-07T02:00:41.950697Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC: allowed by RoleBinding \"kube-failover/env0-agent\" of Role \"kube-failover\" to User \"kube-failover\""}}"#;
        let e: AuditEvent = serde_json::from_str(line).unwrap();
        assert_eq!(e.code(), Some(200));
        assert!(e.is_successful_write());
        let received = e.received().expect("requestReceivedTimestamp");
        let staged = e.staged().expect("stageTimestamp");
        let unix = |t: SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(unix(received).as_micros(), 1_796_608_841_898_238);
        assert_eq!(
            staged.duration_since(received).unwrap(),
            std::time::Duration::from_micros(52_459)
        );
        assert_eq!(e.object_ref.unwrap().subresource, "scale");
        // A refused write, or a read, is not a successful write; a line without the
        // optional fields still parses.
        let refused = line.replace(r#""code":200"#, r#""code":409"#);
        let refused: AuditEvent = serde_json::from_str(&refused).unwrap();
        assert!(!refused.is_successful_write());
        let read = line.replace(r#""verb":"patch""#, r#""verb":"get""#);
        assert!(
            !serde_json::from_str::<AuditEvent>(&read)
                .unwrap()
                .is_successful_write()
        );
        let bare = r#"{"verb":"create","user":{"username":"u"}}"#;
        let bare: AuditEvent = serde_json::from_str(bare).unwrap();
        assert_eq!((bare.code(), bare.received()), (None, None));
        assert!(!bare.is_successful_write());
    }
}

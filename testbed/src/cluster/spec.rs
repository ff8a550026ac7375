//! What to start: a cluster's name, the agent's namespace, release and replicas, and how
//! the API server shuts down ([`ClusterSpec`]).

use crate::error::{Result, TestbedError};
use std::time::Duration;

/// Namespace of the agent unless a [`ClusterSpec`] says otherwise.
pub const DEFAULT_NAMESPACE: &str = "env0-agent";
/// Helm release name of the agent unless a [`ClusterSpec`] says otherwise.
pub const DEFAULT_RELEASE: &str = "env0";

/// What to start: names and the agent's initial replica count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// Cluster name: also the kubeconfig cluster and context name. Lower-case letters,
    /// digits and `-`.
    pub name: String,
    /// Namespace of the agent's workload.
    pub namespace: String,
    /// Release name used in the Deployment names.
    pub release: String,
    /// Replicas of each agent Deployment at start (1 on a primary, 0 on a standby).
    pub replicas: i32,
    /// Whether `start` waits for the Node to be Ready and the Deployments to have exactly
    /// `replicas` Ready Pods.
    pub wait_ready: bool,
    /// kube-apiserver's `--shutdown-delay-duration`: after SIGTERM it keeps serving
    /// requests this long while `/readyz` fails. `None`: it stops serving at once. For
    /// the first start; [`crate::Cluster::set_shutdown_delay`] sets it for later ones.
    pub shutdown_delay: Option<Duration>,
    /// Whether kube-apiserver writes an audit log (`audit.log` in the cluster's
    /// directory, every request at level `Metadata`: user, verb, object, user agent):
    /// see [`crate::Cluster::audit_events`].
    pub audit: bool,
}

impl ClusterSpec {
    /// Defaults: namespace `env0-agent`, release `env0`, 1 replica, wait until Ready.
    pub fn new(name: &str) -> ClusterSpec {
        ClusterSpec {
            name: name.to_string(),
            namespace: DEFAULT_NAMESPACE.to_string(),
            release: DEFAULT_RELEASE.to_string(),
            replicas: 1,
            wait_ready: true,
            shutdown_delay: None,
            audit: false,
        }
    }

    /// Replicas of each agent Deployment at start.
    pub fn replicas(mut self, replicas: i32) -> ClusterSpec {
        self.replicas = replicas;
        self
    }

    /// The namespace of the agent's workload.
    pub fn namespace(mut self, namespace: &str) -> ClusterSpec {
        self.namespace = namespace.to_string();
        self
    }

    /// The release name in the Deployment names.
    pub fn release(mut self, release: &str) -> ClusterSpec {
        self.release = release.to_string();
        self
    }

    /// Whether start waits until the Deployments are Ready.
    pub fn wait_ready(mut self, wait: bool) -> ClusterSpec {
        self.wait_ready = wait;
        self
    }

    /// See [`ClusterSpec::audit`].
    pub fn audit(mut self, audit: bool) -> ClusterSpec {
        self.audit = audit;
        self
    }

    /// See [`ClusterSpec::shutdown_delay`] (whole seconds; rounded up).
    pub fn shutdown_delay(mut self, delay: Duration) -> ClusterSpec {
        self.shutdown_delay = Some(delay);
        self
    }
}

pub(super) fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(TestbedError::State {
            cluster: name.to_string(),
            message: "a cluster name takes 1-40 lower-case letters, digits and '-'".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("primary").is_ok());
        assert!(validate_name("e2e-1").is_ok());
        for bad in ["", "Primary", "-a", "a_b", "a b", &"x".repeat(41)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}

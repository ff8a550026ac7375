//! The one error type of the test bed: every variant names the cluster, component or
//! file it is about, so a failing end-to-end test says where to look.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Anything that can go wrong while building, starting, faulting or stopping a test bed.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// `testbed/build.sh` could not be run or did not produce the binaries.
    #[error("building the test bed binaries failed: {message}")]
    Build {
        /// What went wrong.
        message: String,
        #[source]
        /// The underlying error.
        source: Option<std::io::Error>,
    },

    /// A file or directory operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        #[source]
        /// The underlying error.
        source: std::io::Error,
    },

    /// A control-plane process could not be started.
    #[error("cluster {cluster}: starting {component} failed: {source}")]
    Spawn {
        /// The test-bed cluster.
        cluster: String,
        /// The control-plane component.
        component: &'static str,
        #[source]
        /// The underlying error.
        source: std::io::Error,
    },

    /// A control-plane process exited while it should have been running.
    #[error("cluster {cluster}: {component} exited with {status}; last log lines:\n{log_tail}")]
    Exited {
        /// The test-bed cluster.
        cluster: String,
        /// The control-plane component.
        component: &'static str,
        /// How it exited.
        status: ExitStatus,
        /// The last lines of its log.
        log_tail: String,
    },

    /// Something did not happen in time.
    #[error("cluster {cluster}: {what} did not happen within {after:?}{detail}")]
    Timeout {
        /// The test-bed cluster.
        cluster: String,
        /// What was expected or made.
        what: String,
        /// How long it was waited for.
        after: Duration,
        /// Extra context, such as a log tail, starting with a newline when present.
        detail: String,
    },

    /// A Kubernetes API call failed.
    #[error("cluster {cluster}: {action}: {source}")]
    Kube {
        /// The test-bed cluster.
        cluster: String,
        /// What was being done.
        action: String,
        #[source]
        /// The underlying error.
        source: kube::Error,
    },

    /// A kubeconfig could not be written or loaded.
    #[error("cluster {cluster}: kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        /// The test-bed cluster.
        cluster: String,
        /// The file or directory.
        path: PathBuf,
        #[source]
        /// The underlying error.
        source: kube::config::KubeconfigError,
    },

    /// Certificate or key generation failed.
    #[error("cluster {cluster}: generating {what} failed: {source}")]
    Certificate {
        /// The test-bed cluster.
        cluster: String,
        /// What was expected or made.
        what: &'static str,
        #[source]
        /// The underlying error.
        source: rcgen::Error,
    },

    /// A manifest the test bed applies is not what it expects.
    #[error("manifest {}: {message}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// No free port could be had, or a fixed one is taken.
    #[error("port {what}: {source}")]
    Port {
        /// What was expected or made.
        what: String,
        #[source]
        /// The underlying error.
        source: std::io::Error,
    },

    /// A caller asked for something the test bed cannot do in its current state.
    #[error("cluster {cluster}: {message}")]
    State {
        /// The test-bed cluster.
        cluster: String,
        /// Why it cannot be done now.
        message: String,
    },
}

impl TestbedError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        TestbedError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn kube(cluster: &str, action: impl Into<String>, source: kube::Error) -> Self {
        TestbedError::Kube {
            cluster: cluster.to_string(),
            action: action.into(),
            source,
        }
    }
}

/// Shorthand used across the crate.
pub type Result<T, E = TestbedError> = std::result::Result<T, E>;

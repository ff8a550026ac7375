//! Reading and checking a kubeconfig file and context, the way kubectl would, without
//! contacting any cluster. Used by configuration validation and by the client builder;
//! a kubeconfig holds credentials, so nothing here ever carries its contents.

use kube::config::{Kubeconfig, KubeconfigError};
use std::fmt;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Where a kubeconfig was read from; shown in messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeconfigSource {
    /// The `kubeconfig` path given in the configuration.
    File(PathBuf),
    /// No path was given but a context was: `$KUBECONFIG` or `~/.kube/config`, as kubectl.
    Default,
}

impl fmt::Display for KubeconfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubeconfigSource::File(path) => write!(f, "{}", path.display()),
            KubeconfigSource::Default => {
                f.write_str("the default kubeconfig ($KUBECONFIG or ~/.kube/config)")
            }
        }
    }
}

/// What is wrong with a cluster's kubeconfig. Found without contacting any cluster.
#[derive(Debug, Error)]
pub enum KubeconfigProblem {
    /// The file could not be read.
    #[error("cannot read kubeconfig {file}")]
    Read {
        /// The kubeconfig concerned.
        file: KubeconfigSource,
        #[source]
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file is not a kubeconfig. The parser's own message is withheld on purpose:
    /// it quotes the offending lines, and those may be tokens or keys.
    #[error(
        "kubeconfig {file} is not valid kubeconfig YAML{at} (parser details withheld: the file holds credentials)"
    )]
    Parse {
        /// The kubeconfig concerned.
        file: KubeconfigSource,
        /// ` at line L column C` when known, else empty.
        at: String,
    },
    /// Any other failure to load the file (merging several `$KUBECONFIG` files, no home
    /// directory to find the default one).
    #[error("cannot load kubeconfig {file}")]
    Load {
        /// The kubeconfig concerned.
        file: KubeconfigSource,
        #[source]
        /// Why kube could not load it.
        source: KubeconfigError,
    },
    /// The configured context does not exist in the file.
    #[error("context {context:?} not found in kubeconfig {file} (contexts there: {available})")]
    ContextNotFound {
        /// The kubeconfig concerned.
        file: KubeconfigSource,
        /// The context concerned.
        context: String,
        /// Comma-separated context names, or `none`.
        available: String,
    },
    /// No context was configured and the file names no usable current-context.
    #[error(
        "kubeconfig {file} has no usable current-context ({detail}); set `context` to one of: {available}"
    )]
    NoCurrentContext {
        /// The kubeconfig concerned.
        file: KubeconfigSource,
        /// Why the current-context cannot be used.
        detail: String,
        /// The contexts the file defines, for the message.
        available: String,
    },
    /// The context refers to a cluster entry the file does not define.
    #[error(
        "context {context:?} in kubeconfig {file} refers to cluster {cluster:?}, which is not defined there"
    )]
    ClusterNotFound {
        /// The kubeconfig concerned.
        file: KubeconfigSource,
        /// The context concerned.
        context: String,
        /// The cluster entry the context names.
        cluster: String,
    },
}

/// A kubeconfig read from disk with the context that will be used, checked offline.
#[derive(Clone)]
pub struct ResolvedKubeconfig {
    /// The parsed file. Holds credentials: never log it (hence the `Debug` below).
    pub kubeconfig: Kubeconfig,
    /// Where it was read from.
    pub source: KubeconfigSource,
    /// The configured context, or the file's current-context.
    pub context: String,
    /// The API server URL of the context's cluster, as written in the file.
    pub server: Option<String>,
}

impl fmt::Debug for ResolvedKubeconfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedKubeconfig")
            .field("source", &self.source)
            .field("context", &self.context)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Reads and checks the kubeconfig of `cluster`: the file parses, the context exists
/// (or, with no context configured, the current-context does) and names a defined
/// cluster. `Ok(None)` means in-cluster credentials (neither `kubeconfig` nor `context`).
/// Touches no cluster.
pub fn resolve(
    path: Option<&Path>,
    context: Option<&str>,
) -> Result<Option<ResolvedKubeconfig>, KubeconfigProblem> {
    let (kubeconfig, source) = match (path, context) {
        (None, None) => return Ok(None),
        (Some(path), _) => {
            let source = KubeconfigSource::File(path.to_path_buf());
            (
                Kubeconfig::read_from(path).map_err(|e| problem(e, &source))?,
                source,
            )
        }
        (None, Some(_)) => {
            let source = KubeconfigSource::Default;
            (Kubeconfig::read().map_err(|e| problem(e, &source))?, source)
        }
    };
    let available = context_names(&kubeconfig);
    let context = match context {
        Some(context) => {
            if !kubeconfig.contexts.iter().any(|c| c.name == context) {
                return Err(KubeconfigProblem::ContextNotFound {
                    file: source,
                    context: context.to_string(),
                    available,
                });
            }
            context.to_string()
        }
        None => match &kubeconfig.current_context {
            None => {
                return Err(KubeconfigProblem::NoCurrentContext {
                    file: source,
                    detail: "current-context is not set".to_string(),
                    available,
                });
            }
            Some(current) if !kubeconfig.contexts.iter().any(|c| &c.name == current) => {
                return Err(KubeconfigProblem::NoCurrentContext {
                    file: source,
                    detail: format!("current-context {current:?} is not defined"),
                    available,
                });
            }
            Some(current) => current.clone(),
        },
    };
    let cluster_name = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .unwrap_or_default();
    let Some(named_cluster) = kubeconfig.clusters.iter().find(|c| c.name == cluster_name) else {
        return Err(KubeconfigProblem::ClusterNotFound {
            file: source,
            context,
            cluster: cluster_name,
        });
    };
    let server = named_cluster
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone());
    Ok(Some(ResolvedKubeconfig {
        kubeconfig,
        source,
        context,
        server,
    }))
}

fn context_names(kubeconfig: &Kubeconfig) -> String {
    let names: Vec<&str> = kubeconfig
        .contexts
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

fn problem(err: KubeconfigError, source: &KubeconfigSource) -> KubeconfigProblem {
    match err {
        // Re-anchor to the file we were asked to read: with `$KUBECONFIG` listing several
        // files, the io error's own path is the more precise one.
        KubeconfigError::ReadConfig(io, path) => KubeconfigProblem::Read {
            file: match source {
                KubeconfigSource::File(_) => source.clone(),
                KubeconfigSource::Default => KubeconfigSource::File(path),
            },
            source: io,
        },
        KubeconfigError::Parse(yaml) => KubeconfigProblem::Parse {
            file: source.clone(),
            at: yaml
                .location()
                .map(|l| format!(" at line {} column {}", l.line(), l.column()))
                .unwrap_or_default(),
        },
        other => KubeconfigProblem::Load {
            file: source.clone(),
            source: other,
        },
    }
}
